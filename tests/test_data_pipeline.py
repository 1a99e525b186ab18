"""The training augmentation: the fast steps give the official pixels (whole items against the official order of
operations, :func:`official_pipeline.official_train_item`), and the sampled parameters follow the
official distributions.

Distributions: every random draw of the real pipeline (``TrainAugmentDataset.__getitem__`` on real data)
is recorded with the function that made it; their ranges, means and frequencies are compared with the
official formulas (``yolox_base`` defaults: mosaic 1.0, mixup 1.0, HSV 1.0, flip 0.5, rotation U(-10, 10)
degrees, scale U(0.1, 2.0), shear U(-2, 2) degrees, translation U(-0.1, 0.1) of the size, mosaic centre
U(0.5, 1.5) of the size, mixup jitter U(0.5, 1.5) and flip 1/2, HSV gains U(-g, g) each on with
probability 1/2, g = 5, 30, 30).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolox_fast.data import COCODetection, TrainAugmentDataset, YOLODetection, make_synthetic_dataset
from yolox_fast.data import transforms as T
from official_pipeline import augment_hsv_reference, mixup_reference, official_train_item

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128"

N_ITEMS = 400
SIZE = (64, 96)  # (h, w), not square: the centre and translation draws must use the right side


class RecordingRNG:
    """A ``numpy.random.Generator`` that records each draw with the name of the pipeline function making it."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.draws: list[tuple[str, str, np.ndarray]] = []

    def _record(self, method, *args, **kwargs):
        frame = sys._getframe(2)
        if frame.f_code.co_name == "_uniform":  # the official get_aug_params helper: name its caller
            frame = frame.f_back
        value = getattr(self.rng, method)(*args, **kwargs)
        self.draws.append((frame.f_code.co_name, method, np.asarray(value, dtype=np.float64)))
        return value

    def random(self, *args, **kwargs):
        return self._record("random", *args, **kwargs)

    def uniform(self, *args, **kwargs):
        return self._record("uniform", *args, **kwargs)

    def integers(self, *args, **kwargs):
        return self._record("integers", *args, **kwargs)

    def of(self, function: str) -> list[np.ndarray]:
        return [value for name, _, value in self.draws if name == function]


@pytest.fixture(scope="module")
def recorded_items(tmp_path_factory):
    info = make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=16, num_val=1, image_size=96, seed=4)
    aug = TrainAugmentDataset(COCODetection(info["train_images"], info["train_ann"]), input_size=SIZE, seed=0)
    recorders = []

    def recording_rng(index, epoch=None):
        recorders.append(RecordingRNG([0, len(recorders)]))  # a fresh stream per call: N independent items
        return recorders[-1]

    aug.rng = recording_rng
    for i in range(N_ITEMS):
        aug[i % len(aug)]
    return recorders


def assert_uniform(values, low, high, name):
    """Inside [low, high], mean within 4 standard errors of the middle, both ends reached within 5% of the width."""
    values = np.asarray(values, dtype=np.float64).ravel()
    width = high - low
    assert len(values) > 50, f"{name}: only {len(values)} draws"
    assert values.min() >= low and values.max() <= high, f"{name}: outside [{low}, {high}]"
    se = width / math.sqrt(12 * len(values))
    assert abs(values.mean() - (low + high) / 2) < 4 * se, f"{name}: mean {values.mean()} vs {(low + high) / 2}"
    assert values.min() < low + 0.05 * width and values.max() > high - 0.05 * width, f"{name}: range not covered"


def assert_rate(hits, n, p, name):
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, f"{name}: {hits}/{n} vs {p}"


def test_mosaic_and_affine_parameters(recorded_items):
    h, w = SIZE
    mosaic = [r for r in recorded_items if r.of("_mosaic")]
    assert_rate(len(mosaic), len(recorded_items), 1.0, "mosaic")
    centres = np.array([r.of("mosaic_centre") for r in mosaic])  # yc, xc; then truncated to int
    assert_uniform(centres[:, 0], 0.5 * h, 1.5 * h, "mosaic centre y")
    assert_uniform(centres[:, 1], 0.5 * w, 1.5 * w, "mosaic centre x")
    tiles = np.concatenate([r.of("_mosaic")[0] for r in mosaic])
    assert_uniform(tiles, 0, 15, "mosaic tile index")  # integers(0, 16): 0..15
    affine = np.array([r.of("affine_matrix") for r in mosaic])  # angle, scale, shear x, shear y, tx, ty
    for column, (low, high), name in zip(range(6), [(-10, 10), (0.1, 2.0), (-2, 2), (-2, 2), (-0.1, 0.1), (-0.1, 0.1)],
                                         ["angle", "scale", "shear x", "shear y", "translate x", "translate y"],
                                         strict=True):
        assert_uniform(affine[:, column], low, high, name)


def test_mixup_parameters(recorded_items):
    mosaic = [r for r in recorded_items if r.of("_mosaic")]
    decisions = [r.of("__getitem__")[1] for r in mosaic]  # [0] is the mosaic draw
    assert_uniform(decisions, 0, 1, "mixup decision")  # mixup_prob 1.0: always below it
    mixups = [r.of("mixup") for r in mosaic]
    assert len(mixups) == len(mosaic)
    assert_uniform([m[0] for m in mixups], 0.5, 1.5, "mixup jitter")
    assert_rate(sum(m[1] > 0.5 for m in mixups), len(mixups), 0.5, "mixup flip")


def test_hsv_and_flip_parameters(recorded_items):
    transforms = [r.of("train_transform") for r in recorded_items if r.of("train_transform")]
    assert len(transforms) > 0.9 * N_ITEMS  # items with boxes
    assert_uniform([t[0] for t in transforms], 0, 1, "hsv decision")  # hsv_prob 1.0
    assert_rate(sum(t[1] < 0.5 for t in transforms), len(transforms), 0.5, "flip")
    hsv = [r.of("hsv_offsets") for r in recorded_items if r.of("hsv_offsets")]
    gains = np.array([g[0] for g in hsv])
    switches = np.array([g[1] for g in hsv])
    assert_uniform(gains, -1, 1, "hsv gain factor")
    for channel, name in enumerate("hsv"):
        assert_rate(int(switches[:, channel].sum()), len(switches), 0.5, f"{name} switch")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    offsets = []  # the effective offsets: ±gain, truncated to int, zero when switched off
    for seed in range(300):
        out = T.augment_hsv(img, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, augment_hsv_reference(img, np.random.default_rng(seed)))
        g = np.random.default_rng(seed)
        offsets.append((g.uniform(-1, 1, 3) * [5, 30, 30] * g.integers(0, 2, 3)).astype(np.int16))
    offsets = np.array(offsets)
    assert (np.abs(offsets) <= [4, 29, 29]).all() and abs(offsets.mean()) < 2


def test_mixup_gives_the_official_pixels_and_boxes():
    g = np.random.default_rng(0)
    for seed in range(120):
        th, tw = int(g.integers(32, 160)), int(g.integers(32, 160))
        img = g.integers(0, 256, (th, tw, 3), dtype=np.uint8)
        other = g.integers(0, 256, (int(g.integers(20, 240)), int(g.integers(20, 240)), 3), dtype=np.uint8)
        targets = np.array([[1, 2, 20, 30, 0]], np.float32)
        other_targets = np.array([[3, 4, 15, 18, 2], [0, 0, other.shape[1], other.shape[0], 1]], np.float32)
        fast = T.mixup(img, targets, other, other_targets, np.random.default_rng(seed))
        official = mixup_reference(img, targets, other, other_targets, np.random.default_rng(seed))
        np.testing.assert_array_equal(fast[0], official[0], err_msg=f"case {seed}")
        np.testing.assert_array_equal(fast[1], official[1], err_msg=f"case {seed}")


def test_uint8_blend_is_the_official_float_formula_for_every_pair():
    a, b = (x.astype(np.uint8) for x in np.meshgrid(np.arange(256), np.arange(256)))
    a, b = np.repeat(a[..., None], 3, -1), np.repeat(b[..., None], 3, -1)
    official = (0.5 * a.astype(np.float32) + 0.5 * b.astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(cv2.addWeighted(a, 0.5, b, 0.5, -0.25), official)


def test_warp_reads_only_its_source_window():
    """Noise outside warp_source_window leaves the warp unchanged; the window is often much smaller than the canvas."""
    rng = np.random.default_rng(0)
    fractions = []
    for case in range(160):
        h, w = [(64, 96), (96, 64), (128, 128), (200, 160)][case % 4]
        matrix, _ = T.affine_matrix(rng, (h, w), degrees=float(rng.choice([10, 45])), translate=0.1,
                                    scales=(0.1, 2.0), shear=float(rng.choice([2, 10])))
        canvas = rng.integers(0, 256, (2 * h, 2 * w, 3), dtype=np.uint8)
        x0, y0, x1, y1 = T.warp_source_window(matrix, (h, w), canvas.shape[:2])
        noisy = rng.integers(0, 256, canvas.shape, dtype=np.uint8)
        noisy[y0:y1, x0:x1] = canvas[y0:y1, x0:x1]
        expected = cv2.warpAffine(canvas, matrix, (w, h), borderValue=(114, 114, 114))
        np.testing.assert_array_equal(cv2.warpAffine(noisy, matrix, (w, h), borderValue=(114, 114, 114)), expected,
                                      err_msg=f"case {case}")
        fractions.append(max(x1 - x0, 0) * max(y1 - y0, 0) / (4 * h * w))
    assert np.mean(fractions) < 0.6 and min(fractions) < 0.1


def assert_items_equal_official(aug, indices, what):
    items = [aug[i] for i in indices]  # all made first: an item sharing a reused work array would change later
    for i, (image, labels, image_id) in zip(indices, items, strict=True):
        official_image, official_labels, official_id = official_train_item(aug, i)
        assert image.dtype == torch.uint8 and image_id == official_id, f"{what}: item {i}"
        np.testing.assert_array_equal(image.numpy(), official_image.astype(np.uint8), err_msg=f"{what}: item {i}")
        np.testing.assert_array_equal(official_image, official_image.round(), err_msg="float output not integral")
        np.testing.assert_array_equal(labels.numpy(), official_labels, err_msg=f"{what}: item {i} labels")


@pytest.mark.skipif(not COCO128.is_dir(), reason=f"coco128 not found at {COCO128}")
def test_items_equal_the_official_order_on_coco128():
    """The whole fast item (skipped tiles, windowed canvas, uint8 blend and HSV, reused buffers) equals the official
    order of operations, pixel for pixel and label for label, under several settings."""
    dataset = COCODetection(COCO128 / "train2017", COCO128 / "annotations" / "instances_train2017.json")
    settings = [dict(input_size=640), dict(input_size=(320, 480), degrees=40.0, shear=10.0, translate=0.3),
                dict(input_size=(416, 352), mosaic_scale=(0.5, 1.5), min_area_ratio=0.2), dict(input_size=320,
                                                                                             mosaic=False)]
    loads = []
    load_image = dataset.load_image
    dataset.load_image = lambda i: loads.append(i) or load_image(i)  # counts the mosaic tiles decoded
    for k, kwargs in enumerate(settings):
        aug = TrainAugmentDataset(dataset, seed=k, **kwargs)
        aug.set_epoch(k)
        assert_items_equal_official(aug, range(k, 128, 13), str(kwargs))
    # tiles the warp never reads are not decoded (on coco128 at 640 about 1.5 of 4 per item)
    assert 0 < len(loads) < 0.85 * 4 * 3 * len(range(0, 128, 13))


def test_items_equal_the_official_order_without_known_sizes_and_with_the_cache(tmp_path):
    """A YOLO folder (image sizes unknown until decoded) of varied sizes, uncached and RAM-cached."""
    rng = np.random.default_rng(2)
    for k in range(6):
        h, w = int(rng.integers(40, 140)), int(rng.integers(40, 140))
        path = tmp_path / "images" / f"{k}.jpg"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        label = tmp_path / "labels" / f"{k}.txt"
        label.parent.mkdir(exist_ok=True)
        label.write_text("".join(f"{int(rng.integers(0, 3))} {rng.uniform(0.3, 0.7):.4f} {rng.uniform(0.3, 0.7):.4f} "
                                 f"{rng.uniform(0.1, 0.5):.4f} {rng.uniform(0.1, 0.5):.4f}\n" for _ in range(3)))
    for cache in (False, True):
        dataset = YOLODetection(tmp_path / "images", class_names=["a", "b", "c"], cache_images=cache)
        assert (dataset.known_image_size(0) is not None) == cache
        aug = TrainAugmentDataset(dataset, input_size=(64, 96), seed=5)
        for epoch in range(3):
            aug.set_epoch(epoch)
            assert_items_equal_official(aug, range(len(aug)), f"cache={cache} epoch={epoch}")
        assert dataset.known_image_size(0) is not None  # remembered once decoded
    # Any dataset with load / len / num_targets (no sizes known in advance: every tile decoded)
    aug = TrainAugmentDataset(PlainDataset(dataset), input_size=(64, 96), seed=6)
    assert_items_equal_official(aug, range(len(aug)), "plain dataset")


class PlainDataset:
    """The minimal dataset protocol of TrainAugmentDataset, around a DetectionDataset."""

    def __init__(self, inner):
        self.inner, self.num_classes = inner, inner.num_classes

    def __len__(self):
        return len(self.inner)

    def load(self, i):
        return self.inner.load(i)

    def num_targets(self, i):
        return self.inner.num_targets(i)
