"""Datasets, augmentation and the synthetic dataset, on real files (coco128, tmp_path folders)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolox_fast.data import (
    COCODetection,
    TrainAugmentDataset,
    YOLODetection,
    check_labels,
    collate,
    letterbox,
    make_synthetic_dataset,
    read_image,
)
from yolox_fast.data import transforms as T
from yolox_fast.data.synthetic import SHAPE_CLASSES

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128"
needs_coco128 = pytest.mark.skipif(not COCO128.is_dir(), reason=f"coco128 not found at {COCO128}")


# -- helpers ---------------------------------------------------------------------------------------
def write_image(path: Path, h: int = 60, w: int = 80, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_coco(tmp_path: Path, annotations, images=None, categories=None) -> tuple[Path, Path]:
    """A COCO dataset in tmp_path: by default two 60x80 images (ids 1, 2) and categories 3 'cat', 7 'dog'."""
    images = images if images is not None else [
        {"id": 1, "file_name": "a.png", "height": 60, "width": 80},
        {"id": 2, "file_name": "b.png", "height": 60, "width": 80},
    ]
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    for k, image in enumerate(images):
        write_image(image_dir / image["file_name"], image["height"], image["width"], value=k)
    categories = categories if categories is not None else [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return image_dir, ann_file


def ann(ann_id, image_id, bbox, category_id=3, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": iscrowd}


def write_yolo(root: Path, labels: dict[str, str], names=("a", "b")) -> Path:
    """A YOLO dataset root/images/train + root/labels/train; ``labels``: image stem -> label text (None: no file)."""
    for k, (stem, text) in enumerate(labels.items()):
        write_image(root / "images" / "train" / f"{stem}.jpg", 50, 100, value=k)
        if text is not None:
            label = root / "labels" / "train" / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
    if names is not None:
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root / "images" / "train"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=8, num_val=3, image_size=128, seed=3)


@pytest.fixture(scope="module")
def synthetic_train(synthetic):
    return COCODetection(synthetic["train_images"], synthetic["train_ann"])


def assert_labels_valid(labels: torch.Tensor, input_size, num_classes: int, max_labels: int) -> int:
    """Labels are [max_labels, 5] (class, cx, cy, w, h), real rows first, then all-zero padding; boxes in the canvas."""
    assert labels.shape == (max_labels, 5) and labels.dtype == torch.float32
    real = labels.abs().sum(1) > 0
    n = int(real.sum())
    assert bool(real[:n].all()) and not bool(real[n:].any()), "padding rows must come after the labels"
    cls, cx, cy, w, h = labels[:n].T
    h_in, w_in = input_size
    assert torch.all(cls == cls.round()) and torch.all((cls >= 0) & (cls < num_classes))
    assert torch.all(w > 1) and torch.all(h > 1)
    eps = 1e-3
    assert torch.all(cx - w / 2 >= -eps) and torch.all(cx + w / 2 <= w_in + eps)
    assert torch.all(cy - h / 2 >= -eps) and torch.all(cy + h / 2 <= h_in + eps)
    return n


# -- COCO ------------------------------------------------------------------------------------------
@needs_coco128
def test_coco128_loads_with_names_ids_and_report():
    ds = COCODetection(COCO128 / "train2017", COCO128 / "annotations" / "instances_train2017.json")
    assert len(ds) == 128 and len(ds.class_names) == 80
    assert ds.class_names[0] == "person" and ds.category_ids == sorted(ds.coco.getCatIds())
    assert ds.report["crowd_skipped"] == 10 and ds.report.num_boxes == 929
    assert "10 crowd annotations skipped" in str(ds.report)
    img, targets, image_id = ds.load(0)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert targets.dtype == np.float32 and targets.shape[1] == 5
    assert image_id == ds.image_ids[0] == 9
    # The boxes are the json's non-crowd boxes (x, y, w, h -> x1, y1, x2, y2) with contiguous classes.
    anns = [a for a in ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=[9])) if not a["iscrowd"]]
    expected = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3],
                 ds.category_ids.index(a["category_id"])] for a in anns]
    np.testing.assert_allclose(targets, np.array(expected, dtype=np.float32), rtol=0, atol=1e-3)


def test_coco_class_order_follows_sorted_category_ids(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 2, 10, 10], category_id=7)])
    ds = COCODetection(image_dir, ann_file)
    assert ds.category_ids == [3, 7] and ds.class_names == ["cat", "dog"]
    assert ds.load(0)[1][0, 4] == 1  # category 7 -> index 1


def test_coco_crowd_clipped_zero_size_outside_are_counted(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [
        ann(11, 1, [10, 10, 20, 20]),              # kept as is
        ann(12, 1, [-5, 50, 20, 20]),              # clipped to x 0..15, y 50..60
        ann(13, 1, [5, 5, 0, 10]),                 # zero width: skipped
        ann(14, 2, [100, 10, 10, 10]),             # entirely outside (image is 80 wide): skipped
        ann(15, 2, [1, 1, 30, 30], iscrowd=1),     # crowd: skipped
    ])
    ds = COCODetection(image_dir, ann_file)
    report = ds.report
    kinds = ("box_clipped", "box_zero_size", "box_outside", "crowd_skipped")
    assert [report[kind] for kind in kinds] == [1, 1, 1, 1]
    assert report["image_no_boxes"] == 1 and report.has_problems
    text = str(report)
    for ann_id in (12, 13, 14, 15):
        assert f"annotation id {ann_id} " in text
    _, targets, _ = ds.load(0)
    np.testing.assert_allclose(targets[:, :4], [[10, 10, 30, 30], [0, 50, 15, 60]])
    assert ds.load(1)[1].shape == (0, 5)


def test_coco_unknown_category_names_the_annotation(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5]), ann(42, 2, [1, 1, 5, 5], category_id=99)])
    with pytest.raises(ValueError, match=r"annotation id 42 .*category_id 99"):
        COCODetection(image_dir, ann_file)


@pytest.mark.parametrize("bbox", [[1, 2, 3], [1, 2, "x", 4], [1, 2, float("nan"), 4]])
def test_coco_malformed_bbox_names_the_annotation(tmp_path, bbox):
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5])])
    data = json.loads(ann_file.read_text())
    data["annotations"].append({"id": 77, "image_id": 2, "category_id": 3, "bbox": bbox, "iscrowd": 0})
    ann_file.write_text(json.dumps(data).replace("NaN", "NaN"))
    with pytest.raises(ValueError, match=r"annotation id 77 .*bbox"):
        COCODetection(image_dir, ann_file)


def test_coco_annotation_for_unknown_image_names_it(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [ann(5, 123, [1, 1, 5, 5])])
    with pytest.raises(ValueError, match=r"annotation id 5 refers to image id 123"):
        COCODetection(image_dir, ann_file)


def test_coco_missing_image_found_at_construction(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5])])
    (image_dir / "b.png").unlink()
    ds = COCODetection(image_dir, ann_file)
    assert len(ds) == 1 and ds.image_ids == [1]
    assert ds.report["image_missing"] == 1 and "b.png" in str(ds.report)
    with pytest.raises(FileNotFoundError, match=r"image id 2: file not found: .*b\.png"):
        COCODetection(image_dir, ann_file, missing_images="error")


def test_corrupt_image_raises_with_its_name(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5])])
    (image_dir / "b.png").write_bytes(b"this is not a png")
    ds = COCODetection(image_dir, ann_file)  # existence is checked now, decoding at load time
    ds.load(0)
    with pytest.raises(ValueError, match=r"b\.png"):
        ds.load(1)
    with pytest.raises(ValueError, match=r"b\.png"):
        COCODetection(image_dir, ann_file, cache_images=True)  # the cache decodes everything up front


SHARED_IMAGES = COCO128.parent / "images"


def truncated_copy(src: Path, dst: Path, keep: float = 0.6) -> Path:
    """The first ``keep`` of ``src``'s bytes written to ``dst`` (a download or copy cut short)."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.skipif(not (SHARED_IMAGES / "dog.jpg").is_file(), reason=f"dog.jpg not found in {SHARED_IMAGES}")
def test_truncated_images_raise_naming_the_file(tmp_path):
    """libjpeg grey-fills a truncated JPEG and only warns; read_image refuses it, naming the file."""
    dog = SHARED_IMAGES / "dog.jpg"
    whole = read_image(dog)
    for keep in (0.6, 0.99):
        cut = truncated_copy(dog, tmp_path / f"dog_{keep}.jpg", keep)
        assert cv2.imread(str(cut)) is not None  # what the old code accepted: decoded, grey-filled
        with pytest.raises(ValueError, match=rf"dog_{keep}.jpg: truncated JPEG"):
            read_image(cut)
    # Bytes after the end-of-image marker (phone trailers) and progressive JPEGs are whole images.
    trailer = tmp_path / "trailer.jpg"
    trailer.write_bytes(dog.read_bytes() + b"\xff\xda\x00\x08trailer" * 4)
    assert np.array_equal(read_image(trailer), whole)
    ok, progressive = cv2.imencode(".jpg", whole, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    (tmp_path / "progressive.jpg").write_bytes(progressive.tobytes())
    assert read_image(tmp_path / "progressive.jpg").shape == whole.shape
    truncated_copy(tmp_path / "progressive.jpg", tmp_path / "progressive_cut.jpg", 0.5)
    with pytest.raises(ValueError, match="progressive_cut.jpg: truncated JPEG"):
        read_image(tmp_path / "progressive_cut.jpg")
    ok, png = cv2.imencode(".png", whole[:64, :64])
    (tmp_path / "whole.png").write_bytes(png.tobytes())
    assert np.array_equal(read_image(tmp_path / "whole.png"), whole[:64, :64])
    truncated_copy(tmp_path / "whole.png", tmp_path / "cut.png", 0.95)
    with pytest.raises(ValueError, match="cut.png: truncated PNG"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg: empty file"):
        read_image(tmp_path / "empty.jpg")


@pytest.mark.skipif(not (SHARED_IMAGES / "dog.jpg").is_file(), reason=f"dog.jpg not found in {SHARED_IMAGES}")
def test_datasets_error_on_or_skip_truncated_images(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5])],
                                     images=[{"id": 1, "file_name": "a.jpg", "height": 576, "width": 768},
                                             {"id": 2, "file_name": "b.png", "height": 60, "width": 80}])
    truncated_copy(SHARED_IMAGES / "dog.jpg", image_dir / "a.jpg")
    default = COCODetection(image_dir, ann_file)  # the policy by default: an error naming the file on use
    with pytest.raises(ValueError, match="a.jpg: truncated JPEG"):
        default.load(0)
    skipping = COCODetection(image_dir, ann_file, bad_images="skip")
    assert len(skipping) == 1 and skipping.image_ids == [2] and skipping.report["image_bad"] == 1
    assert "a.jpg: truncated JPEG" in str(skipping.report)
    images = write_yolo(tmp_path / "yolo", {"a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    truncated_copy(images / "a.jpg", images / "a.jpg", 0.5)
    yolo = YOLODetection(images, bad_images="skip")
    assert len(yolo) == 1 and yolo.report["image_bad"] == 1
    with pytest.raises(ValueError, match="bad_images must be 'error' or 'skip'"):
        YOLODetection(images, bad_images="ignore")


def test_image_size_disagreeing_with_json_raises(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5])])
    write_image(image_dir / "a.png", 30, 30)
    with pytest.raises(ValueError, match=r"a\.png: image is 30x30 .* annotations say 80x60"):
        COCODetection(image_dir, ann_file).load(0)


def test_empty_datasets_raise(tmp_path):
    image_dir, ann_file = write_coco(tmp_path, [], images=[])
    with pytest.raises(ValueError, match="no images"):
        COCODetection(image_dir, ann_file)
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5])])
    for f in image_dir.iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="no images"):
        COCODetection(image_dir, ann_file)  # every image missing: nothing left
    (tmp_path / "yolo").mkdir()
    with pytest.raises(ValueError, match="no images"):
        YOLODetection(tmp_path / "yolo")


def test_datasets_without_any_box_raise(tmp_path):
    """An empty 'annotations' list (typically the wrong file) trains on nothing: refused at construction."""
    image_dir, ann_file = write_coco(tmp_path, [])
    with pytest.raises(ValueError, match=r"instances.json: none of the 2 images has a box .*wrong annotation file"):
        COCODetection(image_dir, ann_file)
    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5], iscrowd=1)])
    with pytest.raises(ValueError, match="none of the 2 images has a box"):
        COCODetection(image_dir, ann_file)  # crowd boxes are skipped: nothing left
    images = write_yolo(tmp_path / "yolo", {"a": "", "b": ""})
    with pytest.raises(ValueError, match="none of the 2 images has a box"):
        YOLODetection(images)


def test_cache_images_gives_the_same_items(synthetic):
    plain = COCODetection(synthetic["train_images"], synthetic["train_ann"])
    cached = COCODetection(synthetic["train_images"], synthetic["train_ann"], cache_images=True)
    for i in (0, len(plain) - 1):
        for a, b in zip(plain[i], cached[i], strict=True):
            np.testing.assert_array_equal(a, b)


# -- YOLO ------------------------------------------------------------------------------------------
def test_yolo_format_loads_pixels_and_names(tmp_path):
    images_dir = write_yolo(tmp_path, {"x": "0 0.5 0.5 0.2 0.4\n1 0.05 0.1 0.2 0.2\n\n", "y": "", "z": None})
    ds = YOLODetection(images_dir)  # labels_dir and classes.txt found by convention
    assert ds.class_names == ["a", "b"] and len(ds) == 3 and ds.image_ids == [0, 1, 2]
    img, targets, image_id = ds.load(0)
    assert img.shape == (50, 100, 3) and image_id == 0
    # 100 x 50 image: (0.5, 0.5, 0.2, 0.4) -> x 40..60, y 15..35; the second box is clipped at 0.
    np.testing.assert_allclose(targets, [[40, 15, 60, 35, 0], [0, 0, 15, 10, 1]], atol=1e-4)
    assert ds.report["box_clipped"] == 1 and ds.report["label_file_missing"] == 1
    assert ds.report["image_no_boxes"] == 1 and "z.jpg" in str(ds.report)
    assert ds.load(2)[1].shape == (0, 5)
    coco = ds.coco  # for evaluation
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 2


def test_yolo_names_from_argument_or_inferred(tmp_path):
    images_dir = write_yolo(tmp_path, {"x": "2 0.5 0.5 0.2 0.2\n"}, names=None)
    assert YOLODetection(images_dir).class_names == ["0", "1", "2"]
    names_file = tmp_path / "my.names"
    names_file.write_text("p\nq\nr\n")
    assert YOLODetection(images_dir, class_names=names_file).class_names == ["p", "q", "r"]
    assert YOLODetection(images_dir, class_names=["u", "v", "w", "z"]).class_names == ["u", "v", "w", "z"]


@pytest.mark.parametrize(("text", "message"), [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", r"x\.txt:2: expected 5 values"),
    ("\n\n0 0.5 0.5 oops 0.2\n", r"x\.txt:3: values must be numbers"),
    ("5 0.5 0.5 0.2 0.2\n", r"x\.txt:1: class index 5 is not a valid class \(0\.\.1\)"),
    ("0.5 0.5 0.5 0.2 0.2\n", r"x\.txt:1: class index"),
    ("0 320 240 50 60\n", r"x\.txt:1: .*fractions"),
])
def test_yolo_malformed_lines_name_file_and_line(tmp_path, text, message):
    images_dir = write_yolo(tmp_path, {"x": text})
    with pytest.raises(ValueError, match=message):
        YOLODetection(images_dir)


def test_yolo_zero_size_box_skipped_and_missing_labels_dir_raises(tmp_path):
    images_dir = write_yolo(tmp_path, {"x": "0 0.5 0.5 0 0.2\n1 0.5 0.5 0.2 0.2\n"})
    ds = YOLODetection(images_dir)
    assert ds.report["box_zero_size"] == 1 and "x.txt:1" in str(ds.report)
    assert ds.num_targets(0) == 1
    with pytest.raises(ValueError, match="no label files found"):
        YOLODetection(images_dir, labels_dir=tmp_path / "nowhere")


# -- transforms ------------------------------------------------------------------------------------
def test_augment_hsv_matches_official_int16_arithmetic():
    from official_pipeline import augment_hsv_reference

    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for seed in range(6):
        ours = T.augment_hsv(img, np.random.default_rng(seed))
        # The official formula (tests/official_pipeline.py), with the same draws.
        np.testing.assert_array_equal(ours, augment_hsv_reference(img, np.random.default_rng(seed)))


def test_random_affine_identity_and_pure_scale():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    targets = np.array([[10, 20, 50, 60, 1], [90, 90, 150, 130, 0]], dtype=np.float32)
    img, out = T.random_affine(canvas, targets, rng, (100, 120), degrees=0.0, translate=0.0, scales=(1, 1), shear=0.0)
    np.testing.assert_array_equal(img, canvas[:100, :120])  # the top-left window of the canvas
    np.testing.assert_allclose(out, [[10, 20, 50, 60, 1], [90, 90, 120, 100, 0]])  # clipped to the window
    img, out = T.random_affine(canvas, targets, rng, (100, 100), degrees=0.0, translate=0.0, scales=(0.5, 0.5),
                               shear=0.0)
    np.testing.assert_allclose(out, [[5, 10, 25, 30, 1], [45, 45, 75, 65, 0]])


def test_mosaic_tiles_meet_at_the_centre():
    rng = np.random.default_rng(1)
    tiles = [(np.full((40, 60, 3), 10 * (k + 1), np.uint8), np.array([[0, 0, 60, 40, k]], np.float32))
             for k in range(4)]
    canvas, targets = T.mosaic(tiles, rng, (50, 60))
    assert canvas.shape == (100, 120, 3)
    x1, y1, x2, y2, _ = targets[0]
    xc, yc = int(x2), int(y2)  # tile 0 ends at the centre
    assert canvas[yc - 1, xc - 1, 0] == 10 and canvas[yc - 1, xc, 0] == 20
    assert canvas[yc, xc - 1, 0] == 30 and canvas[yc, xc, 0] == 40
    np.testing.assert_allclose(targets[3, :4], [xc, yc, min(xc + 60, 120), min(yc + 40, 100)])


def test_train_transform_filters_small_boxes_and_pads():
    rng = np.random.default_rng(0)
    img = np.zeros((100, 200, 3), np.uint8)
    targets = np.array([[10, 10, 50, 40, 2], [60, 60, 60.5, 90, 1]], np.float32)  # the second is 0.5 px wide
    canvas, labels = T.train_transform(img, targets, rng, (100, 100), hsv_prob=0, flip_prob=0, max_labels=4)
    assert canvas.shape == (100, 100, 3) and labels.shape == (4, 5)
    np.testing.assert_allclose(labels[0], [2, 15, 12.5, 20, 15])  # scale 0.5, then cx, cy, w, h
    assert not labels[1:].any()
    # All boxes too small: the official fallback to the unaugmented image; zero-size boxes are still dropped.
    tiny = np.array([[10, 10, 10.4, 11, 0], [5, 5, 5, 9, 1]], np.float32)  # 0.8 x 2 and 0 x 8 input pixels
    canvas, labels = T.train_transform(img, tiny, rng, (200, 400), hsv_prob=1, flip_prob=1, max_labels=4)
    np.testing.assert_allclose(labels[0], [0, 20.4, 21, 0.8, 2], rtol=1e-5)  # not flipped: the fallback
    assert not labels[1:].any()


# -- TrainAugmentDataset -----------------------------------------------------------------------------
@needs_coco128
def test_augmented_coco128_items_shapes_and_boxes_inside():
    ds = COCODetection(COCO128 / "train2017", COCO128 / "annotations" / "instances_train2017.json")
    aug = TrainAugmentDataset(ds, input_size=(256, 320), seed=0)
    counts = []
    for i in range(12):
        img, labels, image_id = aug[i]
        assert img.shape == (3, 256, 320) and img.dtype == torch.uint8
        assert 0 <= float(img.min()) and float(img.max()) <= 255
        assert image_id == ds.image_ids[i]
        counts.append(assert_labels_valid(labels, (256, 320), 80, 120))
    assert sum(counts) > 0


def test_augmented_synthetic_boxes_inside_many_settings(synthetic_train):
    settings = [dict(), dict(mosaic_scale=(0.5, 1.5), mixup_prob=0.0), dict(degrees=40.0, shear=10.0, translate=0.3),
                dict(mosaic=False)]
    for kwargs in settings:
        aug = TrainAugmentDataset(synthetic_train, input_size=(96, 128), seed=1, **kwargs)
        for i in range(len(aug)):
            img, labels, _ = aug[i]
            assert img.shape == (3, 96, 128)
            assert_labels_valid(labels, (96, 128), len(SHAPE_CLASSES), 120)


def test_max_labels_truncates(synthetic_train):
    aug = TrainAugmentDataset(synthetic_train, input_size=128, seed=0, max_labels=2, mosaic_scale=(0.5, 0.6))
    labels = torch.stack([aug[i][1] for i in range(4)])
    assert labels.shape == (4, 2, 5) and bool((labels.abs().sum(-1) > 0).all())


def test_close_mosaic_gives_plain_letterbox_and_keeps_flip(synthetic_train):
    kwargs = dict(input_size=(160, 96), seed=5, hsv_prob=0.0, flip_prob=0.0)
    aug = TrainAugmentDataset(synthetic_train, **kwargs)
    mosaic_items = [aug[i] for i in range(3)]
    aug.close_mosaic()
    for i in range(3):
        img, labels, _ = aug[i]
        raw, targets, _ = synthetic_train.load(i)
        expected, r = letterbox(raw, (160, 96))  # no mosaic, no affine, no mixup: the plain letterbox
        np.testing.assert_array_equal(img.numpy().transpose(1, 2, 0), expected)
        n = len(targets)
        np.testing.assert_allclose(labels[:n, 1:].numpy(), T.xyxy_to_cxcywh(targets[:, :4]) * r, rtol=1e-5)
        np.testing.assert_array_equal(labels[:n, 0].numpy(), targets[:, 4])
        assert not labels[n:].any()
        assert not torch.equal(img, mosaic_items[i][0])
    # Flip stays on after close_mosaic (as the official TrainTransform).
    flipped = TrainAugmentDataset(synthetic_train, **{**kwargs, "flip_prob": 1.0})
    flipped.close_mosaic()
    img, labels, _ = flipped[0]
    raw, _, _ = synthetic_train.load(0)
    np.testing.assert_array_equal(img.numpy().transpose(1, 2, 0), letterbox(cv2.flip(raw, 1), (160, 96))[0])


def test_seeded_items_are_reproducible_per_epoch(synthetic_train):
    a = TrainAugmentDataset(synthetic_train, input_size=128, seed=7)
    b = TrainAugmentDataset(synthetic_train, input_size=128, seed=7)
    for i in (0, 3):
        assert all(torch.equal(x, y) for x, y in zip(a[i][:2], b[i][:2], strict=True))
    first = a[0][0]
    a.set_epoch(1)
    assert not torch.equal(a[0][0], first)
    a.set_epoch(0)
    assert torch.equal(a[0][0], first)
    other_seed = TrainAugmentDataset(synthetic_train, input_size=128, seed=8)
    assert not torch.equal(other_seed[0][0], first)


def test_dataloader_workers_do_not_change_results_and_see_set_epoch(synthetic_train):
    aug = TrainAugmentDataset(synthetic_train, input_size=96, seed=11)

    def expected(epoch):
        aug.set_epoch(epoch)
        return collate([aug[i] for i in range(len(aug))])

    want0, want1 = expected(0), expected(1)
    aug.set_epoch(0)
    loader = torch.utils.data.DataLoader(aug, batch_size=len(aug), num_workers=2, collate_fn=collate,
                                         persistent_workers=True)
    got0 = next(iter(loader))
    aug.set_epoch(1)  # must reach the already running workers
    got1 = next(iter(loader))
    for want, got in ((want0, got0), (want1, got1)):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1]) and want[2] == got[2]


def test_input_size_is_settable(synthetic_train):
    aug = TrainAugmentDataset(synthetic_train, input_size=128, seed=0)
    aug.input_size = (64, 96)
    assert aug.input_size == (64, 96)
    img, labels, _ = aug[0]
    assert img.shape == (3, 64, 96)
    assert_labels_valid(labels, (64, 96), len(SHAPE_CLASSES), 120)


def test_collate(synthetic_train):
    aug = TrainAugmentDataset(synthetic_train, input_size=64, seed=0, max_labels=10)
    items = [aug[0], aug[1], aug[2]]
    images, labels, ids = collate(items)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    assert labels.shape == (3, 10, 5) and ids == [1, 2, 3]
    nchw, _, _ = collate(items, channels_last=False)
    assert nchw.is_contiguous() and torch.equal(nchw, images)
    assert torch.equal(images[1], items[1][0])


def _collate_reporting_shared_memory(batch):
    images, labels, ids = collate(batch)
    return images, labels, ids, images.is_shared()  # evaluated in the worker process


def test_collate_in_a_worker_makes_the_batch_in_shared_memory(synthetic_train):
    aug = TrainAugmentDataset(synthetic_train, input_size=64, seed=0)
    loader = torch.utils.data.DataLoader(aug, batch_size=4, num_workers=1, collate_fn=_collate_reporting_shared_memory)
    images, labels, ids, shared_in_worker = next(iter(loader))
    expected = collate([aug[i] for i in range(4)])
    assert shared_in_worker and not expected[0].is_shared()
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1]) and ids == expected[2]


def test_check_labels_names_the_row():
    labels = np.zeros((4, 5), dtype=np.float32)
    labels[0] = [1, 10, 10, 4, 4]
    check_labels(labels, 2, "item 0")  # padding rows pass
    labels[2] = [0, np.inf, 10, 4, 4]
    with pytest.raises(ValueError, match=r"item 0: label row 2 is not finite"):
        check_labels(labels, 2, "item 0")
    labels[2] = [2, 10, 10, 4, 4]
    with pytest.raises(ValueError, match=r"item 0: label row 2 has class id 2, outside \[0, 2\)"):
        check_labels(labels, 2, "item 0")


def test_augmented_items_check_their_labels(synthetic_train):
    """The data layer checks each item's labels (in the loader workers, on the CPU), so the training step's
    assigner runs without value checks: a class list shorter than the labels is caught here."""
    narrowed = copy.copy(synthetic_train)
    narrowed.class_names = synthetic_train.class_names[:1]
    aug = TrainAugmentDataset(narrowed, input_size=64, seed=0, mosaic=False)
    with_class_1 = next(i for i in range(len(narrowed)) if (narrowed.load_targets(i)[:, 4] >= 1).any())
    with pytest.raises(ValueError, match=rf"item {with_class_1} \(image id \d+\): label row \d+ has class id"):
        for _ in range(20):  # a box can be flipped/cropped away; some draw keeps it
            aug.set_epoch(aug.epoch + 1)
            aug[with_class_1]


def test_bad_augment_arguments_raise(synthetic_train):
    with pytest.raises(ValueError, match="mosaic_prob"):
        TrainAugmentDataset(synthetic_train, mosaic_prob=1.5)
    with pytest.raises(ValueError, match="mixup_scale"):
        TrainAugmentDataset(synthetic_train, mixup_scale=(0, 1))


# -- synthetic dataset -----------------------------------------------------------------------------
def test_synthetic_is_deterministic_reused_and_valid(tmp_path, synthetic):
    a = make_synthetic_dataset(tmp_path / "a", num_train=8, num_val=3, image_size=128, seed=3)
    files_a = sorted(p.relative_to(a["root"]) for p in Path(a["root"]).rglob("*") if p.is_file())
    assert len(files_a) == 8 + 3 + 3  # images, two jsons, manifest
    for rel in files_a:  # same seed, other folder: byte-identical
        assert (Path(a["root"]) / rel).read_bytes() == (Path(synthetic["root"]) / rel).read_bytes(), rel
    stamp = Path(a["train_ann"]).stat().st_mtime_ns
    assert make_synthetic_dataset(tmp_path / "a", num_train=8, num_val=3, image_size=128, seed=3) == a
    assert Path(a["train_ann"]).stat().st_mtime_ns == stamp  # reused, not rewritten
    other = make_synthetic_dataset(tmp_path / "a", num_train=8, num_val=3, image_size=128, seed=4)
    assert other["root"] != a["root"]
    assert Path(other["train_ann"]).read_bytes() != Path(a["train_ann"]).read_bytes()

    assert a["class_names"] == SHAPE_CLASSES
    for split, count in (("train", 8), ("val", 3)):
        ds = COCODetection(a[f"{split}_images"], a[f"{split}_ann"])
        assert len(ds) == count and ds.class_names == SHAPE_CLASSES and not ds.report
        for i in range(count):
            img, targets, _ = ds.load(i)
            assert img.shape == (128, 128, 3) and 1 <= len(targets) <= 4
            sides = np.minimum(targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1])
            assert np.all(sides >= 0.15 * 128)  # objects are not tiny


def test_synthetic_incomplete_folder_is_regenerated(tmp_path):
    paths = make_synthetic_dataset(tmp_path, num_train=2, num_val=1, image_size=64)
    Path(paths["val_ann"]).unlink()
    again = make_synthetic_dataset(tmp_path, num_train=2, num_val=1, image_size=64)
    assert Path(again["val_ann"]).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_coco_file_name_may_not_leave_the_image_folder(tmp_path):
    """Issue 18.5: a ``file_name`` of ``../../x.jpg`` in a json from elsewhere was read silently. Training data
    and evaluation refuse it, naming the file and the image id; a name inside the folder still works."""
    from yolox_fast.evaluation import COCOEvaluator

    image_dir, ann_file = write_coco(tmp_path, [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5])])
    write_image(tmp_path / "secret.png", 60, 80)
    for name in ("../secret.png", str(tmp_path / "secret.png"), "sub/../../secret.png"):
        data = json.loads(ann_file.read_text())
        data["images"][1]["file_name"] = name
        ann_file.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=r"image id 2: file_name .* leads outside the image folder"):
            COCODetection(image_dir, ann_file)
        with pytest.raises(ValueError, match=r"image id 2: file_name .* leads outside the image folder"):
            COCOEvaluator(image_dir, ann_file, img_size=64)
    data["images"][1]["file_name"] = str(image_dir / "b.png")  # absolute, but inside: fine
    ann_file.write_text(json.dumps(data))
    assert len(COCODetection(image_dir, ann_file)) == 2
