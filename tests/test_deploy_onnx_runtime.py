"""yolox_fast.deploy.onnx_runtime (ONNX Runtime) against the PyTorch path, and `python -m yolox_fast.eval --onnx`:
the coco128 AP of the exported model equals the PyTorch model's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from test_export import SIZE, assert_same_detections, reference_outputs

from yolox_fast.deploy.onnx_export import export_onnx
from yolox_fast.deploy.onnx_runtime import OnnxModel


@pytest.fixture(scope="module")
def exported(nano_model, tmp_path_factory):
    """One file per graph form: NMS in the graph (conf 0.05), decoded prediction, official raw output."""
    folder = tmp_path_factory.mktemp("runtime")
    paths = {"nms": folder / "nms.onnx", "pred": folder / "pred.onnx", "raw": folder / "raw.onnx"}
    export_onnx(nano_model, paths["nms"], SIZE, conf=0.05, nms_thre=0.5, max_det=100)
    export_onnx(nano_model, paths["pred"], SIZE, nms="none")
    export_onnx(nano_model, paths["raw"], SIZE, nms="none", decode=False)
    return paths


@pytest.mark.parametrize("form", ["nms", "pred", "raw"])
def test_runtime_detections_equal_pytorch(exported, form, demo_photos_416, nano_demo_predictions):
    model = OnnxModel(exported[form], device="cpu")
    assert model.has_nms == (form == "nms") and model.img_size == (SIZE, SIZE) and model.class_names[0] == "0"
    found = model.detect(demo_photos_416.numpy(), conf=0.05, nms=0.5, max_det=100)
    want = reference_outputs(nano_demo_predictions, 80, 0.05, 0.5, 100)
    assert_same_detections((found.counts, found.boxes, found.scores, found.labels), want, box_rtol=1e-4,
                           score_tol=1e-5)


def test_higher_conf_filters_the_nms_graph_exactly(exported, demo_photos_416):
    model = OnnxModel(exported["nms"])
    low = model.detect(demo_photos_416.numpy())
    high = model.detect(demo_photos_416.numpy(), conf=0.4)
    for b in range(len(demo_photos_416)):
        keep = low.scores[b, : low.counts[b]] >= 0.4
        n = int(high.counts[b])
        assert 0 < n == keep.sum() < low.counts[b]
        np.testing.assert_array_equal(high.boxes[b, :n], low.boxes[b, : low.counts[b]][keep])
        assert not high.scores[b, n:].any()


def test_baked_settings_are_enforced(exported):
    model = OnnxModel(exported["nms"])
    with pytest.raises(ValueError, match="cannot detect below it"):
        model.check_settings(0.01, 0.5)
    with pytest.raises(ValueError, match="--iou 0.5"):
        model.check_settings(0.05, 0.65)
    with pytest.raises(ValueError, match="class-aware NMS"):
        model.check_settings(0.05, 0.5, class_agnostic=True)
    model.check_settings(0.3, 0.5, False)


def test_static_batch_runs_in_chunks(nano_model, demo_photos_416, nano_demo_predictions, tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx(nano_model, path, SIZE, static=True, batch_size=2, conf=0.05, nms_thre=0.5)
    found = OnnxModel(path).detect(demo_photos_416.numpy())  # 3 images: chunks of 2, the last one padded
    want = reference_outputs(nano_demo_predictions, 80, 0.05, 0.5, 100)
    assert_same_detections((found.counts, found.boxes, found.scores, found.labels), want, 1e-4, 1e-5)


def test_runtime_errors(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OnnxModel(tmp_path / "none.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        OnnxModel(tmp_path)
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="is not an ONNX model"):
        OnnxModel(text)
    bare = onnx.load(str(exported["pred"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="not exported by yolox_fast.export"):
        OnnxModel(tmp_path / "bare.onnx")
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 416, 416\]"):
        OnnxModel(exported["pred"]).run(np.zeros((1, 3, 320, 320), np.float32))


# ------------------------------------------------------------------------------------------------
# COCO AP through ONNX Runtime equals PyTorch's (official evaluation settings)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_coco128_ap_of_onnx_equals_pytorch(nano_model, shared_data, tmp_path):
    from yolox_fast.evaluation import COCOEvaluator

    images, ann = shared_data / "coco128" / "train2017", shared_data / "coco128" / "annotations" / \
        "instances_train2017.json"
    if not ann.is_file():
        pytest.skip(f"coco128 absent: {ann}")
    evaluator = COCOEvaluator(images, ann, img_size=SIZE, conf=0.01, nms=0.65, batch_size=8)
    torch_ap = evaluator.evaluate(nano_model, "cpu")["AP"]
    assert abs(torch_ap - 0.3328) < 5e-4  # the official YOLOX-Nano on coco128 at 416
    nms_path, pred_path = tmp_path / "nms.onnx", tmp_path / "pred.onnx"
    export_onnx(nano_model, nms_path, SIZE, conf=0.01, nms_thre=0.65, max_det=1000)
    export_onnx(nano_model, pred_path, SIZE, nms="none")
    for path in (nms_path, pred_path):
        onnx_ap = evaluator.evaluate(OnnxModel(path, device="cpu"))["AP"]
        assert abs(onnx_ap - torch_ap) <= 1e-3, (path.name, onnx_ap, torch_ap)

    # the command line gives the same figure (its run folder runs/val/exp goes into tmp_path)
    proc = subprocess.run([sys.executable, "-m", "yolox_fast.eval", "--onnx", str(nms_path), "--images", str(images),
                           "--ann", str(ann)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("AP50:95"))
    assert abs(float(line.split()[1]) - torch_ap) <= 1e-3
    # a threshold the graph cannot give is bad usage
    proc = subprocess.run([sys.executable, "-m", "yolox_fast.eval", "--onnx", str(nms_path), "--images", str(images),
                           "--ann", str(ann), "--nms", "0.5"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "export again" in proc.stderr and "Traceback" not in proc.stderr
