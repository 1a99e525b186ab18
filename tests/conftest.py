"""Fixtures shared by the test files: the real test data folder and the official YOLOX-Nano model."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``../shared/data`` relative to the repository root (README of that folder lists its contents).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (expected at ../shared/data from the repo root)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco128(shared_data) -> tuple[Path, Path]:
    """``(image folder, annotation file)`` of coco128; skips the test when it is absent."""
    image_dir = shared_data / "coco128" / "train2017"
    ann_file = shared_data / "coco128" / "annotations" / "instances_train2017.json"
    if not (image_dir.is_dir() and ann_file.is_file()):
        pytest.skip(f"coco128 not found under {shared_data}")
    return image_dir, ann_file


#: The demo photos the deployment tests run on (``../shared/data/images/<name>.jpg``).
DEMO_PHOTOS = ("dog", "horses", "kite")


@pytest.fixture(scope="session")
def nano_weights(shared_data) -> Path:
    """Path of the official YOLOX-Nano checkpoint; skips the test when it is absent."""
    path = shared_data / "weights" / "yolox_nano.pth"
    if not path.is_file():
        pytest.skip(f"official YOLOX-Nano weights not found at {path}")
    return path


@pytest.fixture(scope="session")
def demo_photos_416(shared_data):
    """:data:`DEMO_PHOTOS` letterboxed to 416 as the model takes them: ``[3, 3, 416, 416]`` float32."""
    import torch

    from yolox_fast.data import preprocess, read_image

    return torch.stack([preprocess(read_image(shared_data / "images" / f"{n}.jpg"), 416)[0] for n in DEMO_PHOTOS])


@pytest.fixture(scope="session")
def nano_demo_predictions(nano_model, demo_photos_416):
    """The official YOLOX-Nano's decoded output on :func:`demo_photos_416`: ``[3, 3549, 85]``."""
    import torch

    with torch.no_grad():
        return nano_model(demo_photos_416)


@pytest.fixture(scope="session")
def nano_model(shared_data):
    """The official YOLOX-Nano (80 COCO classes, ``weights/yolox_nano.pth``) in eval mode on the CPU.

    Loaded once per session and shared: a test that changes its mode or weights must restore them.
    """
    from yolox_fast.models import build_yolox, load_official_weights

    weights = shared_data / "weights" / "yolox_nano.pth"
    if not weights.is_file():
        pytest.skip(f"official YOLOX-Nano weights not found at {weights}")
    model = build_yolox("yolox-nano", num_classes=80)
    load_official_weights(model, weights, strict=True)
    return model.eval()


# Exports shared by the deployment tests (tests/test_deploy_*.py): YOLOX-Nano at 416 with the official
# evaluation settings in the graph (conf 0.01, NMS 0.65, 1000 detections), written once per session.
EVAL_EXPORT = {"conf": 0.01, "nms_thre": 0.65, "max_det": 1000}
#: INT8 calibration: the first half of coco128 by file name (the AP is reported on all 128 images, the
#: protocol the issue allows for yolox-nano on coco128, and on the other half in docs/deployment.md).
CALIB_COUNT = 64


@pytest.fixture(scope="session")
def nano_eval_onnx(nano_model, tmp_path_factory):
    """YOLOX-Nano float32 ONNX at 416, NMS in the graph with the evaluation settings."""
    from yolox_fast.deploy.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("deploy") / "nano-eval.onnx"
    export_onnx(nano_model, path, 416, model_name="yolox-nano", **EVAL_EXPORT)
    return path


@pytest.fixture(scope="session")
def nano_int8_onnx(nano_weights, coco128, tmp_path_factory):
    """YOLOX-Nano INT8 ONNX at 416 (evaluation settings), made by the export command: NNCF calibrated on the
    first :data:`CALIB_COUNT` coco128 images."""
    import subprocess
    import sys

    pytest.importorskip("nncf", reason="INT8 export needs nncf (pip install nncf)")
    path = tmp_path_factory.mktemp("deploy") / "nano-int8.onnx"
    proc = subprocess.run([sys.executable, "-m", "yolox_fast.export", "--weights", str(nano_weights), "--output",
                           str(path), "--int8", "--calib-images", str(coco128[0]), "--calib-count",
                           str(CALIB_COUNT), "--conf", "0.01", "--iou", "0.65", "--max-det", "1000"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert f"INT8 calibrated on {CALIB_COUNT} images" in proc.stdout
    return path


@pytest.fixture(autouse=True)
def triton_launches_on_the_claimed_device():
    """Every Triton launch of a test runs on the device that the tests claim for Triton (op_testing.triton_device:
    the GPU, or the CPU under TRITON_INTERPRET=1), all of a launch's tensors on one device (kernels/_launch.py
    checks that): a test that hands a kernel tensors on another device fails here by name."""
    try:
        from yolox_fast.kernels import _launch
    except ImportError:  # no triton: nothing launches
        yield
        return
    from op_testing import LaunchRecorder, triton_device

    recorder = LaunchRecorder()
    _launch.launch_hooks.append(recorder)
    try:
        yield recorder
    finally:
        _launch.launch_hooks.remove(recorder)
    off = recorder.off_device(triton_device())
    assert not off, f"Triton launches off the test device {triton_device()}: {off}"
