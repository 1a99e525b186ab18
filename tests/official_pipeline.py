"""The official YOLOX augmentation steps in the official code's order of operations: readable and slower.

:mod:`yolox_fast.data.transforms` computes the same pixels with less work (only the part of the mosaic canvas
that the affine warp reads, uint8 arithmetic for HSV and the blend, only the cropped window of the mixup
partner, reused work arrays, uint8 output); its tests compare against the functions here, and
``benchmarks/bench_train_step.py`` times :func:`official_train_item` as the official-style pipeline.
Conventions as in :mod:`yolox_fast.data.transforms`: BGR uint8 ``[H, W, 3]`` images, ``(x1, y1, x2, y2,
class)`` float targets, sizes ``(height, width)``.
"""

from __future__ import annotations

import cv2
import numpy as np

from yolox_fast.data.preprocess import letterbox
from yolox_fast.data.transforms import (
    flip_boxes,
    labels_or_fallback,
    mixup_partner_boxes,
    mixup_partner_canvas,
    mosaic,
    random_affine,
    resize_to_fit,
    visible_fraction,
)


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
                    rng: np.random.Generator, mixup_scale=(0.5, 1.5),
                    min_area_ratio: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
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

    boxes, clipped = mixup_partner_boxes(other_targets[:, :4], r, (canvas_h, canvas_w), flip, (y_offset, x_offset),
                                         (target_h, target_w))
    added = np.concatenate([clipped, other_targets[:, 4:5]], axis=1).astype(targets.dtype)
    if min_area_ratio > 0:  # an option of ours, off in the official code
        added = added[visible_fraction(clipped, boxes) >= min_area_ratio]
    blended = (0.5 * img.astype(np.float32) + 0.5 * crop.astype(np.float32)).astype(np.uint8)
    return blended, np.concatenate([targets, added], 0)


def to_network_input_reference(canvas: np.ndarray) -> np.ndarray:
    """Official ``preproc`` output: ``[3, H, W]`` float32, contiguous (what each item carried before uint8 batches)."""
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)


def train_transform_reference(img: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                              input_size: tuple[int, int], hsv_prob: float = 1.0, flip_prob: float = 0.5,
                              max_labels: int = 120, min_box_size: float = 1.0):
    """Official ``TrainTransform`` steps: a copy of the image for the fallback, HSV (official int16 arithmetic),
    mirror as a NumPy view, letterbox (``preproc``), labels. Same draws, pixels and labels as
    :func:`yolox_fast.data.transforms.train_transform` (and its fallback rule)."""
    if len(targets) == 0:
        return letterbox(img, input_size)[0], np.zeros((max_labels, 5), dtype=np.float32)
    original = img.copy()
    if rng.random() < hsv_prob:
        img = augment_hsv_reference(img, rng)
    boxes = targets[:, :4]
    if rng.random() < flip_prob:
        img = img[:, ::-1]
        boxes = flip_boxes(boxes, img.shape[1])
    canvas, r = letterbox(img, input_size)
    return labels_or_fallback(canvas, r, targets, boxes, original, input_size, min_box_size, max_labels)


def official_train_item(aug, index: int):
    """Item ``index`` of a :class:`~yolox_fast.data.TrainAugmentDataset` computed the official way: every mosaic tile
    decoded and resized, the full mosaic canvas, the warp, the official mixup (float32 blend) and HSV, float32
    ``[3, H, W]`` output (what the official loader hands to its collate). Same draws as ``aug[index]``, hence the
    same pixels and labels.

    Returns ``(image float32 [3, H, W], labels float32 [max_labels, 5], image_id)``.
    """
    epoch, mosaic_on, h, w = aug._state.tolist()
    size, dataset, rng = (h, w), aug.dataset, aug.rng(index, epoch)
    if mosaic_on and rng.random() < aug.mosaic_prob:
        tiles, image_ids = [], []
        for k in [index, *rng.integers(0, len(dataset), 3).tolist()]:
            img, targets, image_id = dataset.load(k)
            tiles.append(resize_to_fit(img, targets, size))
            image_ids.append(image_id)
        img, targets = random_affine(*mosaic(tiles, rng, size), rng, size, aug.degrees, aug.translate,
                                     aug.mosaic_scale, aug.shear, aug.min_area_ratio)
        image_id = image_ids[0]
        if len(targets) and len(aug._with_boxes) and rng.random() < aug.mixup_prob:
            other_img, other_targets, _ = dataset.load(int(aug._with_boxes[rng.integers(len(aug._with_boxes))]))
            img, targets = mixup_reference(img, targets, other_img, other_targets, rng, aug.mixup_scale,
                                           aug.min_area_ratio)
    else:
        img, targets, image_id = dataset.load(index)
        img, targets = resize_to_fit(img, targets, size)
    canvas, labels = train_transform_reference(img, targets, rng, size, aug.hsv_prob, aug.flip_prob, aug.max_labels,
                                               aug.min_box_size)
    return to_network_input_reference(canvas), labels, int(image_id)
