"""yolox_fast.deploy.openvino_model and ``export --format openvino``: the IR's detections equal the ONNX model's,
its coco128 AP equals PyTorch's (float32) or stays within a point (INT8), Detector/predict/eval open it like
an ONNX file, and the export is atomic and refuses bad input (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_export import assert_same_detections

from yolox_fast.deploy.onnx_export import export_onnx
from yolox_fast.deploy.onnx_runtime import OnnxModel

pytest.importorskip("openvino", reason="OpenVINO is optional: pip install openvino")
from yolox_fast.deploy.openvino_model import IR_BIN, IR_XML, OpenVinoModel, export_openvino  # noqa: E402

FLOAT32_AP = 0.3328  # the official YOLOX-Nano on coco128 at 416


def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", f"yolox_fast.{module}", *map(str, args)], capture_output=True,
                          text=True, timeout=900)


def ap_of(proc) -> float:
    assert proc.returncode == 0, proc.stderr
    return float(next(x for x in proc.stdout.splitlines() if x.startswith("AP50:95")).split()[1])


@pytest.fixture(scope="module")
def demo_exports(nano_model, tmp_path_factory):
    """Demo settings (conf 0.05, NMS 0.5) at 416: the ONNX file and its IR."""
    folder = tmp_path_factory.mktemp("openvino")
    onnx_path = folder / "nano.onnx"
    export_onnx(nano_model, onnx_path, 416, conf=0.05, nms_thre=0.5, max_det=100, model_name="yolox-nano")
    export_openvino(onnx_path, folder / "nano_openvino")
    return onnx_path, folder / "nano_openvino"


def test_ir_detections_equal_onnx_runtime(demo_exports, demo_photos_416):
    onnx_path, ir = demo_exports
    assert sorted(p.name for p in ir.iterdir()) == [IR_BIN, IR_XML]
    ov_model, ort_model = OpenVinoModel(ir, threads=2), OnnxModel(onnx_path, device="cpu")
    assert ov_model.meta == {**ort_model.meta, "format": "openvino"} and ov_model.output_names == ort_model.output_names
    got, want = ov_model.detect(demo_photos_416.numpy()), ort_model.detect(demo_photos_416.numpy())
    assert want.counts.sum() > 10
    assert_same_detections((got.counts, got.boxes, got.scores, got.labels),
                           (want.counts, want.boxes, want.scores, want.labels), box_rtol=1e-4, score_tol=1e-4)
    assert "OpenVINO" in ov_model.describe()


def test_ir_through_detector_and_predict(demo_exports, shared_data, tmp_path):
    from yolox_fast import Detector

    onnx_path, ir = demo_exports
    for path in (ir, ir / IR_XML):  # the folder or its model.xml
        ov_results = Detector(path, device="cpu")(str(shared_data / "images" / "dog.jpg"))
        ort_results = Detector(onnx_path, device="cpu")(str(shared_data / "images" / "dog.jpg"))
        np.testing.assert_allclose(ov_results.xyxy, ort_results.xyxy, rtol=1e-4, atol=1e-3)
        np.testing.assert_array_equal(ov_results.class_ids, ort_results.class_ids)
    proc = run_cli("predict", shared_data / "images" / "dog.jpg", "--onnx", ir, "--project", tmp_path, "--name", "ov",
                   "--save-txt", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "OpenVINO" in proc.stdout and (tmp_path / "ov" / "dog.jpg").is_file()
    assert (tmp_path / "ov" / "labels" / "dog.txt").read_text().count("\n") == len(ort_results.scores)


def test_dynamic_ir_made_at_320_evaluates_at_416_with_pytorchs_ap(nano_weights, coco128, tmp_path):
    """One pass over coco128: the command line writes a --dynamic IR at 320, eval runs it at 416."""
    ir = tmp_path / "nano_dyn_openvino"
    proc = run_cli("export", "--weights", nano_weights, "--format", "openvino", "--dynamic", "--img-size", 320,
                   "--output", ir, "--conf", 0.01, "--iou", 0.65, "--max-det", 1000)
    assert proc.returncode == 0, proc.stderr
    assert "OpenVINO IR" in proc.stdout and "any multiple of 32" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [ir.name]  # no intermediate ONNX or staging folder left
    images, ann = coco128
    ap = ap_of(run_cli("eval", "--onnx", ir, "--images", images, "--ann", ann, "--img-size", 416, "--threads", 2))
    print(f"OpenVINO float32 AP50:95 on coco128 at 416: {ap:.4f}")
    assert abs(ap - FLOAT32_AP) <= 1e-3


def test_int8_ir_ap_within_one_point(nano_int8_onnx, coco128, tmp_path):
    from yolox_fast.evaluation import COCOEvaluator

    ir = tmp_path / "int8_openvino"
    meta = export_openvino(nano_int8_onnx, ir)
    assert meta["int8"]["quantizer"] == "nncf"
    images, ann = coco128
    ap = COCOEvaluator(images, ann, img_size=416, conf=0.01, nms=0.65).evaluate(OpenVinoModel(ir, threads=2))["AP"]
    print(f"INT8 (OpenVINO) AP50:95 on coco128 at 416: {ap:.4f}")
    assert FLOAT32_AP - 0.01 <= ap <= FLOAT32_AP + 0.01


def test_open_errors(demo_exports, tmp_path):
    import onnx

    onnx_path, ir = demo_exports
    with pytest.raises(FileNotFoundError, match="OpenVINO model not found"):
        OpenVinoModel(tmp_path / "none.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<net>not closed")
    with pytest.raises(ValueError, match="not an OpenVINO IR"):
        OpenVinoModel(bad)
    with pytest.raises(ValueError, match="run on the CPU"):
        OpenVinoModel(ir, device="cuda")
    bare = onnx.load(str(onnx_path))
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(ValueError, match="no 'yolox_fast' metadata"):
        export_openvino(tmp_path / "bare.onnx", tmp_path / "bare_openvino")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xml", "bare.onnx"]  # nothing half-written

    import openvino as ov  # an IR from elsewhere (no yolox_fast runtime info)
    ov.save_model(ov.convert_model(str(tmp_path / "bare.onnx")), tmp_path / "foreign" / IR_XML)
    with pytest.raises(ValueError, match="not exported by yolox_fast"):
        OpenVinoModel(tmp_path / "foreign")


def test_export_replaces_only_with_overwrite(demo_exports, tmp_path):
    onnx_path, _ = demo_exports
    target = tmp_path / "ir"
    target.mkdir()
    (target / "keep.txt").write_text("earlier")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        export_openvino(onnx_path, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    export_openvino(onnx_path, target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == [IR_BIN, IR_XML]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]  # the old folder and the staging one are gone
    with pytest.raises(ValueError, match="is a file"):
        export_openvino(onnx_path, target / IR_XML, overwrite=True)


def test_cli_openvino_bad_input_exits_2(nano_weights, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    a_file = tmp_path / "model.xml"
    a_file.write_text("x")
    for args, message in ((["--output", taken], "exists"), (["--output", a_file, "--overwrite"], "is a file"),
                          (["--output", tmp_path / "no" / "ir"], "does not exist")):
        proc = run_cli("export", "--weights", nano_weights, "--format", "openvino", "--img-size", 160, *args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.xml", "taken"]
