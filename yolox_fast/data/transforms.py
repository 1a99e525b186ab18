"""The official YOLOX training augmentations as pure functions of an explicit ``numpy.random.Generator``.

Semantics follow the official ``yolox/data`` (current upstream): ``augment_hsv``, ``random_affine``
(rotation and scale about the origin, shear, translation; the output is the top-left ``input_size``
window of the warped 2x mosaic canvas), ``get_mosaic_coordinate``, ``MosaicDetection.mixup`` and
``TrainTransform``. Randomness comes from the ``rng`` argument instead of the global ``random`` /
``np.random`` modules, which is what makes a seeded pipeline reproducible in any worker.

Conventions: images are BGR uint8 ``[H, W, 3]``; ``targets`` are float ``[N, 5]`` =
``(x1, y1, x2, y2, class)`` in pixels; sizes are ``(height, width)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .preprocess import PAD_VALUE, letterbox


def _uniform(rng: np.random.Generator, value, center: float = 0.0) -> float:
    """Official ``get_aug_params``: a number ``v`` draws from ``center ± v``, a pair ``(a, b)`` from ``[a, b]``."""
    if isinstance(value, (int, float)):
        return float(rng.uniform(center - value, center + value))
    low, high = value
    return float(rng.uniform(low, high))


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float = 5, sgain: float = 30,
                vgain: float = 30) -> np.ndarray:
    """Official ``augment_hsv``: add integer offsets to H, S, V, each channel switched on with probability 1/2.

    Offsets are drawn in ``±gain`` and truncated to int; hue wraps modulo 180 (OpenCV's 8-bit hue), S and
    V are clipped to 0-255. Returns a new image (the BGR->HSV->BGR round trip runs even when every offset is 0,
    as in the official code).
    """
    gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain])
    gains *= rng.integers(0, 2, 3)
    dh, ds, dv = gains.astype(np.int16).tolist()
    x = np.arange(256, dtype=np.int16)
    # One 3-channel lookup table gives the same values as the official int16 arithmetic, without int16 copies
    # of the image or a split/merge of its channels.
    lut = np.stack([(x + dh) % 180, np.clip(x + ds, 0, 255), np.clip(x + dv, 0, 255)], axis=-1).astype(np.uint8)
    hsv = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), lut[None])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def affine_matrix(rng: np.random.Generator, output_size: tuple[int, int], degrees=10.0, translate=0.1,
                  scales=(0.1, 2.0), shear=2.0) -> tuple[np.ndarray, float]:
    """Official ``get_affine_matrix``: ``[2, 3]`` matrix and its scale; draws angle, scale, shear x, shear y, tx, ty."""
    height, width = output_size
    angle = _uniform(rng, degrees)
    scale = _uniform(rng, scales, center=1.0)
    if scale <= 0.0:
        raise ValueError(f"the random affine scale must be positive, drew {scale} from {scales}")
    rotation = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=scale)
    shear_x = math.tan(math.radians(_uniform(rng, shear)))
    shear_y = math.tan(math.radians(_uniform(rng, shear)))
    matrix = np.empty((2, 3))
    matrix[0] = rotation[0] + shear_y * rotation[1]
    matrix[1] = rotation[1] + shear_x * rotation[0]
    matrix[0, 2] = _uniform(rng, translate) * width
    matrix[1, 2] = _uniform(rng, translate) * height
    return matrix, scale


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]):
    """Warp ``[N, 4]`` xyxy boxes: the enclosing box of the 4 warped corners, clipped to ``output_size``.

    Returns ``(clipped, unclipped)`` boxes (the unclipped ones measure how much of a box survived).
    """
    n = len(boxes)
    corners = np.ones((4 * n, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(4 * n, 2)  # x1y1, x2y2, x1y2, x2y1
    corners = (corners @ matrix.T).reshape(n, 8)
    xs, ys = corners[:, 0::2], corners[:, 1::2]
    warped = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    return clip_boxes(warped.copy(), output_size), warped


def clip_boxes(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Clip xyxy ``boxes`` in place to ``[0, width] x [0, height]`` and return them."""
    np.clip(boxes[:, 0::2], 0, size[1], out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, size[0], out=boxes[:, 1::2])
    return boxes


def visible_fraction(clipped: np.ndarray, unclipped: np.ndarray) -> np.ndarray:
    """Area of each clipped box over the area of the same box before clipping (1 for degenerate originals)."""
    area_c = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    area_u = (unclipped[:, 2] - unclipped[:, 0]) * (unclipped[:, 3] - unclipped[:, 1])
    return np.where(area_u > 0, area_c / np.maximum(area_u, 1e-12), 1.0)


def random_affine(img: np.ndarray, targets: np.ndarray, rng: np.random.Generator, output_size: tuple[int, int],
                  degrees=10.0, translate=0.1, scales=(0.1, 2.0), shear=2.0, min_area_ratio: float = 0.0):
    """Official ``random_affine``: warp ``img`` into an ``output_size`` canvas (border 114) and its boxes with it.

    Boxes are clipped, not filtered (the official pipeline drops the degenerate ones later, in
    :func:`train_transform`); ``min_area_ratio > 0`` also drops boxes of which less than that fraction
    survives the crop (an option; off in the official code).
    """
    matrix, _ = affine_matrix(rng, output_size, degrees, translate, scales, shear)
    height, width = output_size
    img = cv2.warpAffine(img, matrix, dsize=(width, height), borderValue=(PAD_VALUE,) * 3)
    if len(targets):
        targets = targets.copy()
        clipped, warped = transform_boxes(targets[:, :4], matrix, output_size)
        targets[:, :4] = clipped
        if min_area_ratio > 0:
            targets = targets[visible_fraction(clipped, warped) >= min_area_ratio]
    return img, targets


def resize_to_fit(img: np.ndarray, targets: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep-ratio resize to fit ``size`` (``cv2.INTER_LINEAR``, sizes truncated to int), boxes scaled with it.

    This is what the official dataset's ``pull_item`` hands to mosaic and mixup.
    """
    r = min(size[0] / img.shape[0], size[1] / img.shape[1])
    new_w, new_h = int(img.shape[1] * r), int(img.shape[0] * r)
    if (new_h, new_w) != img.shape[:2]:
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    targets = targets.copy()
    targets[:, :4] *= r
    return img, targets


def mosaic_placement(index: int, xc: int, yc: int, w: int, h: int, input_h: int, input_w: int):
    """Official ``get_mosaic_coordinate``: where tile ``index`` (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right of the centre ``(xc, yc)``) of size ``w x h`` lands on the ``2h x 2w`` canvas.

    Returns ``(canvas x1, y1, x2, y2), (tile x1, y1, x2, y2)``.
    """
    if index == 0:
        x1, y1, x2, y2 = max(xc - w, 0), max(yc - h, 0), xc, yc
        tile = w - (x2 - x1), h - (y2 - y1), w, h
    elif index == 1:
        x1, y1, x2, y2 = xc, max(yc - h, 0), min(xc + w, input_w * 2), yc
        tile = 0, h - (y2 - y1), min(w, x2 - x1), h
    elif index == 2:
        x1, y1, x2, y2 = max(xc - w, 0), yc, xc, min(input_h * 2, yc + h)
        tile = w - (x2 - x1), 0, w, min(y2 - y1, h)
    else:
        x1, y1, x2, y2 = xc, yc, min(xc + w, input_w * 2), min(input_h * 2, yc + h)
        tile = 0, 0, min(w, x2 - x1), min(y2 - y1, h)
    return (x1, y1, x2, y2), tile


def mosaic(tiles, rng: np.random.Generator, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Official mosaic canvas: four ``(img, targets)`` tiles, already resized to fit ``input_size``, around a random
    centre in ``[0.5, 1.5] x input_size`` of a ``2 x input_size`` canvas filled with 114.

    Returns the ``[2h, 2w, 3]`` canvas and the boxes, clipped to it (random_affine then makes it ``input_size``).
    """
    input_h, input_w = input_size
    yc = int(rng.uniform(0.5 * input_h, 1.5 * input_h))
    xc = int(rng.uniform(0.5 * input_w, 1.5 * input_w))
    canvas = np.full((input_h * 2, input_w * 2, 3), PAD_VALUE, dtype=np.uint8)
    all_targets = []
    for k, (img, targets) in enumerate(tiles):
        h, w = img.shape[:2]
        (lx1, ly1, lx2, ly2), (sx1, sy1, sx2, sy2) = mosaic_placement(k, xc, yc, w, h, input_h, input_w)
        canvas[ly1:ly2, lx1:lx2] = img[sy1:sy2, sx1:sx2]
        targets = targets.copy()
        targets[:, [0, 2]] += lx1 - sx1
        targets[:, [1, 3]] += ly1 - sy1
        all_targets.append(targets)
    targets = np.concatenate(all_targets, 0)
    clip_boxes(targets, (2 * input_h, 2 * input_w))
    return canvas, targets


def mixup_partner_canvas(other_img: np.ndarray, target_hw: tuple[int, int], jitter: float):
    """The official mixup's partner before flip and crop: letterboxed (top-left on 114) into ``target_hw``, then the
    whole canvas resized by ``jitter``. Returns ``(canvas uint8, r)``, ``r`` the partner's total scale."""
    target_h, target_w = target_hw
    r = min(target_h / other_img.shape[0], target_w / other_img.shape[1])
    resized_h, resized_w = int(other_img.shape[0] * r), int(other_img.shape[1] * r)
    canvas = np.full((target_h, target_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:resized_h, :resized_w] = cv2.resize(other_img, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.resize(canvas, (int(target_w * jitter), int(target_h * jitter)))
    return canvas, r * jitter


def mixup_partner_boxes(boxes: np.ndarray, r: float, canvas_hw: tuple[int, int], flip: bool,
                        offsets: tuple[int, int], target_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The partner's ``boxes [n, 4]`` (x1, y1, x2, y2 as loaded) in the mixup crop: scaled by ``r``, clipped to the
    canvas, mirrored when ``flip``, shifted by the crop ``offsets`` (y, x). Returns ``(shifted, clipped to the
    target)``; the unclipped ones measure how much of each box stays visible."""
    canvas_h, canvas_w = canvas_hw
    boxes = clip_boxes(boxes * r, canvas_hw)
    if flip:
        boxes[:, [0, 2]] = canvas_w - boxes[:, [2, 0]]
    boxes[:, [0, 2]] -= offsets[1]
    boxes[:, [1, 3]] -= offsets[0]
    return boxes, clip_boxes(boxes.copy(), target_hw)


def mixup(img: np.ndarray, targets: np.ndarray, other_img: np.ndarray, other_targets: np.ndarray,
          rng: np.random.Generator, mixup_scale=(0.5, 1.5), min_area_ratio: float = 0.0):
    """Official ``MosaicDetection.mixup``: blend 50/50 with another image, letterboxed into ``img``'s size, rescaled by
    a factor from ``mixup_scale``, flipped with probability 1/2 and randomly cropped (zero padding where it
    is smaller); its boxes are added, clipped to the image.

    ``other_img``/``other_targets`` are the other image as loaded (any size). Returns ``(img uint8, targets)``.
    """
    target_h, target_w = img.shape[:2]
    jitter = float(rng.uniform(*mixup_scale))
    flip = rng.uniform(0, 1) > 0.5
    canvas, r = mixup_partner_canvas(other_img, (target_h, target_w), jitter)
    canvas_h, canvas_w = canvas.shape[:2]
    # Official: flip the canvas, zero-pad it to at least the target size, crop at a random offset drawn as
    # randint(0, extra - 1), both ends included. The same pixels, without the full-size flip and padding:
    # only the cropped window is read (from mirrored columns when flipped).
    y_offset = int(rng.integers(0, canvas_h - target_h)) if canvas_h > target_h else 0
    x_offset = int(rng.integers(0, canvas_w - target_w)) if canvas_w > target_w else 0
    visible_h, visible_w = min(target_h, canvas_h - y_offset), min(target_w, canvas_w - x_offset)
    if flip:  # cv2.flip: a negatively strided NumPy view made each blend operation 10x slower
        window = cv2.flip(canvas[y_offset:y_offset + visible_h, canvas_w - x_offset - visible_w:canvas_w - x_offset], 1)
    else:
        window = canvas[y_offset:y_offset + visible_h, x_offset:x_offset + visible_w]

    boxes, clipped = mixup_partner_boxes(other_targets[:, :4], r, (canvas_h, canvas_w), flip, (y_offset, x_offset),
                                         (target_h, target_w))
    added = np.concatenate([clipped, other_targets[:, 4:5]], axis=1).astype(targets.dtype)
    if min_area_ratio > 0:
        added = added[visible_fraction(clipped, boxes) >= min_area_ratio]
    # Official blend: uint8(0.5 * img + 0.5 * crop) in float32, i.e. floor((a + b) / 2) (exact: a + b <= 510).
    # In uint8 without overflow: (a & b) + ((a ^ b) >> 1); the zero padding outside the window gives a >> 1.
    blended = img >> 1
    a = img[:visible_h, :visible_w]
    blended[:visible_h, :visible_w] = cv2.add(cv2.bitwise_and(a, window), cv2.bitwise_xor(a, window) >> 1)
    return blended, np.concatenate([targets, added], 0)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    out[:, :2] = boxes[:, :2] + out[:, 2:] * 0.5
    return out


def train_transform(img: np.ndarray, targets: np.ndarray, rng: np.random.Generator, input_size: tuple[int, int],
                    hsv_prob: float = 1.0, flip_prob: float = 0.5, max_labels: int = 120, min_box_size: float = 1.0):
    """Official ``TrainTransform``: HSV jitter, horizontal flip, letterbox (top-left, 114), boxes to cx, cy, w, h.

    Boxes whose shorter side is not above ``min_box_size`` input pixels are dropped. When that drops every box,
    the official code falls back to the image without HSV and flip; we do too, but keep only the boxes of
    positive size (the official fallback keeps zero-size ones, which can only be wrong targets).
    An image without boxes gets neither HSV nor flip, as in the official code.

    Returns ``(canvas uint8 [h, w, 3], labels float32 [max_labels, 5] = (class, cx, cy, w, h), zero rows = padding)``.
    """
    labels = np.zeros((max_labels, 5), dtype=np.float32)
    if len(targets) == 0:
        return letterbox(img, input_size)[0], labels
    original = img
    if rng.random() < hsv_prob:
        img = augment_hsv(img, rng)
    boxes = targets[:, :4].copy()
    if rng.random() < flip_prob:
        img = cv2.flip(img, 1)
        boxes[:, [0, 2]] = img.shape[1] - boxes[:, [2, 0]]
    canvas, r = letterbox(img, input_size)
    boxes = xyxy_to_cxcywh(boxes) * r
    keep = np.minimum(boxes[:, 2], boxes[:, 3]) > min_box_size
    if not keep.any():
        canvas, r = letterbox(original, input_size)
        boxes = xyxy_to_cxcywh(targets[:, :4]) * r
        keep = np.minimum(boxes[:, 2], boxes[:, 3]) > 0
    kept = np.concatenate([targets[keep, 4:5], boxes[keep]], axis=1)[:max_labels]
    labels[: len(kept)] = kept
    return canvas, labels
