"""SGD with the official parameter groups: weight decay on conv/linear weights only."""

from __future__ import annotations

import torch
from torch import nn

#: Normalisation layers: their weights (scales) get no weight decay.
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters of ``model`` into the official three groups.

    Returns ``[norm weights (no decay), other weights (decay), biases (no decay)]`` as optimiser
    param-group dicts, in the official order. Every trainable parameter lands in exactly one group.
    """
    norm_weights, weights, biases = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name == "bias":
                biases.append(param)
            elif isinstance(module, NORM_TYPES):
                norm_weights.append(param)
            else:
                weights.append(param)
    return [
        {"params": norm_weights, "weight_decay": 0.0},
        {"params": weights, "weight_decay": weight_decay},
        {"params": biases, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                    fused: bool | None = None) -> torch.optim.SGD:
    """Nesterov SGD over :func:`param_groups` (the official YOLOX optimiser).

    ``fused`` (default: when every parameter is a float32/float16/bfloat16 tensor on the CPU or a CUDA GPU)
    runs PyTorch's fused SGD kernel: one pass over each parameter instead of a chain of small ops per
    parameter, the same update within float rounding. Why: measured on the dev CPU (one thread), the step
    of yolox-s takes 6.0 ms fused against 20.8 ms with the default per-parameter loop (yolox-nano 0.7 ms
    against 4.5 ms). ``False`` gives PyTorch's default implementation (what the official code runs).
    """
    groups = param_groups(model, weight_decay)
    if fused is None:
        params = [p for g in groups for p in g["params"]]
        fused = bool(params) and all(
            p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
            for p in params
        )
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=fused)
