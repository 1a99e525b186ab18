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


def count_gflops(model: nn.Module, img_size: int | tuple[int, int]) -> float:
    """GFLOPs of ``model`` on one ``[1, 3, h, w]`` image, counted by ``torch.utils.flop_counter`` on a
    forward pass in eval mode (convolutions and matrix products, a multiply-add as two FLOPs: the
    official YOLOX's ``thop`` MACs x 2). The model's train/eval flags and device are kept."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = [(m, m.training) for m in model.modules()]
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.inference_mode(), counter:
            model(torch.zeros((1, 3, h, w), device=device, dtype=dtype))
    finally:
        for module, training in modes:
            module.training = training
    return counter.get_total_flops() / 1e9


def model_summary(model: nn.Module, img_size: int | tuple[int, int]) -> ModelSummary:
    """:class:`ModelSummary` of ``model`` at ``img_size``."""
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return ModelSummary(count_parameters(model), count_gflops(model, size), size)
