"""The one model runner (yolox_fast.inference.runner): prediction and evaluation give the same detections
through it (PyTorch and ONNX Runtime); the class filter acts before NMS; settings per call."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from yolox_fast import Detector
from yolox_fast.data.coco_classes import COCO_CLASSES
from yolox_fast.deploy.onnx_export import export_onnx
from yolox_fast.deploy.onnx_runtime import OnnxModel
from yolox_fast.inference.runner import (
    DetectSettings,
    OnnxRunner,
    TorchRunner,
    drop_other_classes,
    postprocess_predictions,
)

pytest.importorskip("pycocotools", reason="the COCO evaluation needs pycocotools")

from yolox_fast.evaluation import COCOEvaluator  # noqa: E402

SIZE = 320
SHEEP, HORSE = COCO_CLASSES.index("sheep"), COCO_CLASSES.index("horse")


@pytest.fixture(scope="module")
def onnx_models(nano_model, tmp_path_factory):
    """The official YOLOX-Nano at 320: a prediction graph and a graph with (class-aware) NMS at the evaluation
    settings, and one with class-agnostic NMS."""
    folder = tmp_path_factory.mktemp("runner")
    paths = {"pred": folder / "pred.onnx", "nms": folder / "nms.onnx", "agnostic": folder / "agnostic.onnx"}
    export_onnx(nano_model, paths["pred"], SIZE, nms="none", model_name="yolox-nano", class_names=COCO_CLASSES)
    export_onnx(nano_model, paths["nms"], SIZE, conf=0.01, nms_thre=0.65, max_det=1000, model_name="yolox-nano",
                class_names=COCO_CLASSES)
    export_onnx(nano_model, paths["agnostic"], SIZE, conf=0.25, nms_thre=0.45, class_agnostic=True,
                model_name="yolox-nano", class_names=COCO_CLASSES)
    return paths


@pytest.fixture(scope="module")
def coco128_four(coco128):
    images, ann = coco128
    evaluator = COCOEvaluator(images, ann, img_size=SIZE, conf=0.01, nms=0.65, batch_size=4,
                              image_ids=[9, 25, 30, 34])
    return evaluator


def _detector_results(detector, evaluator):
    """The detector's COCO results on the evaluator's images, in one batch as the evaluator runs them."""
    paths = [evaluator._path(i) for i in evaluator.image_ids]
    found = detector(paths)
    assert [d.source for d in found] == paths
    return [row for image_id, d in zip(evaluator.image_ids, found, strict=True)
            for row in d.to_coco(image_id, category_ids=evaluator.cat_ids)]


@pytest.mark.parametrize("backend", ["torch", "onnx-pred", "onnx-nms"])
def test_predict_and_eval_give_the_same_detections(backend, nano_weights, nano_model, onnx_models, coco128_four):
    """The shared runner: Detector (prediction) and COCOEvaluator (evaluation) on the same images with the same
    settings give the same COCO results, row for row, for PyTorch and for both ONNX graph forms."""
    if backend == "torch":
        detector = Detector(nano_weights, img_size=SIZE, conf=0.01, nms=0.65, max_det=1000, device="cpu",
                            batch_size=4)
        from_eval = coco128_four.predict(nano_model, "cpu")
    else:
        path = onnx_models["pred" if backend == "onnx-pred" else "nms"]
        detector = Detector(path, conf=0.01, nms=0.65, max_det=1000, device="cpu", batch_size=4)
        from_eval = coco128_four.predict(OnnxModel(path, device="cpu"))
    from_predict = _detector_results(detector, coco128_four)
    assert len(from_eval) > 50
    assert from_predict == from_eval
    # a runner itself is accepted by the evaluation: the same object serves both commands
    assert coco128_four.predict(detector.runner) == from_eval


def test_eval_results_are_plain_json_with_integer_ids(nano_model, coco128_four):
    rows = coco128_four.predict(nano_model, "cpu")
    assert json.loads(json.dumps(rows)) == rows
    assert {r["image_id"] for r in rows} <= {9, 25, 30, 34} and all(isinstance(r["category_id"], int) for r in rows)


def test_runner_interface(nano_model, onnx_models, demo_photos_416):
    """forward + postprocess == call, fixed-size numpy output, in network pixels, for both backends."""
    batch = torch.nn.functional.interpolate(demo_photos_416, size=(SIZE, SIZE))
    settings = DetectSettings(conf=0.3, nms=0.45, max_det=50)
    torch_found = TorchRunner(nano_model, class_names=COCO_CLASSES)(batch, settings)
    onnx_runner = OnnxRunner(OnnxModel(onnx_models["pred"], device="cpu"))
    onnx_found = onnx_runner.postprocess(onnx_runner.forward(batch), settings)
    assert torch_found.boxes.shape == (3, 50, 4) and torch_found.counts.shape == (3,)
    np.testing.assert_array_equal(torch_found.counts, onnx_found.counts)
    np.testing.assert_array_equal(torch_found.labels, onnx_found.labels)
    np.testing.assert_allclose(torch_found.boxes, onnx_found.boxes, rtol=1e-4, atol=1e-2)
    assert 0 <= torch_found.boxes.min() and torch_found.boxes.max() <= SIZE + 1


# ------------------------------------------------------------------------------------------------
# The class filter acts before NMS
# ------------------------------------------------------------------------------------------------


def test_filtered_class_cannot_suppress_a_kept_one():
    """Two overlapping boxes, class-agnostic NMS: the dog (0.9) suppresses the cat (0.6); keeping only cats
    must keep the cat, which a filter after NMS would lose."""
    pred = torch.zeros((1, 2, 5 + 3))
    pred[0, :, :4] = torch.tensor([[50.0, 50, 40, 40], [52, 51, 40, 40]])
    pred[0, :, 4] = 1.0
    pred[0, 0, 5 + 1], pred[0, 1, 5 + 2] = 0.9, 0.6  # anchor 0: class 1 (dog), anchor 1: class 2 (cat)
    everything = postprocess_predictions(pred, 3, DetectSettings(0.25, 0.45, class_agnostic=True))
    assert everything.counts.tolist() == [1] and everything.labels[0, 0] == 1
    cats = postprocess_predictions(pred, 3, DetectSettings(0.25, 0.45, class_agnostic=True, classes=(2,)))
    assert cats.counts.tolist() == [1] and cats.labels[0, 0] == 2
    assert cats.scores[0, 0] == pytest.approx(0.6)
    # the anchor's best class decides: an anchor whose best class is left out is no candidate at all
    pred[0, 0, 5 + 2] = 0.5
    cats = postprocess_predictions(pred, 3, DetectSettings(0.25, 0.45, class_agnostic=True, classes=(2,)))
    assert cats.counts.tolist() == [1] and cats.boxes[0, 0, 0] == pytest.approx(32.0)
    assert torch.isnan(drop_other_classes(pred, 3, [2])[0, 0, 4]) and pred[0, 0, 4] == 1.0  # input untouched
    assert DetectSettings(classes=2).classes == (2,) and DetectSettings(classes=[2, 0, 2]).classes == (0, 2)
    with pytest.raises(ValueError, match="the model has 3 classes"):
        postprocess_predictions(pred, 3, DetectSettings(classes=[3]))


def test_class_filter_on_a_photo(nano_weights, onnx_models, shared_data):
    """person.jpg at 320, class-agnostic NMS: the horse (0.71) suppresses the sheep (0.29) on the same animal;
    ``classes=[sheep]`` finds the sheep, in PyTorch and through an ONNX prediction graph."""
    path = str(shared_data / "images" / "person.jpg")
    detector = Detector(nano_weights, img_size=SIZE, class_agnostic=True, device="cpu")
    assert SHEEP not in detector(path).class_ids and HORSE in detector(path).class_ids
    sheep = detector(path, classes=[SHEEP])
    assert sheep.class_ids.tolist() == [SHEEP] and sheep.scores[0] > 0.25
    only = Detector(nano_weights, img_size=SIZE, class_agnostic=True, classes=[SHEEP], device="cpu")(path)
    np.testing.assert_array_equal(only.xyxy, sheep.xyxy)
    onnx = Detector(onnx_models["pred"], class_agnostic=True, classes=[SHEEP], device="cpu")(path)
    np.testing.assert_allclose(onnx.xyxy, sheep.xyxy, rtol=1e-4, atol=1e-2)
    # class-aware NMS in the graph: filtering its output is exact; class-agnostic NMS there is refused
    aware = Detector(onnx_models["nms"], conf=0.25, classes=[SHEEP, HORSE], device="cpu")(path)
    assert set(aware.class_ids.tolist()) == {SHEEP, HORSE}
    with pytest.raises(ValueError, match="class-agnostic NMS in its graph"):
        Detector(onnx_models["agnostic"], device="cpu")(path, classes=[SHEEP])
    with pytest.raises(ValueError, match="the model has 80 classes"):
        detector(path, classes=[80])
    with pytest.raises(ValueError, match="class indices"):
        Detector(nano_weights, img_size=SIZE, classes=["sheep"], device="cpu")


# ------------------------------------------------------------------------------------------------
# Settings per call
# ------------------------------------------------------------------------------------------------


def test_settings_per_call(nano_weights, shared_data):
    path = str(shared_data / "images" / "person.jpg")
    detector = Detector(nano_weights, img_size=SIZE, conf=0.1, device="cpu")
    default = detector(path)
    assert len(default) >= 4
    strict = detector(path, conf=0.5)
    np.testing.assert_array_equal(strict.xyxy, Detector(nano_weights, img_size=SIZE, conf=0.5, device="cpu")(path).xyxy)
    assert (strict.scores >= 0.5).all() and len(strict) < len(default)
    assert len(detector(path, max_det=2)) == 2
    # a lower IoU threshold suppresses the sheep on the horse (IoU ~0.9 > 0.5 is suppressed either way; 0.95 keeps)
    assert len(detector(path, nms=0.95)) >= len(default)
    # the call's settings are for that call only
    again = detector(path)
    np.testing.assert_array_equal(again.xyxy, default.xyxy)
    assert detector.conf == 0.1 and detector.max_det == 100 and detector.classes is None
    # lists and streams take them too
    listed = detector([path, path], conf=0.5)
    assert all(len(r) == len(strict) for r in listed)
    streamed = list(detector(iter([default.image]), max_det=1))
    assert len(streamed[0]) == 1
    with pytest.raises(ValueError, match="max_det must be >= 1"):
        detector(path, max_det=0)


def test_a_model_in_training_trains_on_after_running():
    """Evaluating the raw model mid-training (no EMA) runs it through TorchRunner: nothing it caches there
    (e.g. the head's anchor grid) may be an inference tensor, or the next backward fails."""
    from yolox_fast.models import build_yolox

    model = build_yolox("yolox-nano", num_classes=2)
    images = torch.rand(2, 3, 64, 64) * 255
    TorchRunner(model.eval())(images, DetectSettings(conf=0.01))
    model.train()
    targets = torch.zeros(2, 5, 5)
    targets[:, 0] = torch.tensor([0, 32, 32, 20, 20])
    losses = model(images, targets)
    loss = losses["total_loss"] if isinstance(losses, dict) else losses[0]
    loss.backward()
    assert next(model.parameters()).grad is not None


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("class_agnostic", [False, True])
def test_class_filter_equals_removing_the_anchors(device, class_agnostic, nano_demo_predictions):
    """On every postprocess backend: filtering classes gives what the official postprocess gives on the
    prediction with the left-out anchors removed (the NaN objectness of drop_other_classes is honoured)."""
    from yolox_fast.ops import backends, postprocess_padded, reference

    pred = nano_demo_predictions.to(device)
    classes = [0, 16, 17, 18]  # person, dog, horse, sheep
    filtered = drop_other_classes(pred, 80, classes)
    for backend in backends.available_backends("postprocess", device):
        dets, counts = postprocess_padded(filtered, 80, 0.05, 0.45, class_agnostic, max_det=None, backend=backend)
        for b in range(pred.shape[0]):
            keep = torch.isin(pred[b, :, 5:].argmax(-1), torch.tensor(classes, device=device))
            want = reference.postprocess(pred[b : b + 1, keep].cpu(), 80, 0.05, 0.45, class_agnostic)[0]
            got = dets[b, : int(counts[b])].cpu()
            assert want is not None and got.shape == want.shape, (backend, b)
            torch.testing.assert_close(got, want, msg=f"{backend} image {b}")
