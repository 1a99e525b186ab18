"""YOLOX models: presets, official checkpoint layout, eval output, train loss."""

import pytest
import torch
from conftest import SHARED_DATA

from yolox_fast import postprocess
from yolox_fast.data import preprocess, read_image
from yolox_fast.models import PRESETS, build_yolox, load_official_weights
from yolox_fast.ops.anchors import anchor_grid_for_input

NANO_WEIGHTS = SHARED_DATA / "weights" / "yolox_nano.pth"
needs_weights = pytest.mark.skipif(not NANO_WEIGHTS.is_file(), reason=f"official weights absent: {NANO_WEIGHTS}")

# Official parameter counts with 80 classes (nano exact; the others as published, rounded).
PARAM_COUNTS = {
    "yolox-nano": (912_159, 0),
    "yolox-tiny": (5.06e6, 0.005e6),
    "yolox-s": (8.97e6, 0.005e6),
    "yolox-m": (25.3e6, 0.05e6),
    "yolox-l": (54.2e6, 0.05e6),
    "yolox-x": (99.1e6, 0.05e6),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts(name):
    model = build_yolox(name)
    count = sum(p.numel() for p in model.parameters())
    want, tol = PARAM_COUNTS[name]
    assert abs(count - want) <= tol, f"{name}: {count} parameters, expected {want}"


def test_names_are_normalised_and_unknown_rejected():
    assert sum(p.numel() for p in build_yolox("YOLOX_Nano").parameters()) == 912_159
    with pytest.raises(ValueError, match="unknown model 'yolox-q'"):
        build_yolox("yolox-q")


def test_batchnorm_and_bias_prior():
    model = build_yolox("yolox-nano", num_classes=3)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    prior = torch.sigmoid(model.head.cls_preds[0].bias)
    torch.testing.assert_close(prior, torch.full_like(prior, 0.01))
    torch.testing.assert_close(torch.sigmoid(model.head.obj_preds[2].bias), torch.tensor([0.01]))


def test_official_key_names():
    keys = build_yolox("yolox-s").state_dict().keys()
    assert "backbone.backbone.stem.conv.conv.weight" in keys
    assert "head.cls_preds.0.weight" in keys
    assert "backbone.C3_n4.m.0.conv2.bn.running_var" in keys


@needs_weights
def test_official_nano_checkpoint_loads_strictly():
    ckpt = torch.load(NANO_WEIGHTS, map_location="cpu", weights_only=True)  # plain tensors: the safe loader reads it
    model = build_yolox("yolox-nano")
    model.load_state_dict(ckpt["model"], strict=True)  # the plain PyTorch call must work
    assert load_official_weights(model, NANO_WEIGHTS) == []


@needs_weights
def test_class_count_mismatch_is_explained():
    model = build_yolox("yolox-nano", num_classes=3)
    with pytest.raises(ValueError, match="checkpoint has 80 classes but the model has 3"):
        load_official_weights(model, NANO_WEIGHTS)
    skipped = load_official_weights(model, NANO_WEIGHTS, new_class_head=True)
    assert sorted(skipped) == sorted(f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias"))


def test_wrong_model_size_is_explained(tmp_path):
    path = tmp_path / "s.pth"
    torch.save({"model": build_yolox("yolox-s").state_dict()}, path)
    with pytest.raises(ValueError, match="shape mismatch .* right model size"):
        load_official_weights(build_yolox("yolox-tiny"), path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_official_weights(build_yolox("yolox-tiny"), tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_official_weights(build_yolox("yolox-tiny"), tmp_path / "junk.pth")


def test_dog_detections_match_the_official_model(nano_model, shared_data):
    model = nano_model
    img = read_image(shared_data / "images" / "dog.jpg")
    x, ratio = preprocess(img, 416)
    assert ratio == pytest.approx(416 / max(img.shape[:2]))
    with torch.no_grad():
        pred = model(x[None])
    assert pred.shape == (1, 52 * 52 + 26 * 26 + 13 * 13, 85)
    before = pred.clone()
    dets = postprocess(pred, 80, conf_thre=0.3, nms_thre=0.3, class_agnostic=True)[0]
    assert torch.equal(pred, before), "postprocess must not modify its input"
    scores = (dets[:, 4] * dets[:, 5]).tolist()
    classes = dets[:, 6].long().tolist()
    assert classes[:3] == [16, 1, 2]  # dog, bicycle, car
    assert scores[:3] == pytest.approx([0.855, 0.803, 0.798], abs=1e-3)
    # Boxes map back into the original image.
    boxes = dets[:, :4] / ratio
    assert (boxes[:, 2] <= img.shape[1] + 1).all() and (boxes[:, 3] <= img.shape[0] + 1).all()


def test_eval_output_is_decoded():
    model = build_yolox("yolox-nano", num_classes=5).eval()
    x = torch.rand(2, 3, 96, 128) * 255
    with torch.no_grad():
        out = model(x)
        model.head.decode_in_inference = False
        raw = model(x)
    grids, strides = anchor_grid_for_input(96, 128)
    assert out.shape == (2, 12 * 16 + 6 * 8 + 3 * 4, 10)
    torch.testing.assert_close(out[..., :2], (raw[..., :2] + grids) * strides[:, None])
    torch.testing.assert_close(out[..., 2:4], raw[..., 2:4].exp() * strides[:, None])
    assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()


def test_train_loss_is_finite_and_backpropagates():
    torch.manual_seed(0)
    model = build_yolox("yolox-nano", num_classes=4).train()
    images = torch.rand(2, 3, 128, 128) * 255
    targets = torch.zeros(2, 6, 5)
    targets[0, :2] = torch.tensor([[1, 40.0, 50.0, 30.0, 40.0], [3, 90.0, 90.0, 50.0, 20.0]])
    targets[1, :1] = torch.tensor([[0, 64.0, 64.0, 100.0, 80.0]])
    losses = model(images, targets)
    assert set(losses) == {"total_loss", "iou_loss", "l1_loss", "conf_loss", "cls_loss", "num_fg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["num_fg"] > 0 and losses["iou_loss"] > 0
    losses["total_loss"].backward()
    for name in ("reg_preds", "obj_preds", "cls_preds"):
        grad = sum(conv.weight.grad.abs().sum() for conv in getattr(model.head, name))
        assert grad > 0, f"no gradient reaches head.{name}"
    assert model.backbone.backbone.stem.conv.conv.weight.grad.abs().sum() > 0
    model.zero_grad()
    model.head.use_l1 = True
    assert model(images, targets)["l1_loss"] > 0


def test_train_mode_without_targets_is_an_error():
    model = build_yolox("yolox-nano").train()
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        model(torch.zeros(3, 64, 64))


@pytest.mark.parametrize("ksize, stride", [(3, 1), (1, 1), (3, 2)])
def test_focus_as_one_strided_conv_equals_the_official_slicing(ksize, stride):
    """Focus on the CPU (a 2k x 2k stride-2s conv over pixels) gives the official space-to-depth conv's output
    and weight gradient, in training and eval mode."""
    from yolox_fast.models.network_blocks import Focus

    torch.manual_seed(ksize * 10 + stride)
    focus = Focus(3, 8, ksize=ksize, stride=stride)
    x = torch.rand(2, 3, 32, 24) * 255
    s2d = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)
    for train in (True, False):
        focus.train(train)
        focus.zero_grad()
        y = focus(x)
        y.square().mean().backward()
        grad = focus.conv.conv.weight.grad.clone()
        focus.zero_grad()
        expected = focus.conv(s2d)  # the official path: BaseConv over the space-to-depth channels
        expected.square().mean().backward()
        scale = expected.abs().max()
        assert y.shape == expected.shape
        assert ((y - expected).abs().max() / scale).item() < 1e-5, train
        torch.testing.assert_close(grad, focus.conv.conv.weight.grad, rtol=1e-4, atol=1e-4 * grad.abs().max().item())
    focus.as_strided_conv = False  # switched off (YOLOX.set_cpu_fusions(False)): the official slicing, bit for bit
    assert torch.equal(focus(x), focus.conv(s2d))
