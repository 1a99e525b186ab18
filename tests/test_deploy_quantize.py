"""yolox_fast.deploy.quantize and ``export --int8``: NNCF static quantization calibrated on real images, the
decode and NMS kept float32, the coco128 AP within a point of float32, bad input refused (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import onnx
import pytest
from conftest import CALIB_COUNT

from yolox_fast.deploy.onnx_export import export_onnx
from yolox_fast.deploy.quantize import FLOAT_REGIONS, calibration_images, float_nodes

pytest.importorskip("nncf", reason="INT8 export needs nncf (pip install nncf)")
FLOAT32_AP = 0.3328  # the official YOLOX-Nano on coco128 at 416 (float32 PyTorch, ONNX Runtime and OpenVINO)


@pytest.fixture(scope="module")
def nano_network(nano_model, tmp_path_factory):
    """The float32 network graph (images -> decoded prediction), what quantize_network receives."""
    path = tmp_path_factory.mktemp("quantize") / "pred.onnx"
    export_onnx(nano_model, path, 320, nms="none")
    return onnx.load(str(path))


def test_float_nodes_are_the_decode_and_the_chosen_regions(nano_network):
    by_name = {n.name: n for n in nano_network.graph.node}
    decode_only = float_nodes(nano_network, ())
    kinds = Counter(by_name[n].op_type for n in decode_only)
    assert kinds["Exp"] == 1 and kinds["Sigmoid"] == 1 and "Conv" not in kinds  # box sizes, scores; no conv
    assert by_name[decode_only[-1]].output[0] == "prediction"  # down to the graph output
    heads = [n for n in float_nodes(nano_network, ("head-preds",)) if by_name[n].op_type == "Conv"]
    assert len(heads) == 9 and all(any(k in n for k in FLOAT_REGIONS["head-preds"]) for n in heads)
    stem = [n for n in float_nodes(nano_network, ("stem",)) if by_name[n].op_type == "Conv"]
    assert len(stem) == 1 and "/stem/" in stem[0]
    with pytest.raises(ValueError, match="unknown float32 region 'neck'"):
        float_nodes(nano_network, ("neck",))


def test_calibration_images_are_checked(tmp_path, shared_data):
    with pytest.raises(FileNotFoundError, match="calibration folder not found"):
        calibration_images(tmp_path / "none")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        calibration_images(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        calibration_images(tmp_path / "notes.txt")
    photos = calibration_images(shared_data / "images", 2)
    assert [p.name for p in photos] == sorted(p.name for p in (shared_data / "images").glob("*.jpg"))[:2]


def test_int8_graph_quantizes_the_network_and_keeps_the_postprocess_float(nano_int8_onnx):
    import json

    model = onnx.load(str(nano_int8_onnx))
    kinds = Counter(n.op_type for n in model.graph.node)
    assert kinds["QuantizeLinear"] > 50 and kinds["DequantizeLinear"] > 50 and kinds["NonMaxSuppression"] == 1
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) > 50  # the convolutions' weights are stored as int8
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "Conv" and any(k in node.name for k in ("/stem/conv/", "_preds")):
            assert produced_by[node.input[1]].op_type != "DequantizeLinear" if node.input[1] in produced_by else True
            assert node.input[0] not in produced_by or produced_by[node.input[0]].op_type != "DequantizeLinear"
        if node.name.startswith("pp/"):  # the postprocess reads float32 tensors, never quantized ones
            assert node.op_type not in ("QuantizeLinear", "DequantizeLinear")
    meta = json.loads({p.key: p.value for p in model.metadata_props}["yolox_fast"])
    assert meta["int8"] == {"quantizer": "nncf", "calib_images": CALIB_COUNT, "float_regions": ["stem", "head-preds"]}


def test_int8_ap_on_coco128_within_one_point_of_float32(nano_int8_onnx, coco128):
    images, ann = coco128
    proc = subprocess.run([sys.executable, "-m", "yolox_fast.eval", "--onnx", str(nano_int8_onnx), "--images",
                           str(images), "--ann", str(ann), "--threads", "2"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr
    ap = float(next(x for x in proc.stdout.splitlines() if x.startswith("AP50:95")).split()[1])
    print(f"INT8 (ONNX Runtime) AP50:95 on coco128 at 416: {ap:.4f} (float32 {FLOAT32_AP})")
    assert FLOAT32_AP - 0.01 <= ap <= FLOAT32_AP + 0.01


def run_export(*args):
    return subprocess.run([sys.executable, "-m", "yolox_fast.export", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("extra, message", [
    (["--int8"], "--int8 needs --calib-images"),
    (["--calib-images", "{images}"], "--calib-images is for --int8"),
    (["--float-layers", "stem"], "--float-layers is for --int8"),
    (["--int8", "--calib-images", "{missing}"], "calibration folder not found"),
    (["--int8", "--calib-images", "{empty}"], "no images"),
    (["--int8", "--calib-images", "{images}", "--half"], "exclude each other"),
    (["--int8", "--calib-images", "{images}", "--calib-count", "0"], "--calib-count must be >= 1"),
    (["--int8", "--calib-images", "{images}", "--float-layers", "neck"], "--float-layers neck: unknown region"),
])
def test_cli_int8_bad_input_exits_2(nano_weights, shared_data, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    places = {"images": shared_data / "images", "missing": tmp_path / "none", "empty": tmp_path / "empty"}
    proc = run_export("--weights", nano_weights, "--output", tmp_path / "m.onnx",
                      *[a.format(**places) for a in extra])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_cli_bad_calibration_image_leaves_the_earlier_file_whole(nano_weights, shared_data, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "a.jpg").symlink_to(shared_data / "images" / "dog.jpg")
    (calib / "b.jpg").write_bytes(b"not a jpeg")
    earlier = tmp_path / "m.onnx"
    earlier.write_bytes(b"an earlier export")
    proc = run_export("--weights", nano_weights, "--output", earlier, "--overwrite", "--int8", "--calib-images", calib,
                      "--img-size", "160")
    assert proc.returncode == 2 and "b.jpg" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert earlier.read_bytes() == b"an earlier export"  # written atomically: nothing replaced on failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "m.onnx"]  # no temporary file left
