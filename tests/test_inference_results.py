"""Detections (yolox_fast.inference.results): box formats, a sequence of detections, records, saving, COCO rows."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from yolox_fast import Detector
from yolox_fast.data.coco_classes import COCO_CLASSES
from yolox_fast.inference import Detections


def made_up(image=None) -> Detections:
    """Three detections on a 200 x 100 (h x w) image."""
    xyxy = np.array([[10, 20, 50, 80], [0, 0, 100, 200], [30, 40, 40, 60]], np.float32)
    return Detections(xyxy, np.array([0.9, 0.6, 0.3], np.float32), np.array([16, 0, 2]), COCO_CLASSES,
                      image=image, source="x.jpg", orig_shape=(200, 100))


def test_box_formats():
    r = made_up()
    np.testing.assert_allclose(r.xywh[0], [30, 50, 40, 60])
    np.testing.assert_allclose(r.xyxyn[1], [0, 0, 1, 1])
    np.testing.assert_allclose(r.xyxyn[0], [0.1, 0.1, 0.5, 0.4])
    np.testing.assert_allclose(r.xywhn[0], [0.3, 0.25, 0.4, 0.3])
    assert r.xywh.dtype == np.float32 and r.xywhn.shape == (3, 4)
    assert Detections(r.xyxy, r.scores, r.class_ids, COCO_CLASSES, image=np.zeros((7, 9, 3), np.uint8)).orig_shape \
        == (7, 9)
    with pytest.raises(ValueError, match="orig_shape"):
        _ = Detections(r.xyxy, r.scores, r.class_ids, COCO_CLASSES).xyxyn


def test_a_sequence_of_detections():
    r = made_up()
    assert len(r) == 3
    items = list(r)
    assert [len(d) for d in items] == [1, 1, 1] and [d.names[0] for d in items] == ["dog", "person", "car"]
    assert r[1].names == ["person"] and r[-1].scores.tolist() == pytest.approx([0.3])
    confident = r[r.scores > 0.5]
    assert confident.names == ["dog", "person"] and confident.orig_shape == (200, 100) and confident.source == "x.jpg"
    assert r[1:].class_ids.tolist() == [0, 2] and r[[2, 0]].class_ids.tolist() == [2, 16]
    assert len(r[r.scores > 2]) == 0 and r[r.scores > 2].summary() == "no detections"
    with pytest.raises(IndexError, match="out of range"):
        r[3]
    with pytest.raises(IndexError, match="boolean mask"):
        r[np.array([True, False])]


def test_records_and_dict():
    r = made_up()
    rows = r.records()
    assert rows[0] == {"box": [10.0, 20.0, 50.0, 80.0], "score": 0.9, "class_id": 16, "class_name": "dog",
                       "box_normalised": [0.1, 0.1, 0.5, 0.4]}
    r.speed = {"preprocess": 1.0, "inference": 2.5, "postprocess": 0.25}
    d = r.to_dict()
    assert d["orig_shape"] == [200, 100] and d["speed"]["inference"] == 2.5 and d["detections"] == rows
    assert json.loads(json.dumps(d)) == d and json.loads(r.to_json()) == rows


def test_coco_rows():
    r = made_up()
    rows = r.to_coco(7)
    assert rows[0]["image_id"] == 7 and rows[0]["category_id"] == 18  # dog: COCO category 18
    assert rows[0]["bbox"] == [10.0, 20.0, 40.0, 60.0]
    assert r.to_coco(7, category_ids=list(range(100, 180)))[0]["category_id"] == 116
    assert r.to_coco(7, decimals=1)[2]["score"] == 0.3


def test_yolo_lines_need_only_the_size():
    lines = made_up().to_yolo_lines(with_score=True)
    assert lines[0] == "16 0.300000 0.250000 0.400000 0.300000 0.90000"


def test_save_writes_the_drawing_once(tmp_path):
    image = np.full((200, 100, 3), 80, np.uint8)
    r = made_up(image)
    path = r.save(tmp_path / "out.png")
    np.testing.assert_array_equal(cv2.imread(path), r.plot())
    assert not np.array_equal(cv2.imread(path), image)
    with pytest.raises(FileExistsError, match="not overwritten"):
        r.save(tmp_path / "out.png")
    plain = r.save(tmp_path / "plain.png", labels=False, line_width=1)
    assert (cv2.imread(plain) != image).any(axis=2).sum() < (cv2.imread(path) != image).any(axis=2).sum()


def test_crops():
    image = np.arange(200 * 100 * 3, dtype=np.uint32).reshape(200, 100, 3).astype(np.uint8)
    crops = made_up(image).crops()
    assert [c.shape for c in crops] == [(60, 40, 3), (200, 100, 3), (20, 10, 3)]
    np.testing.assert_array_equal(crops[0], image[20:80, 10:50])


def test_detector_results_carry_shape_and_speed(nano_weights, shared_data):
    detector = Detector(nano_weights, img_size=320, device="cpu", batch_size=2)
    path = shared_data / "images" / "dog.jpg"
    image = cv2.imread(str(path))
    r = detector(str(path))
    assert r.orig_shape == image.shape[:2]
    assert set(r.speed) == {"preprocess", "inference", "postprocess"} and all(v > 0 for v in r.speed.values())
    assert r.speed["inference"] > r.speed["postprocess"]
    assert (r.xyxyn >= -0.01).all() and (r.xyxyn <= 1.01).all()
    # results made without keeping the image still know its size
    bare = detector.detect([image], keep_images=False)[0]
    assert bare.image is None and bare.orig_shape == image.shape[:2] and bare.to_yolo_lines()
