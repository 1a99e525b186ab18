"""The detection command line on the official weights and a demo photo."""

import subprocess
import sys

import cv2
import pytest
from conftest import SHARED_DATA as SHARED

WEIGHTS = SHARED / "weights" / "yolox_nano.pth"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"official weights absent: {WEIGHTS}")
def test_detect_cli_prints_and_saves(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "yolox_fast.detect", "--ckpt", str(WEIGHTS), str(SHARED / "images" / "dog.jpg"),
         "--conf", "0.3", "--nms", "0.3", "--class-agnostic", "--save-dir", str(tmp_path)],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].split(": ")[1].startswith("dog 0.85")
    assert lines[1].split(": ")[1].startswith("bicycle 0.80")
    saved = cv2.imread(str(tmp_path / "dog.jpg"))
    assert saved is not None and saved.shape == cv2.imread(str(SHARED / "images" / "dog.jpg")).shape


def test_detect_cli_missing_checkpoint(tmp_path):
    res = subprocess.run([sys.executable, "-m", "yolox_fast.detect", "--ckpt", str(tmp_path / "none.pth"), "x.jpg"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "checkpoint not found" in res.stderr
