"""Training-mode ``BatchNorm2d`` followed by ``SiLU``, fused into one op on the CPU.

Every :class:`~yolox_fast.models.network_blocks.BaseConv` is conv -> BatchNorm -> SiLU. In a CPU training
step the two memory-bound layers after each conv cost about a third of the model's time (yolox-nano 416
B=8, 2 threads: BatchNorm forward + backward 58 ms, SiLU forward + backward 47 ms, the copy autograd makes
for an inplace SiLU 20 ms, of a 369 ms step). The fused op (``csrc/cpu/bn_silu_kernel.cpp``) reads the conv
output twice and writes the activation once in the forward, keeps only the conv output for the backward
(not the BatchNorm output too) and makes two passes there. Measured gains are in the benchmark
``benchmarks/bench_train_step.py`` (``fast`` against ``fast-unfused``) and in the closing notes of issue 11.

Semantics are exactly those of ``nn.SiLU()(nn.BatchNorm2d(...)(x))`` in training mode: batch statistics
over N, H, W, the biased variance for normalising and the unbiased one for ``running_var``, running
statistics updated in place with ``momentum``, ``num_batches_tracked`` counted. Results agree with the
modules within float32 rounding (the statistics are summed in double, so closer to the exact values than
PyTorch's own float sums; ``tests/test_ops_batchnorm_silu.py`` bounds both against float64).

Only float32 channels-last tensors on the CPU take the fused path (:func:`fused_batch_norm_silu_applies`);
everything else (GPU, bf16 autocast, eval mode, contiguous layout) runs the two modules, whose cuDNN or
fused-elementwise kernels already serve those cases.
"""

from __future__ import annotations

import torch
from torch import nn

from . import _extension


def batch_norm_silu_reference(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """The unfused definition: ``silu(bn(x))`` with the module (updates its running statistics in training)."""
    return torch.nn.functional.silu(bn(x))


def _op_available() -> bool:
    return _extension.extension_loaded() and hasattr(torch.ops.yolox_fast, "batch_norm_silu_train")


_AVAILABLE = _op_available()

if _AVAILABLE:

    @torch.library.register_fake("yolox_fast::batch_norm_silu_train")
    def _train_fake(x, weight, bias, running_mean, running_var, momentum, eps):
        channels = x.shape[1]
        y = torch.empty_like(x, memory_format=torch.channels_last)
        return y, x.new_empty(channels), x.new_empty(channels)

    @torch.library.register_fake("yolox_fast::batch_norm_silu_backward")
    def _backward_fake(grad_y, x, weight, bias, mean, invstd):
        return torch.empty_like(x, memory_format=torch.channels_last), torch.empty_like(weight), torch.empty_like(bias)


class _BatchNormSiLUFunction(torch.autograd.Function):
    """Autograd for the fused op: saves the input ``x`` and the per-channel ``mean`` and ``invstd``."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        y, mean, invstd = torch.ops.yolox_fast.batch_norm_silu_train(x, weight, bias, running_mean, running_var,
                                                                     momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = torch.ops.yolox_fast.batch_norm_silu_backward(grad_y, x, weight, bias, mean,
                                                                                       invstd)
        return grad_x, grad_weight, grad_bias, None, None, None, None


def fused_batch_norm_silu_available() -> bool:
    """Whether the compiled op is there (``yolox_fast._C`` built with ``batch_norm_silu_train``)."""
    return _AVAILABLE


def fused_batch_norm_silu_applies(x: torch.Tensor, bn: nn.BatchNorm2d) -> bool:
    """Whether :func:`batch_norm_silu` takes the fused op for this input and module.

    True for a training-mode ``bn`` with affine parameters and running statistics (a momentum, not the
    cumulative average) on a float32 ``[N, C, H, W]`` channels-last CPU tensor, when the compiled op is
    there. Autocast leaves float32 on the CPU only when it is off or bf16 does not apply; a bf16 conv
    output fails the dtype test and takes the modules.
    """
    return (
        _AVAILABLE
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and bn.momentum is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and bn.weight.dtype == torch.float32
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def batch_norm_silu(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``silu(bn(x))`` for ``x [N, C, H, W]``: the fused op where it applies, else the modules' definition.

    In training mode the module's running statistics and ``num_batches_tracked`` are updated as
    ``bn(x)`` would update them. Returns ``[N, C, H, W]`` in ``x``'s layout.
    """
    if not fused_batch_norm_silu_applies(x, bn):
        return batch_norm_silu_reference(x, bn)
    bn.num_batches_tracked.add_(1)
    return _BatchNormSiLUFunction.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)
