"""ONNX export: the in-graph postprocess against postprocess_padded, the exported network against PyTorch,
fp16, static batch, metadata, and every error case of the exporter and its command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from yolox_fast.deploy.onnx_export import METADATA_KEY, export_onnx
from yolox_fast.deploy.onnx_postprocess import OUTPUT_NAMES, append_postprocess
from yolox_fast.ops import postprocess_padded

SIZE = 416  # the size of conftest's demo_photos_416
A416 = 3549  # anchors at 416


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def postprocess_graph(num_anchors: int, num_classes: int, **settings) -> ort.InferenceSession:
    """Only the postprocess: a graph whose input is the prediction ``[B, A, 5 + C]``."""
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["input"], ["prediction"])], "pp",
                                   [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                                       ["batch", num_anchors, 5 + num_classes])],
                                   [onnx.helper.make_tensor_value_info("prediction", onnx.TensorProto.FLOAT,
                                                                       ["batch", num_anchors, 5 + num_classes])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    append_postprocess(model, "prediction", num_anchors, num_classes, **settings)
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def reference_outputs(pred: torch.Tensor, num_classes: int, conf_thre, nms_thre, max_det, pre_nms_topk=None,
                      class_agnostic=False, multi_label=False):
    """postprocess_padded as (num_dets, boxes, scores, labels)."""
    dets, counts = postprocess_padded(pred, num_classes, conf_thre, nms_thre, class_agnostic, multi_label=multi_label,
                                      pre_nms_topk=pre_nms_topk, max_det=max_det)
    return counts.numpy(), dets[..., :4].numpy(), (dets[..., 4] * dets[..., 5]).numpy(), dets[..., 6].long().numpy()


def assert_same_detections(got, want, box_rtol: float, score_tol: float) -> None:
    """Same counts; per row the same label and box, except that rows whose scores are within ``score_tol``
    (ties) may come in another order; zero padding after the count."""
    g_n, g_boxes, g_scores, g_labels = got
    w_n, w_boxes, w_scores, w_labels = want
    np.testing.assert_array_equal(g_n, w_n)
    for b, n in enumerate(w_n.tolist()):
        np.testing.assert_allclose(g_scores[b, :n], w_scores[b, :n], rtol=0, atol=score_tol)
        for i in range(n):
            tied = np.nonzero(np.abs(w_scores[b, :n] - g_scores[b, i]) <= score_tol)[0]
            ok = [j for j in tied if g_labels[b, i] == w_labels[b, j]
                  and np.allclose(g_boxes[b, i], w_boxes[b, j], rtol=box_rtol, atol=box_rtol)]
            assert ok, f"image {b} row {i}: label {g_labels[b, i]} box {g_boxes[b, i]} not found among ties"
        assert not g_boxes[b, n:].any() and not g_scores[b, n:].any() and not g_labels[b, n:].any()


# ------------------------------------------------------------------------------------------------
# The postprocess graph alone, on real predictions: bit-exact against postprocess_padded
# ------------------------------------------------------------------------------------------------

SETTINGS = {
    "official-eval": dict(conf_thre=0.01, nms_thre=0.65, max_det=300),
    "deploy": dict(conf_thre=0.25, nms_thre=0.45, max_det=100),
    "class-agnostic": dict(conf_thre=0.05, nms_thre=0.5, max_det=100, class_agnostic=True),
    "multi-label": dict(conf_thre=0.05, nms_thre=0.5, max_det=100, multi_label=True),
    "multi-label-agnostic": dict(conf_thre=0.05, nms_thre=0.5, max_det=50, multi_label=True, class_agnostic=True),
    "topk-and-few": dict(conf_thre=0.01, nms_thre=0.65, max_det=7, pre_nms_topk=40),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_postprocess_graph_equals_postprocess_padded(nano_demo_predictions, name):
    settings = SETTINGS[name]
    sess = postprocess_graph(A416, 80, **settings)
    for batch in (1, 3):
        pred = nano_demo_predictions[:batch]
        got = sess.run(list(OUTPUT_NAMES), {"input": pred.numpy()})
        want = reference_outputs(pred, 80, **settings)
        assert got[1].shape == (batch, settings["max_det"], 4) and got[0].dtype == np.int64
        assert want[0].sum() > batch  # something to compare
        # Same prediction in, so identical arithmetic: exact boxes and scores, exact order (no tolerance).
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_postprocess_graph_ties_and_edge_cases():
    """Purpose-built: equal scores across and within classes, a class-score tie (first class wins), boxes
    exactly at the IoU threshold, a zero-size box, a NaN score, a score equal to conf, nothing above conf."""
    a, c = 8, 3
    pred = torch.zeros((2, a, 5 + c))
    boxes = torch.tensor([[50, 50, 20, 20], [50, 50, 20, 20], [52, 50, 20, 20], [100, 100, 10, 10],
                          [100, 100, 10, 10], [150, 150, 0, 0], [30, 30, 8, 8], [30, 31, 8, 8]], dtype=torch.float32)
    pred[0, :, :4] = boxes
    pred[0, :, 4] = torch.tensor([0.9, 0.9, 0.9, 0.5, 0.5, 0.8, float("nan"), 0.5])
    pred[0, :, 5:] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5], [0, 0, 1.0],
                                   [1.0, 0, 0], [0, 0, 0.5]])
    pred[1, :, :4] = boxes
    pred[1, :, 4] = 0.01  # nothing above conf in image 1
    pred[1, :, 5] = 0.5
    for settings in (dict(conf_thre=0.25, nms_thre=0.5, max_det=5), dict(conf_thre=0.25, nms_thre=0.5, max_det=10,
                                                                          class_agnostic=True)):
        got = postprocess_graph(a, c, **settings).run(list(OUTPUT_NAMES), {"input": pred.numpy()})
        want = reference_outputs(pred, c, **settings)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        assert got[0][1] == 0


# ------------------------------------------------------------------------------------------------
# Exported files
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nms_onnx(nano_model, tmp_path_factory):
    """YOLOX-Nano at 416 with NMS in the graph, dynamic batch, simplified (as users get it)."""
    path = tmp_path_factory.mktemp("export") / "nano.onnx"
    meta = export_onnx(nano_model, path, SIZE, conf=0.05, nms_thre=0.5, max_det=100, model_name="yolox-nano",
                       class_names=[f"c{i}" for i in range(80)])
    return path, meta


def test_exported_graph_equals_pytorch_at_batch_1_and_3(nms_onnx, demo_photos_416, nano_demo_predictions):
    path, meta = nms_onnx
    assert meta["simplified"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    stored = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert stored["class_names"][:2] == ["c0", "c1"] and stored["img_size"] == [SIZE, SIZE]
    assert stored["conf"] == 0.05 and stored["nms_thre"] == 0.5 and stored["model"] == "yolox-nano"
    sess = session(path)
    assert [o.name for o in sess.get_outputs()] == list(OUTPUT_NAMES)
    assert sess.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 3):
        got = sess.run(list(OUTPUT_NAMES), {"images": demo_photos_416[:batch].numpy()})
        want = reference_outputs(nano_demo_predictions[:batch], 80, 0.05, 0.5, 100)
        assert want[0].min() > 5
        # ONNX Runtime's convolutions round differently from PyTorch's (~1e-6): scores within 1e-5,
        # boxes within 1e-4 relative, order equal apart from (near) ties.
        assert_same_detections(got, want, box_rtol=1e-4, score_tol=1e-5)


def test_prediction_export_and_official_raw_layout(nano_model, demo_photos_416, nano_demo_predictions, tmp_path):
    decoded, raw = tmp_path / "pred.onnx", tmp_path / "raw.onnx"
    export_onnx(nano_model, decoded, SIZE, nms="none")
    export_onnx(nano_model, raw, SIZE, nms="none", decode=False, simplify=False)
    out = session(decoded).run(None, {"images": demo_photos_416.numpy()})[0]
    np.testing.assert_allclose(out, nano_demo_predictions.numpy(), rtol=1e-4, atol=2e-3)  # pixels and scores
    nano_model.head.decode_in_inference = False
    try:
        with torch.no_grad():
            official = nano_model(demo_photos_416[:2])
    finally:
        nano_model.head.decode_in_inference = True
    out = session(raw).run(None, {"images": demo_photos_416[:2].numpy()})[0]
    np.testing.assert_allclose(out, official.numpy(), rtol=1e-4, atol=2e-3)


def test_static_batch_export(nano_model, demo_photos_416, tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx(nano_model, path, SIZE, static=True, batch_size=2)
    sess = session(path)
    assert sess.get_inputs()[0].shape == [2, 3, SIZE, SIZE]
    assert sess.get_outputs()[1].shape == [2, 100, 4]
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        sess.run(None, {"images": demo_photos_416.numpy()})


def test_half_export_within_tolerance(nano_model, demo_photos_416, tmp_path):
    """fp16 network, float32 decode and outputs. Stated tolerance: the same detections above 0.3 (count
    within 1), each fp32 detection matched by a same-class fp16 one with IoU >= 0.9 and a score within 0.03."""
    full, half = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    export_onnx(nano_model, full, SIZE, conf=0.3)
    export_onnx(nano_model, half, SIZE, conf=0.3, half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size  # fp16 weights
    initializer_types = {t.data_type for t in onnx.load(str(half)).graph.initializer if len(t.dims) == 4}
    assert initializer_types == {onnx.TensorProto.FLOAT16}
    a = session(full).run(list(OUTPUT_NAMES), {"images": demo_photos_416.numpy()})
    b = session(half).run(list(OUTPUT_NAMES), {"images": demo_photos_416.numpy()})
    assert b[1].dtype == np.float32 and b[2].dtype == np.float32
    for img in range(len(demo_photos_416)):
        n_a, n_b = int(a[0][img]), int(b[0][img])
        assert abs(n_a - n_b) <= 1 and n_a > 0
        for i in range(n_a):
            if a[2][img, i] < 0.35:
                continue  # near the threshold fp16 may drop it
            same = b[3][img, :n_b] == a[3][img, i]
            ious = _iou(a[1][img, i], b[1][img, :n_b])
            close = np.abs(b[2][img, :n_b] - a[2][img, i]) <= 0.03
            assert (same & (ious >= 0.9) & close).any(), (img, i)


def _iou(box, boxes):
    tl = np.maximum(box[:2], boxes[:, :2])
    br = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(box) + area(boxes) - inter)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_export_errors(nano_model, tmp_path):
    out = tmp_path / "m.onnx"
    cases = [
        (dict(img_size=400), ValueError, "multiple of 32"),
        (dict(img_size=(416, 0)), ValueError, "multiple of 32"),
        (dict(nms="tensorrt"), ValueError, "nms must be"),
        (dict(decode=False), ValueError, "needs decoded boxes"),
        (dict(opset=13), ValueError, "opset must be >= 17"),
        (dict(class_names=["a", "b"]), ValueError, "2 class names for a model with 80"),
        (dict(conf=1.5), ValueError, "conf_thre must be in"),
        (dict(max_det=0), ValueError, "max_det must be >= 1"),
        (dict(output=tmp_path / "missing" / "m.onnx"), FileNotFoundError, "output folder does not exist"),
        (dict(output=tmp_path), ValueError, "is a folder"),
    ]
    for kwargs, error, message in cases:
        kwargs = {"output": out, "img_size": SIZE, **kwargs}
        with pytest.raises(error, match=message):
            export_onnx(nano_model, **kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary files left

    out.write_bytes(b"an earlier export")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_onnx(nano_model, out, SIZE)
    with pytest.raises(ValueError, match="conf_thre"):  # fails after the network export: the old file survives
        export_onnx(nano_model, out, SIZE, conf=-1.0, overwrite=True)
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def run_export(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "yolox_fast.export", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_cli_exports_with_class_names_in_metadata(nano_weights, tmp_path):
    out = tmp_path / "nano.onnx"
    proc = run_export("--weights", nano_weights, "--output", out, "--conf", "0.01", "--nms-thre", "0.65",
                      "--no-simplify")
    assert proc.returncode == 0, proc.stderr
    assert "yolox-nano" in proc.stdout and "416x416" in proc.stdout and "onnx.checker passed" in proc.stdout
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[METADATA_KEY])
    assert meta["class_names"][:3] == ["person", "bicycle", "car"] and meta["conf"] == 0.01
    # an existing output is not replaced without --overwrite
    before = out.read_bytes()
    proc = run_export("--weights", nano_weights, "--output", out)
    assert proc.returncode == 2 and "exists" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--model", "yolox-q"], "unknown model"),
    (["--model", "yolox-s"], "holds yolox-nano weights, not yolox-s"),
    (["--num-classes", "3"], "has 80 classes, not 3"),
    (["--img-size", "400"], "--img-size must be a positive multiple of 32, got 400"),
    (["--decode", "none"], "add --nms none"),
    (["--opset", "13"], "opset must be 17"),
    (["--opset", "99"], "--opset must be 20 or older"),  # issue 18.7: was exit 1 and pages of TorchScript graph
    (["--img-size", "8192"], "at most 4096"),
    (["--max-det", "0"], "--max-det must be >= 1"),
])
def test_cli_bad_input_exits_2(nano_weights, tmp_path, args, message):
    proc = run_export("--weights", nano_weights, "--output", tmp_path / "m.onnx", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_cli_bad_files_exit_2(nano_weights, tmp_path):
    proc = run_export("--weights", tmp_path / "missing.pth", "--output", tmp_path / "m.onnx")
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    proc = run_export("--weights", nano_weights, "--output", tmp_path / "no" / "m.onnx")
    assert proc.returncode == 2 and "output folder does not exist" in proc.stderr
    proc = run_export("--weights", nano_weights, "--output", nano_weights)
    assert proc.returncode == 2 and "weights file itself" in proc.stderr


# ------------------------------------------------------------------------------------------------
# --dynamic: one export for every input size (grids built in the graph)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multi_label", [False, True], ids=["best-class", "multi-label"])
def test_dynamic_export_made_at_320_equals_pytorch_at_other_sizes(nano_model, shared_data, tmp_path, multi_label):
    from yolox_fast.data import preprocess, read_image

    path = tmp_path / "dyn.onnx"
    meta = export_onnx(nano_model, path, 320, dynamic_size=True, conf=0.05, nms_thre=0.5, multi_label=multi_label)
    assert meta["dynamic_size"] and meta["num_anchors"] is None and meta["img_size"] == [320, 320]
    sess = session(path)
    assert sess.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    for size in ((416, 416), (256, 480)):
        images = torch.stack([preprocess(read_image(shared_data / "images" / f"{n}.jpg"), size)[0]
                              for n in ("dog", "horses")])
        with torch.no_grad():
            want = reference_outputs(nano_model(images), 80, 0.05, 0.5, 100, multi_label=multi_label)
        assert want[0].sum() > 5
        got = sess.run(None, {"images": images.numpy()})
        assert_same_detections(got, want, box_rtol=1e-4, score_tol=1e-5)


def test_dynamic_export_through_runtime_detector_and_predict(nano_weights, shared_data, tmp_path):
    from yolox_fast import Detector
    from yolox_fast.deploy.onnx_runtime import OnnxModel

    path = tmp_path / "dyn.onnx"
    proc = run_export("--weights", nano_weights, "--output", path, "--dynamic", "--img-size", "320")
    assert proc.returncode == 0, proc.stderr
    assert "320x320 (any multiple of 32)" in proc.stdout
    with pytest.raises(ValueError, match="must be a positive multiple of 32, got 100 96"):
        OnnxModel(path).run(np.zeros((1, 3, 100, 96), np.float32))
    photo = str(shared_data / "images" / "dog.jpg")
    at_416 = Detector(path, img_size=416, device="cpu")
    torch_416 = Detector(nano_weights, img_size=416, device="cpu")
    assert at_416.img_size == (416, 416) and Detector(path, device="cpu").img_size == (320, 320)
    got, want = at_416(photo), torch_416(photo)
    np.testing.assert_allclose(got.xyxy, want.xyxy, rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(got.class_ids, want.class_ids)
    proc = subprocess.run([sys.executable, "-m", "yolox_fast.predict", photo, "--onnx", str(path), "--img-size", "640",
                           "--project", str(tmp_path), "--name", "p", "--no-progress"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "input 640x640" in proc.stdout and (tmp_path / "p" / "dog.jpg").is_file()


def test_two_exports_to_one_path_one_wins(nano_weights, tmp_path):
    """Issue 18.4: both passed the "exists" check made before the export and both replaced the file. Now the
    last step is an exclusive link: one export writes the file, the other exits 2 and replaces nothing."""
    out = tmp_path / "nano.onnx"
    args = [sys.executable, "-m", "yolox_fast.export", "--weights", str(nano_weights), "--output", str(out),
            "--img-size", "128", "--no-simplify"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = results[[p.returncode for p in procs].index(2)][1]
    # usually both pass the early check and the loser meets the exclusive last step; else the early check
    assert ("appeared during the export and was not replaced" in loser or "exists" in loser), loser
    assert "Traceback" not in loser
    assert onnx.load(str(out)).graph.input[0].name == "images"
    assert [p.name for p in tmp_path.iterdir()] == ["nano.onnx"]  # no temporary file left behind
