"""The fused training-mode BatchNorm + SiLU op (yolox_fast/ops/batchnorm_silu.py, csrc/cpu/bn_silu_kernel.cpp).

Its values are held to float64 truth: the fused op's error may not exceed a small multiple of the error
PyTorch's own float32 modules make on the same input (plus a few float32 ulps), for the output, the
three gradients and the running statistics.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from yolox_fast.models import build_yolox
from yolox_fast.models.network_blocks import BaseConv
from yolox_fast.ops import _extension
from yolox_fast.ops.batchnorm_silu import batch_norm_silu, fused_batch_norm_silu_applies

pytestmark = pytest.mark.skipif(
    not (_extension.extension_loaded() and hasattr(torch.ops.yolox_fast, "batch_norm_silu_train")),
    reason="yolox_fast._C is not built",
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CL = torch.channels_last


def make_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    """A BatchNorm2d with the official eps/momentum and non-trivial affine parameters and running stats."""
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.03)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        bn.bias.copy_(torch.rand(channels, generator=gen) - 0.5)
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    return bn


def run(x: torch.Tensor, grad: torch.Tensor, bn: nn.BatchNorm2d, fused: bool):
    """y, grad_x, grad_weight, grad_bias, running_mean, running_var after one training forward/backward."""
    x = x.detach().clone().requires_grad_()
    y = batch_norm_silu(x, bn) if fused else torch.nn.functional.silu(bn(x))
    y.backward(grad)
    return [y.detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean.clone(), bn.running_var.clone()]


def check_against_float64(shape, offset: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 2.0 + offset).contiguous(memory_format=CL)
    grad = torch.randn(shape, generator=gen).contiguous(memory_format=CL)
    bn = make_bn(shape[1], seed)
    truth = run(x.double(), grad.double(), copy.deepcopy(bn).double(), fused=False)
    assert fused_batch_norm_silu_applies(x, bn)
    fused = run(x, grad, copy.deepcopy(bn), fused=True)
    modules = run(x, grad, copy.deepcopy(bn), fused=False)
    names = ["y", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var"]
    for name, t, f, m in zip(names, truth, fused, modules, strict=True):
        err_fused = (f.double() - t).abs().max().item()
        err_modules = (m.double() - t).abs().max().item()
        ulps = 8 * torch.finfo(torch.float32).eps * t.abs().max().item()
        assert err_fused <= 4 * err_modules + ulps, (name, shape, err_fused, err_modules)
    assert fused[0].is_contiguous(memory_format=CL) and fused[1].is_contiguous(memory_format=CL)


@pytest.mark.parametrize(
    "shape",
    [(4, 16, 40, 40), (2, 13, 7, 5), (2, 130, 9, 11), (3, 1, 2, 1), (1, 24, 1, 2)],
    ids=["c16", "c13", "c130", "c1", "two-values"],
)
@pytest.mark.parametrize("offset", [0.0, 40.0], ids=["centred", "mean-offset"])
def test_matches_float64_within_pytorch_error(shape, offset):
    # C = 13 and 130 leave partial vectors of 8 and 16 lanes; a large mean offset is where a naive
    # E[x^2] - E[x]^2 in float32 would lose the variance.
    check_against_float64(shape, offset)


def test_running_statistics_follow_the_module_over_steps():
    bn_fused, bn_module = make_bn(24, 1), make_bn(24, 1)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = (torch.randn(2, 24, 6, 6, generator=gen) * 3 + 1).contiguous(memory_format=CL)
        batch_norm_silu(x, bn_fused)
        bn_module(x)
    assert int(bn_fused.num_batches_tracked) == int(bn_module.num_batches_tracked) == 3
    torch.testing.assert_close(bn_fused.running_mean, bn_module.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn_fused.running_var, bn_module.running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_other_instruction_sets(capability):
    """The baseline (scalar libm) and AVX2 loops, in a fresh process with ATEN_CPU_CAPABILITY set."""
    if capability == "avx2" and "avx2" not in open("/proc/cpuinfo").read():  # noqa: SIM115
        pytest.skip("this CPU has no AVX2")
    code = (
        "import torch, test_ops_batchnorm_silu as t\n"
        f"assert torch.backends.cpu.get_cpu_capability() == {capability.upper()!r}, "
        "torch.backends.cpu.get_cpu_capability()\n"
        "for shape in [(2, 13, 7, 5), (2, 130, 9, 11), (4, 16, 12, 12)]:\n"
        "    t.check_against_float64(shape, 40.0)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability,
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


def test_other_cases_run_the_modules_unchanged():
    """Eval mode, NCHW layout and float64 take the modules: the result is theirs bit for bit."""
    x = torch.randn(2, 8, 5, 5)
    bn = make_bn(8, 2)
    for case, inp, module in [
        ("contiguous layout", x, bn),
        ("eval mode", x.contiguous(memory_format=CL), copy.deepcopy(bn).eval()),
        ("float64", x.double().contiguous(memory_format=CL), copy.deepcopy(bn).double()),
    ]:
        assert not fused_batch_norm_silu_applies(inp, module), case
        expected = torch.nn.functional.silu(copy.deepcopy(module)(inp))
        assert torch.equal(batch_norm_silu(inp, module), expected), case


def test_base_conv_switch():
    """BaseConv takes the fused op in CPU channels_last training unless switched off (model-wide)."""
    model = build_yolox("yolox-nano").train().set_channels_last(True)
    stem = model.backbone.backbone.stem.conv  # BaseConv(12, 16, 3)
    assert isinstance(stem, BaseConv)
    x = torch.rand(1, 12, 32, 32).contiguous(memory_format=CL)
    assert stem(x).grad_fn.name() == "_BatchNormSiLUFunctionBackward"
    model.set_cpu_fusions(False)
    assert stem(x).grad_fn.name() == "SiluBackward0"
    model.set_cpu_fusions(True)
    assert stem(x).grad_fn.name() == "_BatchNormSiLUFunctionBackward"
    assert not BaseConv(3, 4, 3, act="relu").fuse_bn_silu  # only SiLU convs fuse


def test_training_step_equals_the_modules():
    """One yolox-nano step (forward with a plain loss, backward, SGD): fused and unfused models agree."""
    torch.manual_seed(0)
    fused = build_yolox("yolox-nano").train().set_channels_last(True)
    plain = copy.deepcopy(fused).set_cpu_fusions(False)
    x = torch.rand(2, 3, 96, 96).contiguous(memory_format=CL) * 255
    grads = []
    for model in (fused, plain):
        raw, _ = model.head.forward_raw(model.backbone(x))
        loss = raw.float().square().mean()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=0)
    for (name, _), g_fused, g_plain in zip(fused.named_parameters(), grads[0][1], grads[1][1], strict=True):
        scale = g_plain.abs().max().clamp_min(1e-12)
        assert ((g_fused - g_plain).abs().max() / scale).item() < 1e-3, name
    for (name, b_fused), b_plain in zip(fused.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(b_fused, b_plain, rtol=1e-4, atol=1e-5, msg=name)


def test_bad_arguments_name_the_problem():
    op = torch.ops.yolox_fast.batch_norm_silu_train
    bn = make_bn(4, 0)
    args = (bn.weight.detach(), bn.bias.detach(), bn.running_mean, bn.running_var, 0.03, 1e-3)
    cases = [
        (torch.randn(2, 4, 3, 3), "channels_last"),
        (torch.randn(2, 4, 3, 3, dtype=torch.float64).contiguous(memory_format=CL), "float32"),
        (torch.randn(1, 4, 1, 1).contiguous(memory_format=CL), "more than 1 value per channel"),
        (torch.randn(2, 5, 3, 3).contiguous(memory_format=CL), "weight must be [C] with C = 5"),
        (torch.randn(4, 3, 3), "[N, C, H, W]"),
    ]
    for x, message in cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            op(x, *args)
    strided_weight = torch.ones(8)[::2]  # [4] but every other float: the loops read C consecutive floats
    with pytest.raises(ValueError, match="weight must be contiguous"):
        op(torch.randn(2, 4, 3, 3).contiguous(memory_format=CL), strided_weight, *args[1:])
    before = bn.running_mean.clone()
    with pytest.raises(ValueError):
        op(torch.randn(2, 4, 3, 3), *args)
    assert torch.equal(bn.running_mean, before)  # a refused call changes nothing


def test_fake_kernels_give_shapes_and_layout():
    """Under FakeTensorMode (what torch.compile traces with) the ops give the real ops' shapes and strides."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 6, 5, 4).contiguous(memory_format=CL)
        w, b, rm, rv = (torch.empty(6) for _ in range(4))
        y, mean, invstd = torch.ops.yolox_fast.batch_norm_silu_train(x, w, b, rm, rv, 0.03, 1e-3)
        gx, gw, gb = torch.ops.yolox_fast.batch_norm_silu_backward(y, x, w, b, mean, invstd)
        assert y.shape == gx.shape == x.shape and y.is_contiguous(memory_format=CL)
        assert mean.shape == invstd.shape == gw.shape == gb.shape == (6,)
