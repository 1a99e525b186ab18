"""Model size: parameter count and GFLOPs at an input size, as the official YOLOX prints them."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class ModelSummary(NamedTuple):
    """``parameters`` (count), ``gflops`` (10^9 floating-point operations of one forward pass of one image at
    ``img_size``, a multiply-add counted as two) and ``img_size`` ``(h, w)``."""

    parameters: int
    gflops: float
    img_size: tuple[int, int]

    def describe(self) -> str:
        """``0.91 M parameters, 1.08 GFLOPs at 416x416``."""
        return (f"{self.parameters / 1e6:.2f} M parameters, {self.gflops:.2f} GFLOPs at "
                f"{self.img_size[0]}x{self.img_size[1]}")


def count_parameters(model: nn.Module) -> int:
    """Elements of every parameter (trainable or frozen)."""
    return sum(p.numel() for p in model.parameters())


def _layer_flops(module: nn.Module, inputs, output) -> int:
    """FLOPs of one convolution or linear layer's call: 2 x multiply-adds (the bias add is not counted,
    as neither ``torch.utils.flop_counter`` nor ``thop`` counts it)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = (module.in_channels // module.groups) * int(torch.tensor(module.kernel_size).prod())
        return 2 * output.numel() * per_output
    return 2 * output.numel() * module.in_features  # nn.Linear


def count_gflops(model: nn.Module, img_size: int | tuple[int, int]) -> float:
    """GFLOPs of ``model`` on one ``[1, 3, h, w]`` image: every convolution and linear layer of a forward pass
    in eval mode, a multiply-add counted as two FLOPs (what ``torch.utils.flop_counter`` counts, and the
    official YOLOX's ``thop`` MACs x 2). Counted with forward hooks rather than ``FlopCounterMode``, which
    imports ``torch._dynamo`` (4-7 s at every training start). The model's train/eval flags are kept.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = [(m, m.training) for m in model.modules()]
    # Focus runs its conv as a functional strided conv on the CPU (network_blocks.Focus): count the official
    # slicing + module conv instead, which the hooks see (the same multiply-adds, 108 per output for Nano)
    focus = [(m, m.as_strided_conv) for m in model.modules() if hasattr(m, "as_strided_conv")]
    total = [0]

    def hook(module, inputs, output):
        total[0] += _layer_flops(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        model.eval()
        for module, _ in focus:
            module.as_strided_conv = False
        with torch.no_grad():
            # forward, not __call__: a model compiled in place (Module.compile) is counted without compiling a graph
            model.forward(torch.zeros((1, 3, h, w), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
        for module, strided in focus:
            module.as_strided_conv = strided
    return total[0] / 1e9


def model_summary(model: nn.Module, img_size: int | tuple[int, int]) -> ModelSummary:
    """:class:`ModelSummary` of ``model`` at ``img_size``."""
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return ModelSummary(count_parameters(model), count_gflops(model, size), size)
