"""Settings the commands share, through the real command lines (issue 17, items 6 and 10).

* A model trained at one size predicts, evaluates and exports at that size, with its class names, unless told
  otherwise (the checkpoint's config remembers them).
* One flag name per setting in every command: ``--weights`` for the checkpoint, ``--iou`` for the NMS IoU
  threshold, ``--nms`` in export for the in-graph NMS (as ultralytics); the old names still work.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINED_SIZE = 64  # no preset's size: 416 or 640 would show the old default
SYNTHETIC_NAMES = ["circle", "square", "triangle", "cross", "star"]


def command(name: str, *args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"yolox_fast.{name}", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A yolox-nano trained for one epoch at 64 px on the built-in synthetic set (5 classes) by the real trainer."""
    root = tmp_path_factory.mktemp("trained")
    out = root / "run"
    proc = command("train", "--synthetic-train", 8, "--synthetic-val", 4, "--synthetic-size", 64, "--img-size",
                   TRAINED_SIZE, "--batch-size", 4, "--workers", 0, "--epochs", 1, "--no-progress",
                   "--no-tensorboard", "--data-cache", root / "cache", "--output-dir", out, cwd=root)
    assert proc.returncode == 0, proc.stderr
    val_ann = next((root / "cache").rglob("instances_val.json"))
    return {"root": root, "ckpt": out / "latest.pt", "val_images": val_ann.parent.parent / "val", "val_ann": val_ann}


def test_predict_uses_the_trained_size_and_names(trained, shared_data):
    image = shared_data / "images" / "dog.jpg"
    proc = command("predict", image, "--weights", trained["ckpt"], "--project", trained["root"] / "p", "--no-save",
                   "--conf", 0.0, "--max-det", 5, "--save-txt", "--device", "cpu", cwd=trained["root"])
    assert proc.returncode == 0, proc.stderr
    assert f"input {TRAINED_SIZE}x{TRAINED_SIZE}" in proc.stdout and "5 classes" in proc.stdout
    # given explicitly, the user's size wins
    proc = command("predict", image, "--weights", trained["ckpt"], "--project", trained["root"] / "p", "--no-save",
                   "--img-size", 128, "--device", "cpu", cwd=trained["root"])
    assert proc.returncode == 0, proc.stderr
    assert "input 128x128" in proc.stdout


def test_eval_uses_the_trained_size(trained):
    # --ckpt: the old name of --weights, still accepted
    proc = command("eval", "--ckpt", trained["ckpt"], "--images", trained["val_images"], "--ann", trained["val_ann"],
                   "--device", "cpu", "--batch-size", 4, cwd=trained["root"])
    assert proc.returncode == 0, proc.stderr
    assert f"{TRAINED_SIZE}x{TRAINED_SIZE}, conf 0.01" in proc.stdout


def test_export_uses_the_trained_size_and_names(trained):
    import onnx

    out = trained["root"] / "model.onnx"
    proc = command("export", "--weights", trained["ckpt"], "--output", out, "--no-simplify", cwd=trained["root"])
    assert proc.returncode == 0, proc.stderr
    assert f"at {TRAINED_SIZE}x{TRAINED_SIZE}" in proc.stdout
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["yolox_fast"])
    assert meta["img_size"] == [TRAINED_SIZE, TRAINED_SIZE] and meta["class_names"] == SYNTHETIC_NAMES
    assert meta["num_classes"] == 5


def test_iou_threshold_has_one_name_in_every_command(tmp_path, nano_weights, shared_data):
    """``--iou`` is the NMS IoU threshold everywhere; predict's and eval's ``--nms`` and export's ``--nms-thre``
    still work as its old names; export's ``--nms`` keeps meaning the in-graph NMS."""
    image = shared_data / "images" / "dog.jpg"
    for flag in ("--iou", "--nms"):
        proc = command("predict", image, "--weights", nano_weights, "--project", tmp_path / "p", "--no-save",
                       flag, 0.3, "--device", "cpu", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "NMS 0.3" in proc.stdout
    for flag in ("--iou", "--nms-thre"):
        out = tmp_path / f"model{flag}.onnx"
        proc = command("export", "--weights", nano_weights, "--output", out, "--no-simplify", flag, 0.3, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "IoU 0.3" in proc.stdout
    proc = command("export", "--ckpt", nano_weights, "--output", tmp_path / "none.onnx", "--no-simplify", "--nms",
                   "none", cwd=tmp_path)
    assert proc.returncode == 0 and "decoded prediction" in proc.stdout, proc.stderr


@pytest.mark.parametrize("name", ["predict", "eval", "export", "train"])
def test_help_names_the_shared_settings_the_same(name):
    """Each command lists ``--iou`` (and the checkpoint as ``--weights``) first, the old name after it."""
    proc = command(name, "--help", cwd=REPO)
    assert proc.returncode == 0
    text = re.sub(r"\s+", " ", proc.stdout)
    assert re.search(r"--iou IOU, --(nms|nms-thre) IOU", text)
    if name != "train":  # train's --weights starts training from a checkpoint; it has no --ckpt
        assert "--weights WEIGHTS, --ckpt WEIGHTS" in text
