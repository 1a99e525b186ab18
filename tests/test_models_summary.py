"""Model summary (yolox_fast.models.summary): parameters and GFLOPs as the official YOLOX reports them."""

from __future__ import annotations

import pytest
import torch

from yolox_fast import Detector
from yolox_fast.data.coco_classes import COCO_CLASSES
from yolox_fast.deploy.onnx_export import export_onnx
from yolox_fast.models import build_yolox
from yolox_fast.models.summary import count_gflops, model_summary


def test_nano_matches_the_official_figures():
    """The official YOLOX README: YOLOX-Nano 0.91 M parameters, 1.08 GFLOPs at 416 (thop, which also counts
    a little besides convolutions); flop_counter counts the convolutions and matrix products."""
    model = build_yolox("yolox-nano", num_classes=80)
    summary = model_summary(model, 416)
    assert summary.parameters == sum(p.numel() for p in model.parameters()) and round(summary.parameters / 1e6, 2) \
        == 0.91
    assert summary.gflops == pytest.approx(1.08, rel=0.05)
    assert summary.describe() == f"0.91 M parameters, {summary.gflops:.2f} GFLOPs at 416x416"


def test_flops_equal_torch_flop_counter():
    """The hook count equals torch.utils.flop_counter's on a YOLOX (an independent count of the same ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_yolox("yolox-nano", num_classes=3).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, 96, 128))
    assert count_gflops(model, (96, 128)) * 1e9 == counter.get_total_flops()


def test_flops_follow_the_input_area_and_leave_the_model_as_it_was():
    model = build_yolox("yolox-nano", num_classes=2).train()
    model.backbone.eval()
    before = [m.training for m in model.modules()]
    small, large = count_gflops(model, 128), count_gflops(model, (256, 128))
    assert large == pytest.approx(2 * small, rel=0.02)
    assert [m.training for m in model.modules()] == before
    # a model compiled in place is counted without compiling (and the same)
    model.compile()
    assert count_gflops(model, 128) == pytest.approx(small)


def test_detector_info(nano_weights, nano_model, tmp_path, capsys):
    info = Detector(nano_weights, img_size=320, device="cpu").info(verbose=True)
    assert capsys.readouterr().out == info["summary"] + "\n"
    assert info["parameters"] == sum(p.numel() for p in nano_model.parameters())
    assert info["gflops"] == pytest.approx(model_summary(nano_model, 320).gflops)
    assert info["img_size"] == (320, 320) and "GFLOPs at 320x320" in info["summary"]
    path = tmp_path / "nano.onnx"
    export_onnx(nano_model, path, 320, nms="none", model_name="yolox-nano", class_names=COCO_CLASSES)
    onnx_info = Detector(path, device="cpu").info()
    # the exported graph holds the weights (BatchNorm folded into the convolutions: fewer elements)
    assert 0.9 * info["parameters"] < onnx_info["parameters"] <= info["parameters"] + 1000
    assert onnx_info["gflops"] is None and "M parameters" in onnx_info["summary"]
