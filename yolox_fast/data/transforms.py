"""The official YOLOX training augmentations as pure functions of an explicit ``numpy.random.Generator``.

Semantics follow the official ``yolox/data`` (current upstream): ``augment_hsv``, ``random_affine``
(rotation and scale about the origin, shear, translation; the output is the top-left ``input_size``
window of the warped 2x mosaic canvas), ``get_mosaic_coordinate``, ``MosaicDetection.mixup`` and
``TrainTransform``. Randomness comes from the ``rng`` argument instead of the global ``random`` /
``np.random`` modules, which is what makes a seeded pipeline reproducible in any worker.

Conventions: images are BGR uint8 ``[H, W, 3]``; ``targets`` are float ``[N, 5]`` =
``(x1, y1, x2, y2, class)`` in pixels; sizes are ``(height, width)``.

Speed (640 input, one thread; measured with ``time.process_time``): the training pipeline's functions
(:func:`mosaic_affine`, :func:`mixup`, :func:`augment_hsv`, :func:`train_transform`) give the pixels of the
official order of operations (tests/official_pipeline.py; tests compare them exactly) with less work:
nothing outside the part of the mosaic canvas that the affine warp reads is filled or decoded, work arrays are
reused (:func:`scratch`), and the blend and colour steps stay in uint8.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from .preprocess import PAD_VALUE, letterbox


def _uniform(rng: np.random.Generator, value, center: float = 0.0) -> float:
    """Official ``get_aug_params``: a number ``v`` draws from ``center ± v``, a pair ``(a, b)`` from ``[a, b]``."""
    if isinstance(value, (int, float)):
        return float(rng.uniform(center - value, center + value))
    low, high = value
    return float(rng.uniform(low, high))


_SCRATCH = threading.local()


def scratch(name: str, shape: Sequence[int]) -> np.ndarray:
    """A uint8 work array of ``shape`` (contiguous) named ``name``, reused by later calls in the same thread.

    For intermediate images only, never for a result. Why: a fresh 640x640x3 array costs about 0.3 ms of page
    faults when glibc maps it anew (measured: an HSV round trip took 2.6 ms with fresh intermediates, 1.6 ms
    with reused ones), and a pipeline item makes several.
    """
    size = math.prod(shape)
    buffers = vars(_SCRATCH)
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size:
        buffer = buffers[name] = np.empty(size, dtype=np.uint8)
    return buffer[:size].reshape(shape)


def hsv_offsets(rng: np.random.Generator, hgain: float = 5, sgain: float = 30, vgain: float = 30):
    """Official ``augment_hsv`` draws: offsets in ``±gain``, each switched on with probability 1/2, truncated to int.

    Returns ``(dh, ds, dv)`` ints.
    """
    gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain])
    gains *= rng.integers(0, 2, 3)
    dh, ds, dv = gains.astype(np.int16).tolist()
    return dh, ds, dv


def apply_hsv(img: np.ndarray, offsets: tuple[int, int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Official ``augment_hsv`` arithmetic: add ``offsets`` to H, S, V; hue wraps modulo 180 (OpenCV's 8-bit hue),
    S and V are clipped to 0-255. The BGR->HSV->BGR round trip runs even when every offset is 0, as in the
    official code (it is not the identity). Writes ``out`` (a new array when None) and returns it.
    """
    dh, ds, dv = offsets
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV, dst=scratch("hsv", img.shape))
    if dh:
        # One 3-channel lookup table: the official int16 values without int16 copies or a channel split.
        x = np.arange(256, dtype=np.int16)
        lut = np.stack([(x + dh) % 180, np.clip(x + ds, 0, 255), np.clip(x + dv, 0, 255)], axis=-1)
        cv2.LUT(hsv, lut.astype(np.uint8)[None], dst=hsv)
    else:
        # Saturating uint8 add/subtract of a per-channel scalar is the official clip; 0.05-0.1 ms against the
        # 0.74 ms of a 3-channel lookup table (slow in OpenCV) at 640x640.
        if ds > 0 or dv > 0:
            cv2.add(hsv, (0, max(ds, 0), max(dv, 0), 0), dst=hsv)
        if ds < 0 or dv < 0:
            cv2.subtract(hsv, (0, max(-ds, 0), max(-dv, 0), 0), dst=hsv)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=out)


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float = 5, sgain: float = 30,
                vgain: float = 30) -> np.ndarray:
    """Official ``augment_hsv`` (:func:`hsv_offsets` then :func:`apply_hsv`); returns a new image."""
    return apply_hsv(img, hsv_offsets(rng, hgain, sgain, vgain))


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


def affine_targets(targets: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int],
                   min_area_ratio: float = 0.0) -> np.ndarray:
    """The boxes of :func:`random_affine`: warped, clipped to ``output_size`` (a new array)."""
    if len(targets):
        targets = targets.copy()
        clipped, warped = transform_boxes(targets[:, :4], matrix, output_size)
        targets[:, :4] = clipped
        if min_area_ratio > 0:
            targets = targets[visible_fraction(clipped, warped) >= min_area_ratio]
    return targets


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
    return img, affine_targets(targets, matrix, output_size, min_area_ratio)


def warp_source_window(matrix: np.ndarray, output_size: tuple[int, int], source_hw: tuple[int, int],
                       margin: int = 2) -> tuple[int, int, int, int]:
    """The part ``(x0, y0, x1, y1)`` (ends excluded) of a ``source_hw`` image that ``cv2.warpAffine(src, matrix,
    (w, h))`` reads with linear interpolation; empty (``x0 >= x1`` or ``y0 >= y1``) when it reads nothing.

    The box around the source points of the output pixel centres, widened by ``margin`` pixels: linear
    interpolation reads ``floor(s)`` and ``floor(s) + 1``, and the warp rounds its coordinates (to 1/32 pixel).
    A test fills everything outside this window with noise and checks that the warp does not change.
    """
    height, width = output_size
    inverse = cv2.invertAffineTransform(matrix)
    xs, ys = inverse @ np.array([[0, width - 1, 0, width - 1], [0, 0, height - 1, height - 1], [1, 1, 1, 1]],
                                dtype=np.float64)
    x0, y0 = max(math.floor(xs.min()) - margin, 0), max(math.floor(ys.min()) - margin, 0)
    x1 = min(math.floor(xs.max()) + 1 + margin, source_hw[1])
    y1 = min(math.floor(ys.max()) + 1 + margin, source_hw[0])
    return x0, y0, x1, y1


def fit_size(height: int, width: int, size: tuple[int, int]) -> tuple[float, int, int]:
    """Keep-ratio fit of a ``height x width`` image into ``size``: ``(r, new_h, new_w)``, sizes truncated to int."""
    r = min(size[0] / height, size[1] / width)
    return r, int(height * r), int(width * r)


def scale_targets(targets: np.ndarray, r: float) -> np.ndarray:
    """``targets`` with their boxes scaled by ``r`` (a new array)."""
    targets = targets.copy()
    targets[:, :4] *= r
    return targets


def resize_to_fit(img: np.ndarray, targets: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep-ratio resize to fit ``size`` (``cv2.INTER_LINEAR``, sizes truncated to int), boxes scaled with it.

    This is what the official dataset's ``pull_item`` hands to mosaic and mixup.
    """
    r, new_h, new_w = fit_size(img.shape[0], img.shape[1], size)
    if (new_h, new_w) != img.shape[:2]:
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return img, scale_targets(targets, r)


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


def mosaic_centre(rng: np.random.Generator, input_size: tuple[int, int]) -> tuple[int, int]:
    """Official mosaic centre ``(yc, xc)``: drawn (y first) in ``[0.5, 1.5] x input_size``, truncated to int."""
    input_h, input_w = input_size
    yc = int(rng.uniform(0.5 * input_h, 1.5 * input_h))
    xc = int(rng.uniform(0.5 * input_w, 1.5 * input_w))
    return yc, xc


def mosaic_targets(tile_targets: Sequence[np.ndarray], placements, input_size: tuple[int, int]) -> np.ndarray:
    """The mosaic's boxes: each tile's (resized) boxes moved to its place (:func:`mosaic_placement` results),
    all clipped to the ``2 x input_size`` canvas."""
    moved = []
    for targets, ((lx1, ly1, _, _), (sx1, sy1, _, _)) in zip(tile_targets, placements, strict=True):
        targets = targets.copy()
        targets[:, [0, 2]] += lx1 - sx1
        targets[:, [1, 3]] += ly1 - sy1
        moved.append(targets)
    targets = np.concatenate(moved, 0)
    clip_boxes(targets, (2 * input_size[0], 2 * input_size[1]))
    return targets


def mosaic(tiles, rng: np.random.Generator, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Official mosaic canvas: four ``(img, targets)`` tiles, already resized to fit ``input_size``, around a random
    centre in ``[0.5, 1.5] x input_size`` of a ``2 x input_size`` canvas filled with 114.

    Returns the ``[2h, 2w, 3]`` canvas and the boxes, clipped to it (random_affine then makes it ``input_size``).
    """
    input_h, input_w = input_size
    yc, xc = mosaic_centre(rng, input_size)
    canvas = np.full((input_h * 2, input_w * 2, 3), PAD_VALUE, dtype=np.uint8)
    placements = []
    for k, (img, _) in enumerate(tiles):
        h, w = img.shape[:2]
        placements.append(mosaic_placement(k, xc, yc, w, h, input_h, input_w))
        (lx1, ly1, lx2, ly2), (sx1, sy1, sx2, sy2) = placements[-1]
        canvas[ly1:ly2, lx1:lx2] = img[sy1:sy2, sx1:sx2]
    return canvas, mosaic_targets([targets for _, targets in tiles], placements, input_size)


#: A mosaic tile for :func:`mosaic_affine`: its height and width as loaded, its targets as loaded (pixels of
#: that size), and a function that loads its image (uint8 ``[height, width, 3]``), called only when needed.
MosaicTile = tuple[int, int, np.ndarray, Callable[[], np.ndarray]]


def mosaic_affine(tiles: Sequence[MosaicTile], rng: np.random.Generator, input_size: tuple[int, int], degrees=10.0,
                  translate=0.1, scales=(0.1, 2.0), shear=2.0, min_area_ratio: float = 0.0,
                  out: np.ndarray | None = None):
    """Official mosaic of four tiles (each resized to fit ``input_size``) then :func:`random_affine`: the same
    pixels, boxes and random draws as ``random_affine(*mosaic(tiles, ...), ...)``, with less work.

    The warp reads only a window of the ``2 x input_size`` canvas (:func:`warp_source_window`; for the official
    scale range U(0.1, 2) about 40% of it on average), so only that window is filled, and a tile outside it is
    neither loaded nor resized (on coco128 at 640, 1.5 of the 4 tiles per item on average: one JPEG decode
    is ~2 ms, about as much as the whole warp). The canvas itself is a reused work array.

    Returns ``(img uint8 [h, w, 3], targets [N, 5])``; ``img`` is ``out`` when given (the pipeline passes a
    :func:`scratch` array: one fresh image less per item), else a new array.
    """
    input_h, input_w = input_size
    yc, xc = mosaic_centre(rng, input_size)
    matrix, _ = affine_matrix(rng, input_size, degrees, translate, scales, shear)
    canvas = scratch("mosaic canvas", (2 * input_h, 2 * input_w, 3))
    x0, y0, x1, y1 = warp_source_window(matrix, input_size, canvas.shape[:2])
    canvas[y0:y1, x0:x1] = PAD_VALUE  # the rest of the canvas is never read: left as it is
    placements, tile_targets = [], []
    for k, (height, width, targets, load) in enumerate(tiles):
        r, h, w = fit_size(height, width, input_size)
        placements.append(mosaic_placement(k, xc, yc, w, h, input_h, input_w))
        tile_targets.append(scale_targets(targets, r))
        (lx1, ly1, lx2, ly2), (sx1, sy1, _, _) = placements[-1]
        wx1, wy1, wx2, wy2 = max(lx1, x0), max(ly1, y0), min(lx2, x1), min(ly2, y1)  # the part inside the window
        if wx1 >= wx2 or wy1 >= wy2:
            continue
        img = load()
        if img.shape[:2] != (height, width):
            raise ValueError(f"mosaic tile {k}: the image is {img.shape[1]}x{img.shape[0]} (w x h), its size was "
                             f"given as {width}x{height}")
        if (h, w) != (height, width):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        canvas[wy1:wy2, wx1:wx2] = img[sy1 + wy1 - ly1:sy1 + wy2 - ly1, sx1 + wx1 - lx1:sx1 + wx2 - lx1]
    img = cv2.warpAffine(canvas, matrix, dsize=(input_w, input_h), dst=out, borderValue=(PAD_VALUE,) * 3)
    targets = mosaic_targets(tile_targets, placements, input_size)
    return img, affine_targets(targets, matrix, input_size, min_area_ratio)


def mixup_partner_canvas(other_img: np.ndarray, target_hw: tuple[int, int], jitter: float, reuse: bool = False):
    """The official mixup's partner before flip and crop: letterboxed (top-left on 114) into ``target_hw``, then the
    whole canvas resized by ``jitter``. Returns ``(canvas uint8, r)``, ``r`` the partner's total scale.

    ``reuse=True`` (the training pipeline): the same pixels in reused work arrays (:func:`scratch`; valid until
    the next call in this thread), the partner resized straight into the letterbox and only the padding filled;
    ``reuse=False``: the official steps, fresh arrays.
    """
    target_h, target_w = target_hw
    r = min(target_h / other_img.shape[0], target_w / other_img.shape[1])
    resized_h, resized_w = int(other_img.shape[0] * r), int(other_img.shape[1] * r)
    jitter_hw = (int(target_h * jitter), int(target_w * jitter))
    if not reuse:
        canvas = np.full((target_h, target_w, 3), PAD_VALUE, dtype=np.uint8)
        canvas[:resized_h, :resized_w] = cv2.resize(other_img, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(canvas, jitter_hw[::-1]), r * jitter
    canvas = scratch("mixup letterbox", (target_h, target_w, 3))
    canvas[resized_h:] = PAD_VALUE
    canvas[:resized_h, resized_w:] = PAD_VALUE
    if (resized_h, resized_w) == other_img.shape[:2]:  # cv2.resize to the same size is a copy
        canvas[:resized_h, :resized_w] = other_img
    else:
        cv2.resize(other_img, (resized_w, resized_h), dst=canvas[:resized_h, :resized_w],
                   interpolation=cv2.INTER_LINEAR)
    return cv2.resize(canvas, jitter_hw[::-1], dst=scratch("mixup jitter", (*jitter_hw, 3))), r * jitter


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
          rng: np.random.Generator, mixup_scale=(0.5, 1.5), min_area_ratio: float = 0.0,
          out: np.ndarray | None = None):
    """Official ``MosaicDetection.mixup``: blend 50/50 with another image, letterboxed into ``img``'s size, rescaled by
    a factor from ``mixup_scale``, flipped with probability 1/2 and randomly cropped (zero padding where it
    is smaller); its boxes are added, clipped to the image.

    ``other_img``/``other_targets`` are the other image as loaded (any size). The blend is written to ``out``
    (``out=img`` blends in place; None: a new array). Returns ``(blended uint8, targets)``.
    """
    target_h, target_w = img.shape[:2]
    jitter = float(rng.uniform(*mixup_scale))
    flip = rng.uniform(0, 1) > 0.5
    canvas, r = mixup_partner_canvas(other_img, (target_h, target_w), jitter, reuse=True)
    canvas_h, canvas_w = canvas.shape[:2]
    # Official: flip the canvas, zero-pad it to at least the target size, crop at a random offset drawn as
    # randint(0, extra - 1), both ends included. The same pixels, without the full-size flip and padding:
    # only the cropped window is read (from mirrored columns when flipped).
    y_offset = int(rng.integers(0, canvas_h - target_h)) if canvas_h > target_h else 0
    x_offset = int(rng.integers(0, canvas_w - target_w)) if canvas_w > target_w else 0
    visible_h, visible_w = min(target_h, canvas_h - y_offset), min(target_w, canvas_w - x_offset)
    if flip:  # cv2.flip: a negatively strided NumPy view made each blend operation 10x slower
        window = cv2.flip(canvas[y_offset:y_offset + visible_h, canvas_w - x_offset - visible_w:canvas_w - x_offset], 1,
                          dst=scratch("mixup window", (visible_h, visible_w, 3)))
    else:
        window = canvas[y_offset:y_offset + visible_h, x_offset:x_offset + visible_w]

    boxes, clipped = mixup_partner_boxes(other_targets[:, :4], r, (canvas_h, canvas_w), flip, (y_offset, x_offset),
                                         (target_h, target_w))
    added = np.concatenate([clipped, other_targets[:, 4:5]], axis=1).astype(targets.dtype)
    if min_area_ratio > 0:
        added = added[visible_fraction(clipped, boxes) >= min_area_ratio]
    # Official blend: uint8(0.5 * img + 0.5 * crop) in float32, i.e. floor((a + b) / 2) (exact: a + b <= 510).
    # In uint8: addWeighted computes 0.5 a + 0.5 b - 0.25 in float32 (exact) and rounds it to the nearest
    # integer, which is floor((a + b) / 2) for every pair (a test checks all 65536); one pass, 0.18 ms at 640.
    # The zero padding outside the window gives floor(a / 2).
    blended = np.empty_like(img) if out is None else out
    cv2.addWeighted(img[:visible_h, :visible_w], 0.5, window, 0.5, -0.25, dst=blended[:visible_h, :visible_w])
    np.right_shift(img[visible_h:], 1, out=blended[visible_h:])
    np.right_shift(img[:visible_h, visible_w:], 1, out=blended[:visible_h, visible_w:])
    return blended, np.concatenate([targets, added], 0)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    out[:, :2] = boxes[:, :2] + out[:, 2:] * 0.5
    return out


def train_labels(targets: np.ndarray, boxes: np.ndarray, r: float, min_box_size: float, max_labels: int):
    """``TrainTransform``'s labels: ``boxes [N, 4]`` (xyxy, as flipped) scaled by ``r`` to ``(class, cx, cy, w, h)``
    rows, classes from ``targets[:, 4]``; boxes whose shorter side is not above ``min_box_size`` are dropped and
    at most ``max_labels`` rows kept. Returns float32 ``[max_labels, 5]`` (zero rows = padding) and whether any
    box was kept."""
    labels = np.zeros((max_labels, 5), dtype=np.float32)
    boxes = xyxy_to_cxcywh(boxes) * r
    keep = np.minimum(boxes[:, 2], boxes[:, 3]) > min_box_size
    kept = np.concatenate([targets[keep, 4:5], boxes[keep]], axis=1)[:max_labels]
    labels[: len(kept)] = kept
    return labels, bool(len(kept))


def labels_or_fallback(canvas: np.ndarray, r: float, targets: np.ndarray, boxes: np.ndarray, untouched: np.ndarray,
                       input_size: tuple[int, int], min_box_size: float, max_labels: int):
    """``TrainTransform``'s last step: the labels of ``canvas`` (:func:`train_labels` of ``boxes`` at scale ``r``).

    When the size filter drops every box, the official fallback: ``untouched`` (the image before HSV and flip)
    letterboxed, with the boxes of ``targets`` of positive size. Returns ``(canvas, labels)``.
    """
    labels, any_kept = train_labels(targets, boxes, r, min_box_size, max_labels)
    if any_kept:
        return canvas, labels
    canvas, r = letterbox(untouched, input_size)
    return canvas, train_labels(targets, targets[:, :4], r, 0.0, max_labels)[0]


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """xyxy ``boxes`` mirrored in an image ``width`` pixels wide (a new array)."""
    flipped = boxes.copy()
    flipped[:, [0, 2]] = width - boxes[:, [2, 0]]
    return flipped


def train_transform(img: np.ndarray, targets: np.ndarray, rng: np.random.Generator, input_size: tuple[int, int],
                    hsv_prob: float = 1.0, flip_prob: float = 0.5, max_labels: int = 120, min_box_size: float = 1.0):
    """Official ``TrainTransform``: HSV jitter, horizontal flip, letterbox (top-left, 114), boxes to cx, cy, w, h.

    Boxes whose shorter side is not above ``min_box_size`` input pixels are dropped. When that drops every box,
    the official code falls back to the image without HSV and flip; we do too, but keep only the boxes of
    positive size (the official fallback keeps zero-size ones, which can only be wrong targets).
    An image without boxes gets neither HSV nor flip, as in the official code.

    Draws: HSV decision, HSV offsets (when on), flip decision. All draws come first, so that HSV writes straight
    into the flip's input and the last step writes the result: at most one new image.

    Returns ``(canvas uint8 [h, w, 3], labels float32 [max_labels, 5] = (class, cx, cy, w, h), zero rows = padding)``;
    the canvas is a new array, never ``img``.
    """
    if len(targets) == 0:
        return letterbox(img, input_size)[0], np.zeros((max_labels, 5), dtype=np.float32)
    offsets = hsv_offsets(rng) if rng.random() < hsv_prob else None
    flip = rng.random() < flip_prob
    boxes = targets[:, :4]
    out = img
    if offsets is not None:
        out = apply_hsv(img, offsets, out=scratch("hsv output", img.shape) if flip else None)
    if flip:
        out = cv2.flip(out, 1)
        boxes = flip_boxes(boxes, img.shape[1])
    if out is not img and out.shape[:2] == tuple(input_size):
        canvas, r = out, 1.0  # letterbox at scale 1: cv2.resize to the same size is a copy, nothing is padded
    else:
        canvas, r = letterbox(out, input_size)
    return labels_or_fallback(canvas, r, targets, boxes, img, input_size, min_box_size, max_labels)
