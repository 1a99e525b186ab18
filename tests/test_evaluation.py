"""COCO evaluation: fidelity to the official YOLOX-Nano numbers on coco128, the CLI, and error handling."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

# The evaluation is pycocotools itself: without it (as on the GPU image) these tests skip, and collecting the
# rest of the suite (e.g. `pytest -m gpu tests`) still works.
pytest.importorskip("pycocotools", reason="the COCO evaluation needs pycocotools")

from yolox_fast import evaluate_coco  # noqa: E402
from yolox_fast.eval import main as eval_main  # noqa: E402
from yolox_fast.evaluation import COCOEvaluator  # noqa: E402
from yolox_fast.models import build_yolox  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run these tests on one CPU thread: on a busy shared 2-core machine, two OpenMP threads made the
    YOLOX-Nano forward 5-30x slower (barrier waits on a descheduled thread); one thread is never far off."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _subset(coco128, tmp_path: Path, n: int) -> tuple[Path, Path, list[dict]]:
    """The first ``n`` coco128 images copied into ``tmp_path/images`` with their annotations in a new json."""
    image_dir, ann_file = coco128
    data = json.loads(ann_file.read_text())
    images = data["images"][:n]
    ids = {img["id"] for img in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    out_dir = tmp_path / "images"
    out_dir.mkdir()
    for img in images:
        shutil.copy(image_dir / img["file_name"], out_dir / img["file_name"])
    out_ann = tmp_path / "subset.json"
    out_ann.write_text(json.dumps(data))
    return out_dir, out_ann, images


def test_coco128_matches_official_nano(nano_model, coco128):
    """The released YOLOX-Nano on coco128 at 416, conf 0.01, class-aware NMS 0.65 (docs/design.md and the shared data's README)."""
    image_dir, ann_file = coco128
    stats = evaluate_coco(nano_model, image_dir, ann_file, img_size=416, conf=0.01, nms=0.65, batch_size=8)
    assert stats["AP"] == pytest.approx(0.3328, abs=0.002)
    assert stats["AP50"] == pytest.approx(0.5115, abs=0.002)
    for key in ("AP75", "APs", "APm", "APl"):
        assert 0.0 <= stats[key] <= 1.0
    assert stats["num_images"] == 128
    assert stats["num_detections"] > 0
    per_class = stats["per_class"]
    assert len(per_class) == 80 and "person" in per_class and "toothbrush" in per_class
    # The per-class APs average (over classes with ground truth) to the overall AP, as in COCOeval.
    present = [v for v in per_class.values() if not math.isnan(v)]
    assert sum(present) / len(present) == pytest.approx(stats["AP"], abs=1e-6)
    assert "person" in stats["table"] and "AP50" in stats["table"]
    assert "Average Precision" in stats["summary"]


def test_cli_end_to_end(shared_data, coco128, tmp_path):
    """``python -m yolox_fast.eval`` on 4 images: exit 0, the table and the numbers, no pycocotools chatter."""
    image_dir, ann_file = coco128
    cmd = [sys.executable, "-m", "yolox_fast.eval", "--ckpt", str(shared_data / "weights" / "yolox_nano.pth"),
           "--model", "yolox-nano", "--images", str(image_dir), "--ann", str(ann_file), "--max-images", "4",
           "--batch-size", "2", "--device", "cpu", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the per-class table lists the classes of these 4 images (a giraffe is in the second)
    assert "AP50:95" in proc.stdout and "4 images" in proc.stdout and "giraffe" in proc.stdout
    assert "model: 0.91 M parameters" in proc.stdout and "GFLOPs at 416x416" in proc.stdout
    assert "index created" not in proc.stdout  # pycocotools' progress lines stay hidden by default


def test_cli_requires_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        eval_main([])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "--images" in err and "--ann" in err and "example" in err


def test_cli_reports_missing_annotation_file(shared_data, coco128, tmp_path, capsys):
    missing = tmp_path / "nope.json"
    rc = eval_main(["--ckpt", str(shared_data / "weights" / "yolox_nano.pth"), "--images", str(coco128[0]),
                    "--ann", str(missing), "--device", "cpu"])
    assert rc == 2  # bad input (yolox_fast.cli policy)
    assert str(missing) in capsys.readouterr().err


def test_cli_reports_wrong_model_size(shared_data, coco128, capsys):
    image_dir, ann_file = coco128
    rc = eval_main(["--ckpt", str(shared_data / "weights" / "yolox_nano.pth"), "--model", "yolox-s",
                    "--images", str(image_dir), "--ann", str(ann_file), "--device", "cpu"])
    assert rc == 2  # bad input (yolox_fast.cli policy)
    assert "holds yolox-nano weights, not yolox-s" in capsys.readouterr().err


def test_missing_annotation_file(nano_model, coco128, tmp_path):
    missing = tmp_path / "instances_missing.json"
    with pytest.raises(FileNotFoundError, match="instances_missing.json"):
        evaluate_coco(nano_model, coco128[0], missing)


@pytest.mark.parametrize("content, problem", [("{not json", "invalid JSON"), ("[1, 2]", "top level is a list"),
                                              ('{"images": []}', "no 'annotations'")])
def test_annotation_file_that_is_not_coco(nano_model, coco128, tmp_path, content, problem):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ValueError, match=problem) as exc:
        evaluate_coco(nano_model, coco128[0], bad)
    assert "bad.json" in str(exc.value)


def test_missing_image_file(nano_model, coco128, tmp_path):
    image_dir, ann_file, images = _subset(coco128, tmp_path, 2)
    (image_dir / images[1]["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match=images[1]["file_name"]):
        evaluate_coco(nano_model, image_dir, ann_file)


@pytest.mark.parametrize("keep", ["none", "crowd"])
def test_split_without_ground_truth_boxes_is_refused(nano_model, coco128, tmp_path, keep):
    """An empty (or crowd-only) 'annotations' list, typically the wrong file, scores AP -1 in COCOeval: refused
    when the evaluator is built (at training start-up), and by evaluate_coco, naming the file."""
    image_dir, ann_file, _ = _subset(coco128, tmp_path, 2)
    data = json.loads(ann_file.read_text())
    data["annotations"] = [dict(a, iscrowd=1) for a in data["annotations"]] if keep == "crowd" else []
    ann_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"subset.json has no ground-truth boxes on its 2 evaluated images"):
        COCOEvaluator(image_dir, ann_file)
    with pytest.raises(ValueError, match="has no ground-truth boxes"):
        evaluate_coco(nano_model, image_dir, ann_file)


def test_cli_says_there_are_no_ground_truth_boxes(shared_data, coco128, tmp_path, capsys):
    image_dir, ann_file, _ = _subset(coco128, tmp_path, 2)
    ann_file.write_text(json.dumps(dict(json.loads(ann_file.read_text()), annotations=[])))
    rc = eval_main(["--ckpt", str(shared_data / "weights" / "yolox_nano.pth"), "--images", str(image_dir),
                    "--ann", str(ann_file), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc != 0 and "AP50:95" not in captured.out
    assert f"{ann_file} has no ground-truth boxes" in captured.err


@pytest.mark.parametrize("prefetch", [False, True])
def test_corrupt_image_is_named_and_mode_restored(nano_model, coco128, tmp_path, prefetch):
    image_dir, ann_file, images = _subset(coco128, tmp_path, 3)
    (image_dir / images[2]["file_name"]).write_bytes(b"this is not a JPEG")
    nano_model.train()
    try:
        with pytest.raises(ValueError, match=images[2]["file_name"]):
            evaluate_coco(nano_model, image_dir, ann_file, batch_size=2, prefetch=prefetch)
        assert nano_model.training  # restored although evaluation failed
    finally:
        nano_model.eval()


def test_class_count_mismatch(coco128):
    model = build_yolox("yolox-nano", num_classes=3)
    with pytest.raises(ValueError, match="3 classes.*80 categories"):
        evaluate_coco(model, *coco128)


def test_no_detections_scores_zero(nano_model, coco128):
    evaluator = COCOEvaluator(*coco128, conf=1.1, image_ids=[9, 25, 30, 34])  # no score reaches 1.1
    stats = evaluator.evaluate(nano_model)
    assert stats["num_detections"] == 0 and stats["num_images"] == 4
    assert stats["AP"] == 0.0 and stats["AP50"] == 0.0
    assert all(v == 0.0 or math.isnan(v) for v in stats["per_class"].values())


def test_restores_every_module_mode(nano_model, coco128):
    """Train/eval flags come back module by module (e.g. a frozen-BN backbone inside a training model)."""
    nano_model.train()
    nano_model.backbone.backbone.eval()
    before = [m.training for m in nano_model.modules()]
    try:
        stats = evaluate_coco(nano_model, *coco128, image_ids=[9, 25], batch_size=2)
        assert stats["num_images"] == 2 and stats["num_detections"] > 0
        assert [m.training for m in nano_model.modules()] == before
    finally:
        nano_model.eval()


def test_boxes_in_annotation_frame_when_files_are_resized(nano_model, coco128, tmp_path):
    """Image files smaller than the size recorded in the json: detections still land on the ground truth."""
    image_dir, ann_file, images = _subset(coco128, tmp_path, 4)
    for img in images:
        path = str(image_dir / img["file_name"])
        full = cv2.imread(path)
        cv2.imwrite(path, cv2.resize(full, (full.shape[1] // 2, full.shape[0] // 2)))
    stats = evaluate_coco(nano_model, image_dir, ann_file)
    assert stats["AP50"] > 0.7  # 0.95 at full size; boxes left in the half-size frame would score ~0
