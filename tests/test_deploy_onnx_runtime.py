"""yolox_fast.deploy.onnx_runtime (ONNX Runtime) against the PyTorch path, and `python -m yolox_fast.eval --onnx`:
the coco128 AP of the exported model equals the PyTorch model's."""

from __future__ import annotations

import json
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
def test_coco128_ap_of_onnx_equals_pytorch(nano_model, coco128, tmp_path):
    from yolox_fast.evaluation import COCOEvaluator

    images, ann = coco128
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


def altered_copy(path, out, meta_text=None, **meta_changes):
    """A copy of an exported model with its yolox_fast metadata replaced (``meta_text``) or changed."""
    from yolox_fast.deploy.onnx_export import METADATA_KEY

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    if meta_text is None:
        meta = json.loads(props[METADATA_KEY])
        meta.update(meta_changes)
        meta_text = json.dumps(meta)
    props[METADATA_KEY] = meta_text
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(out))
    return out


def graph_with_outputs(out, names, size=64):
    """A valid ONNX model taking ``images [B, 3, size, size]`` whose outputs are ``names`` (Identity copies),
    carrying the metadata of a graph with NMS."""
    from yolox_fast.deploy.onnx_export import METADATA_KEY

    nodes = [onnx.helper.make_node("Identity", ["images"], [n]) for n in names]
    graph = onnx.helper.make_graph(
        nodes, "other", [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["b", 3, size, size])],
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["b", 3, size, size]) for n in names])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    meta = {"model": "yolox-nano", "num_classes": 1, "class_names": ["a"], "img_size": [size, size], "nms": "onnx",
            "decode": True, "static": False, "batch_size": None, "conf": 0.25, "nms_thre": 0.45, "max_det": 100,
            "class_agnostic": False}
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    onnx.save(model, str(out))
    return out


def test_files_from_elsewhere_are_checked_before_use(exported, tmp_path):
    """Issue 18.5: an ONNX with other outputs gave KeyError 'num_dets' (exit 1); malformed metadata KeyError or
    TypeError; metadata lying about the input size (60000 against the graph's) or the class names was believed.
    Each is now one ValueError naming the file, when it is opened."""
    src = exported["nms"]
    cases = {
        "not json": (altered_copy(src, tmp_path / "a.onnx", meta_text="{not json"), "metadata is not JSON"),
        "a list": (altered_copy(src, tmp_path / "b.onnx", meta_text="[1, 2]"), "is a list, not an object"),
        "huge size": (altered_copy(src, tmp_path / "c.onnx", img_size=[60000, 60000]), "img_size must be"),
        "size vs graph": (altered_copy(src, tmp_path / "d.onnx", img_size=[160, 160]), "the metadata says"),
        "names vs count": (altered_copy(src, tmp_path / "e.onnx", class_names=["a", "b"]), "list of 80 names"),
        "count type": (altered_copy(src, tmp_path / "f.onnx", num_classes="80"), "num_classes must be"),
        "conf type": (altered_copy(src, tmp_path / "g.onnx", conf="high"), "conf and nms_thre"),
        "nms mode": (altered_copy(src, tmp_path / "h.onnx", nms="maybe"), "nms must be"),
        "other outputs": (graph_with_outputs(tmp_path / "i.onnx", ["detections"]), "the graph's outputs are"),
        "prediction vs classes": (altered_copy(exported["pred"], tmp_path / "j.onnx", num_classes=3,
                                               class_names=["a", "b", "c"]), "predicts 80 classes"),
    }
    for case, (path, phrase) in cases.items():
        with pytest.raises(ValueError) as info:
            OnnxModel(path)
        message = str(info.value)
        assert str(path) in message and phrase in message and "\n" not in message, (case, message)


def test_eval_onnx_of_a_non_square_export(tmp_path):
    """Issue 18.7: ``eval --onnx`` took the export's height as a square size and could not run a 64x96 export."""
    from yolox_fast.data import make_synthetic_dataset
    from yolox_fast.models import build_yolox

    info = make_synthetic_dataset(tmp_path / "data", num_train=2, num_val=2, image_size=64)
    model = build_yolox("yolox-nano", num_classes=len(info["class_names"])).eval()
    path = tmp_path / "wide.onnx"
    export_onnx(model, path, (64, 96), conf=0.01, nms_thre=0.65, max_det=100, simplify=False)
    proc = subprocess.run([sys.executable, "-m", "yolox_fast.eval", "--onnx", str(path), "--images",
                           str(info["val_images"]), "--ann", str(info["val_ann"]), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "64x96" in proc.stdout and "AP50:95" in proc.stdout
