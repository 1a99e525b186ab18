"""The validation run folder (evaluation/report.py, per_class.py, confusion.py, plots.py) and ``eval --data``:
YOLO-format data in the ultralytics layout evaluates to the same AP as the same labels as a COCO json; the per-class
AP column is pycocotools' per-class AP; the confusion matrix's counts add up to the instances."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import cv2
import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="the COCO evaluation needs pycocotools")

from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402
from test_evaluation import one_torch_thread  # noqa: E402, F401  (autouse fixture: one torch thread)
from ultralytics_layout import coco_subset_as_ultralytics  # noqa: E402

from yolox_fast.eval import main as eval_main  # noqa: E402
from yolox_fast.evaluation.confusion import confusion_matrix  # noqa: E402
from yolox_fast.evaluation.per_class import per_class_metrics  # noqa: E402
from yolox_fast.evaluation.report import write_validation_report  # noqa: E402
from yolox_fast.files.run_dir import claim_run_dir  # noqa: E402


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pycocotools_per_class_ap(gt_json, detections) -> dict[str, float]:
    """Per-class AP50:95 straight from pycocotools: ``eval['precision'][:, :, k, area all, 100 dets]`` averaged over
    its entries > -1, for the classes with ground truth."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        coco_eval = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    out = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k]
        if (p > -1).any():
            out[gt.cats[cat_id]["name"]] = float(np.mean(p[p > -1]))
    return out


def test_eval_of_ultralytics_data_matches_the_coco_json_and_explains_itself(shared_data, nano_weights, coco128,
                                                                           tmp_path, monkeypatch, capsys):
    """Issue 17.1 and 17.2 on 16 coco128 images: ``eval --data data.yaml`` (names map, images/ and labels/ per
    split) gives the AP of the same labels as a COCO json, and both write a run folder runs/val/exp, exp2."""
    data_yaml, labels_json, image_dir = coco_subset_as_ultralytics(*coco128, tmp_path / "ds", 16)
    monkeypatch.chdir(tmp_path)
    common = ["--ckpt", str(nano_weights), "--img-size", "256", "--device", "cpu", "--threads", "1"]
    assert eval_main([*common, "--data", str(data_yaml), "--split", "val"]) == 0
    printed = capsys.readouterr().out
    assert "instances" in printed and "results saved to runs/val/exp:" in printed
    assert eval_main([*common, "--images", str(image_dir), "--ann", str(labels_json)]) == 0
    yolo, coco = tmp_path / "runs" / "val" / "exp", tmp_path / "runs" / "val" / "exp2"

    yolo_metrics = json.loads((yolo / "metrics.json").read_text())
    coco_metrics = json.loads((coco / "metrics.json").read_text())
    assert yolo_metrics["images"] == coco_metrics["images"] == 16
    for key in ("AP", "AP50", "AP75"):  # (APs/APm/APl differ: a YOLO box's area is w*h, COCO's the mask's)
        assert yolo_metrics[key] == pytest.approx(coco_metrics[key], abs=1e-9), key
    assert 0.3 < coco_metrics["AP"] < 0.7

    for run in (yolo, coco):
        rows = read_csv(run / "per_class.csv")
        assert rows[0]["class"] == "all"
        assert float(rows[0]["AP50-95"]) == pytest.approx(json.loads((run / "metrics.json").read_text())["AP"])
        # the per-class AP column is pycocotools' per-class AP
        gt_json = labels_json if run == coco else tmp_path / "yolo_gt.json"
        if run == yolo:  # the YOLO run's ground truth: the same boxes, category ids = class indices
            from yolox_fast.data.dataset_spec import read_data_yaml

            gt_json.write_text(json.dumps(read_data_yaml(data_yaml).dataset("val").to_coco_dict()))
        expected = pycocotools_per_class_ap(gt_json, json.loads((run / "predictions.json").read_text()))
        assert {r["class"]: float(r["AP50-95"]) for r in rows[1:]} == pytest.approx(expected, abs=1e-6)
        # the confusion matrix's true-class columns add up to the instances, class by class
        matrix = read_csv(run / "confusion_matrix.csv")
        instances = {r["class"]: int(r["instances"]) for r in rows[1:]}
        for name, count in instances.items():
            assert sum(int(m[name]) for m in matrix) == count, name
        assert sum(int(m[name]) for m in matrix for name in instances) == int(rows[0]["instances"])
        assert int(rows[0]["instances"]) == len(json.loads(labels_json.read_text())["annotations"])
        for png in ("PR_curve.png", "F1_curve.png", "confusion_matrix.png"):
            assert cv2.imread(str(run / png)) is not None, png
        examples = cv2.imread(str(run / "val_examples.jpg"))
        assert examples is not None and examples.shape[0] >= 4 * 320


def hand_made_ground_truth() -> COCO:
    """Two images; cats (id 3) and dogs (id 7): image 1 has a cat and a dog, image 2 a dog and a crowd region."""
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
                   {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 7, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 1},
        ],
    }
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


HAND_MADE_DETECTIONS = [
    {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},  # the cat: right
    {"image_id": 1, "category_id": 3, "bbox": [20, 20, 10, 10], "score": 0.8},  # the dog, called a cat
    {"image_id": 1, "category_id": 7, "bbox": [50, 50, 5, 5], "score": 0.6},  # a dog where there is nothing
    {"image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20], "score": 0.1},  # below the matrix's 0.25
]


def test_confusion_matrix_of_hand_made_boxes():
    matrix = confusion_matrix(hand_made_ground_truth(), HAND_MADE_DETECTIONS)
    # rows: predicted cat, dog, background (missed); columns: true cat, dog, background (false alarm)
    np.testing.assert_array_equal(matrix, [[1, 1, 0],
                                           [0, 0, 1],
                                           [0, 1, 0]])
    assert matrix[:, :2].sum() == 3  # the 3 non-crowd boxes; the crowd region is no instance


def test_per_class_metrics_of_hand_made_boxes():
    metrics = per_class_metrics(hand_made_ground_truth(), HAND_MADE_DETECTIONS)
    assert metrics.names == ["cat", "dog"]
    np.testing.assert_array_equal(metrics.images, [1, 2])
    np.testing.assert_array_equal(metrics.instances, [1, 2])
    np.testing.assert_allclose(metrics.ap, [1.0, 0.0])  # the cat is the top-scored cat detection; no dog is found
    np.testing.assert_allclose(metrics.ap50, [1.0, 0.0])
    assert 0.8 <= metrics.confidence <= 0.9  # only there does the cat class reach F1 = 1
    assert (metrics.precision[0], metrics.recall[0], metrics.recall[1]) == (1.0, 1.0, 0.0)
    rows = metrics.rows()
    assert [r["class"] for r in rows] == ["all", "cat", "dog"]
    assert rows[0]["AP50-95"] == pytest.approx(0.5) and rows[0]["instances"] == 3


def test_report_without_detections_and_run_folder_numbering(tmp_path):
    out = write_validation_report(tmp_path / "report", hand_made_ground_truth(), [], tmp_path, examples=0)
    assert out["stats"]["AP"] == 0.0 and out["confusion"][2, :2].tolist() == [1, 2]  # every box missed
    assert json.loads((tmp_path / "report" / "predictions.json").read_text()) == []
    names = [claim_run_dir(tmp_path / "runs", "val", "exp").name for _ in range(3)]
    assert names == ["exp", "exp2", "exp3"]


def test_no_save_writes_no_run_folder(shared_data, nano_weights, coco128, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image_dir, ann_file = coco128
    assert eval_main(["--ckpt", str(nano_weights), "--images", str(image_dir), "--ann", str(ann_file),
                      "--max-images", "2", "--img-size", "128", "--device", "cpu", "--no-save"]) == 0
    assert not (tmp_path / "runs").exists()


def test_data_and_coco_arguments_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        eval_main(["--ckpt", "x.pth", "--data", "d.yaml", "--ann", "a.json"])
    assert exc.value.code == 2 and "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        eval_main(["--ckpt", "x.pth", "--images", "i", "--ann", "a.json", "--split", "test"])
    assert exc.value.code == 2 and "--split chooses a split of --data" in capsys.readouterr().err
