"""The official parameter groups: weight decay on conv/linear weights only."""

import copy

import torch
from torch import nn

from yolox_fast.engine.optim import build_optimizer, param_groups
from yolox_fast.models import build_yolox


def test_groups_split_norms_weights_and_biases():
    model = build_yolox("yolox-nano", num_classes=3)
    norm_w, weights, biases = param_groups(model, 5e-4)
    assert norm_w["weight_decay"] == 0 and biases["weight_decay"] == 0 and weights["weight_decay"] == 5e-4
    bn_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    conv_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    all_biases = {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}
    assert {id(p) for p in norm_w["params"]} == bn_weights
    assert {id(p) for p in weights["params"]} == conv_weights
    assert {id(p) for p in biases["params"]} == all_biases  # BN biases and the head's conv biases
    # every trainable parameter exactly once
    ids = [id(p) for g in (norm_w, weights, biases) for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for _ in model.parameters())


def test_frozen_parameters_are_left_out_and_linear_weights_decay():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    norm_w, weights, biases = param_groups(model, 0.1)
    assert [p is model[1].weight for p in norm_w["params"]] == [True]
    assert [p is model[0].weight for p in weights["params"]] == [True]
    assert len(biases["params"]) == 3


def test_nesterov_sgd_decays_only_conv_weights():
    conv, bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)
    model = nn.Sequential(conv, bn)
    opt = build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=0.5)
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero loss gradient: only weight decay moves a parameter
    opt.step()
    after = dict(model.named_parameters())
    assert not torch.equal(after["0.weight"], before["0.weight"])
    for name in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(after[name], before[name]), name


def test_fused_sgd_step_equals_the_default_one():
    """The fused kernel (the default on CPU/CUDA) makes the official optimiser's update, within float rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    twin = copy.deepcopy(model)
    start = [p.detach().clone() for p in model.parameters()]
    fused, plain = build_optimizer(model, lr=0.1), build_optimizer(twin, lr=0.1, fused=False)
    assert fused.param_groups[0]["fused"] and not plain.param_groups[0]["fused"]
    for _ in range(3):  # momentum buffers in play from the second step
        for m in (model, twin):
            for p in m.parameters():
                p.grad = torch.sin(p.detach() * 3.0 + 1.0)  # the same gradient for both copies
        fused.step()
        plain.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert all(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), start, strict=True))  # all moved
