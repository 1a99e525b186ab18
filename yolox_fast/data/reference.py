"""The official YOLOX augmentation steps in the official code's order of operations: readable and slower.

:mod:`yolox_fast.data.transforms` computes the same pixels with less work (lookup tables for HSV, only
the cropped window of the mixup partner, an integer blend, uint8 output); its tests compare against the
functions here, and ``benchmarks/bench_train_step.py`` times them as the official-style pipeline.
Conventions as in :mod:`yolox_fast.data.transforms`: BGR uint8 ``[H, W, 3]`` images, ``(x1, y1, x2, y2,
class)`` float targets, sizes ``(height, width)``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .transforms import mixup_partner_boxes, mixup_partner_canvas


def augment_hsv_reference(img: np.ndarray, rng: np.random.Generator, hgain: float = 5, sgain: float = 30,
                          vgain: float = 30) -> np.ndarray:
    """Official ``augment_hsv``: int16 offsets added to the HSV image, hue modulo 180, S and V clipped."""
    gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain])
    gains *= rng.integers(0, 2, 3)
    gains = gains.astype(np.int16)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def mixup_reference(img: np.ndarray, targets: np.ndarray, other_img: np.ndarray, other_targets: np.ndarray,
                    rng: np.random.Generator, mixup_scale=(0.5, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """Official ``MosaicDetection.mixup``: letterbox the partner into ``img``'s size, rescale the whole canvas by
    the jitter, flip it, zero-pad it, crop at a random offset, blend 50/50 in float32; add its clipped boxes.

    Draws, in order: jitter ``U(mixup_scale)``, flip ``U(0, 1) > 0.5``, then the y and x crop offsets.
    """
    target_h, target_w = img.shape[:2]
    jitter = float(rng.uniform(*mixup_scale))
    flip = rng.uniform(0, 1) > 0.5
    canvas, r = mixup_partner_canvas(other_img, (target_h, target_w), jitter)
    if flip:
        canvas = cv2.flip(canvas, 1)
    canvas_h, canvas_w = canvas.shape[:2]
    padded = np.zeros((max(canvas_h, target_h), max(canvas_w, target_w), 3), dtype=np.uint8)
    padded[:canvas_h, :canvas_w] = canvas
    y_offset = int(rng.integers(0, padded.shape[0] - target_h)) if padded.shape[0] > target_h else 0
    x_offset = int(rng.integers(0, padded.shape[1] - target_w)) if padded.shape[1] > target_w else 0
    crop = padded[y_offset:y_offset + target_h, x_offset:x_offset + target_w]

    _, clipped = mixup_partner_boxes(other_targets[:, :4], r, (canvas_h, canvas_w), flip, (y_offset, x_offset),
                                     (target_h, target_w))
    added = np.concatenate([clipped, other_targets[:, 4:5]], axis=1).astype(targets.dtype)
    blended = (0.5 * img.astype(np.float32) + 0.5 * crop.astype(np.float32)).astype(np.uint8)
    return blended, np.concatenate([targets, added], 0)


def to_network_input_reference(canvas: np.ndarray) -> np.ndarray:
    """Official ``preproc`` output: ``[3, H, W]`` float32, contiguous (what each item carried before uint8 batches)."""
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)
