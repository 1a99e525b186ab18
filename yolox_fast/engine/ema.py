"""Exponential moving average of the model weights (the official ModelEMA)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """A frozen copy of the model whose floating-point state follows the trained weights.

    After each optimiser step, ``update`` sets ``ema = d * ema + (1 - d) * model`` for every
    floating-point entry of the state dict (parameters and BatchNorm running statistics), with
    ``d = decay * (1 - exp(-updates / ramp))``: the average starts short and lengthens, so early
    weights from random initialisation fade quickly.

    Args:
        model: the model being trained (a DDP wrapper is unwrapped).
        decay: the asymptotic decay (official 0.9998).
        ramp: the ``updates`` time constant of the ramp (official 2000).
        updates: updates already done (when resuming).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay_max = decay
        self.ramp = ramp
        self.updates = updates

    def decay(self, updates: int) -> float:
        """The decay used by the ``updates``-th update (1-based)."""
        return self.decay_max * (1.0 - math.exp(-updates / self.ramp))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay(self.updates)
        source = unwrap(model).state_dict()
        ema_values, new_values = [], []
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                ema_values.append(value)
                new_values.append(source[name].detach())
        # Two fused passes over all tensors instead of a Python loop of small ops (hundreds of tensors).
        torch._foreach_mul_(ema_values, d)
        torch._foreach_add_(ema_values, new_values, alpha=1.0 - d)
