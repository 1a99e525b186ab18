"""CSPDarknet, the YOLOX backbone."""

from __future__ import annotations

import torch
from torch import nn

from .network_blocks import BaseConv, CSPLayer, DWConv, Focus, SPPBottleneck


class CSPDarknet(nn.Module):
    """Focus stem and four CSP stages; returns the stride 8, 16 and 32 features.

    Args:
        dep_mul: depth multiplier (number of bottlenecks per CSP layer scales with it).
        wid_mul: width multiplier (channels scale with it).
        out_features: names of the stages to return.
        depthwise: depthwise-separable 3x3 convs (YOLOX-Nano).
        act: activation name.

    ``forward(x [B, 3, H, W])`` returns a dict of the requested stages; ``dark3`` is
    ``[B, 256 * wid_mul, H/8, W/8]``, ``dark4`` ``[B, 512 * wid_mul, H/16, W/16]``, ``dark5``
    ``[B, 1024 * wid_mul, H/32, W/32]``.
    """

    def __init__(
        self,
        dep_mul: float,
        wid_mul: float,
        out_features=("dark3", "dark4", "dark5"),
        depthwise: bool = False,
        act: str = "silu",
    ):
        super().__init__()
        if not out_features:
            raise ValueError("CSPDarknet needs at least one output feature")
        self.out_features = tuple(out_features)
        conv = DWConv if depthwise else BaseConv
        base_channels = int(wid_mul * 64)
        base_depth = max(round(dep_mul * 3), 1)

        def stage(c_in: int, c_out: int, n: int) -> nn.Sequential:
            return nn.Sequential(
                conv(c_in, c_out, 3, 2, act=act),
                CSPLayer(c_out, c_out, n=n, depthwise=depthwise, act=act),
            )

        self.stem = Focus(3, base_channels, ksize=3, act=act)
        self.dark2 = stage(base_channels, base_channels * 2, base_depth)
        self.dark3 = stage(base_channels * 2, base_channels * 4, base_depth * 3)
        self.dark4 = stage(base_channels * 4, base_channels * 8, base_depth * 3)
        self.dark5 = nn.Sequential(
            conv(base_channels * 8, base_channels * 16, 3, 2, act=act),
            SPPBottleneck(base_channels * 16, base_channels * 16, activation=act),
            CSPLayer(
                base_channels * 16, base_channels * 16, n=base_depth, shortcut=False, depthwise=depthwise, act=act
            ),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        x = self.stem(x)
        outputs["stem"] = x
        for name in ("dark2", "dark3", "dark4", "dark5"):
            x = getattr(self, name)(x)
            outputs[name] = x
        return {k: v for k, v in outputs.items() if k in self.out_features}
