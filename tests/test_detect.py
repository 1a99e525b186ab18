"""``python -m yolox_fast.detect``, the old name of predict, on the official weights and a demo photo."""

import json
import subprocess
import sys

import cv2
import pytest
from conftest import SHARED_DATA as SHARED

WEIGHTS = SHARED / "weights" / "yolox_nano.pth"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"official weights absent: {WEIGHTS}")
def test_detect_alias_prints_and_saves(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "yolox_fast.detect", "--ckpt", str(WEIGHTS), str(SHARED / "images" / "dog.jpg"),
         "--conf", "0.3", "--nms", "0.3", "--class-agnostic", "--project", str(tmp_path), "--save-json"],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith(str(SHARED / "images" / "dog.jpg")))
    assert "1 dog" in line and "1 bicycle" in line
    results = json.loads((tmp_path / "exp" / "predictions.json").read_text())
    best = sorted(results, key=lambda r: -r["score"])[:2]
    assert [r["category_id"] for r in best] == [18, 2]  # COCO ids of dog and bicycle
    assert f"{best[0]['score']:.3f}".startswith("0.85") and f"{best[1]['score']:.3f}".startswith("0.80")
    saved = cv2.imread(str(tmp_path / "exp" / "dog.jpg"))
    assert saved is not None and saved.shape == cv2.imread(str(SHARED / "images" / "dog.jpg")).shape


def test_detect_alias_missing_checkpoint(tmp_path):
    res = subprocess.run([sys.executable, "-m", "yolox_fast.detect", "--ckpt", str(tmp_path / "none.pth"),
                          str(SHARED / "images" / "dog.jpg"), "--project", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "checkpoint not found" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "exp").exists()
