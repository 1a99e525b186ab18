"""PAFPN, the YOLOX neck: a top-down then bottom-up path over the backbone's three outputs."""

from __future__ import annotations

import torch
from torch import nn

from .darknet import CSPDarknet
from .network_blocks import BaseConv, CSPLayer, DWConv


class YOLOPAFPN(nn.Module):
    """CSPDarknet plus the path-aggregation neck (the official ``YOLOPAFPN``; it owns the backbone).

    ``forward(x [B, 3, H, W])`` returns ``(P3 [B, c0, H/8, W/8], P4 [B, c1, H/16, W/16],
    P5 [B, c2, H/32, W/32])`` with ``c_i = in_channels[i] * width``.
    """

    def __init__(self, depth: float = 1.0, width: float = 1.0, in_features=("dark3", "dark4", "dark5"),
                 in_channels=(256, 512, 1024), depthwise: bool = False, act: str = "silu"):
        super().__init__()
        self.backbone = CSPDarknet(depth, width, depthwise=depthwise, act=act)
        self.in_features = tuple(in_features)
        self.in_channels = tuple(in_channels)
        conv = DWConv if depthwise else BaseConv
        c0, c1, c2 = (int(c * width) for c in in_channels)
        n = round(3 * depth)

        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c2, c1, 1, 1, act=act)
        self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise=depthwise, act=act)
        self.reduce_conv1 = BaseConv(c1, c0, 1, 1, act=act)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise=depthwise, act=act)
        self.bu_conv2 = conv(c0, c0, 3, 2, act=act)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise=depthwise, act=act)
        self.bu_conv1 = conv(c1, c1, 3, 2, act=act)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise=depthwise, act=act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        x2, x1, x0 = (features[f] for f in self.in_features)

        fpn_out0 = self.lateral_conv0(x0)  # stride 32, c1
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))  # stride 16, c1
        fpn_out1 = self.reduce_conv1(f_out0)  # stride 16, c0
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))  # stride 8, c0

        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))  # stride 16, c1
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))  # stride 32, c2
        return pan_out2, pan_out1, pan_out0
