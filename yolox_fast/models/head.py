"""The decoupled, anchor-free YOLOX head."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.anchors import anchor_grid
from ..ops.box_coding import decode_boxes
from .losses import YOLOXLoss
from .network_blocks import BaseConv, DWConv


class YOLOXHead(nn.Module):
    """Per level: a 1x1 stem, then two 3x3 convs to a class branch and two to a box/objectness branch.

    Args:
        num_classes: C.
        width: width multiplier (the branches have ``256 * width`` channels).
        strides: stride of each input level.
        in_channels: channels of each input level before ``width``.
        act: activation name.
        depthwise: depthwise-separable 3x3 convs (YOLOX-Nano).
        assigner: label assigner for the training loss; defaults to the seed-variant
            :class:`yolox_fast.SimOTAAssigner`.

    In eval mode ``forward`` returns ``[B, A, 5 + C]`` decoded cx, cy, w, h (input pixels), sigmoid
    objectness and sigmoid class scores (``decode_in_inference=False`` leaves the boxes raw). In train
    mode it takes ``labels [B, N, 5]`` and returns the loss dict of :class:`YOLOXLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        strides=(8, 16, 32),
        in_channels=(256, 512, 1024),
        act: str = "silu",
        depthwise: bool = False,
        assigner=None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.decode_in_inference = True
        conv = DWConv if depthwise else BaseConv
        hidden = int(256 * width)

        self.stems = nn.ModuleList()
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        for c in in_channels:
            self.stems.append(BaseConv(int(c * width), hidden, 1, 1, act=act))
            self.cls_convs.append(
                nn.Sequential(conv(hidden, hidden, 3, 1, act=act), conv(hidden, hidden, 3, 1, act=act))
            )
            self.reg_convs.append(
                nn.Sequential(conv(hidden, hidden, 3, 1, act=act), conv(hidden, hidden, 3, 1, act=act))
            )
            self.cls_preds.append(nn.Conv2d(hidden, num_classes, 1, 1, 0))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1, 1, 0))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1, 1, 0))

        if assigner is None:
            from .assigner import SimOTAAssigner

            assigner = SimOTAAssigner(num_classes)
        self.loss = YOLOXLoss(num_classes, assigner)
        self._grid_cache: dict = {}

    @property
    def use_l1(self) -> bool:
        """Whether the L1 term is on (the official recipe turns it on for the no-aug epochs)."""
        return self.loss.use_l1

    @use_l1.setter
    def use_l1(self, value: bool) -> None:
        self.loss.use_l1 = bool(value)

    def initialize_biases(self, prior_prob: float = 1e-2) -> None:
        """Set class and objectness biases so that the initial sigmoid output is ``prior_prob``."""
        bias = -math.log((1 - prior_prob) / prior_prob)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, bias)

    def grids(self, feature_sizes, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached :func:`yolox_fast.ops.anchors.anchor_grid` for these feature sizes."""
        key = (tuple(feature_sizes), str(device))
        if key not in self._grid_cache:
            self._grid_cache = {key: anchor_grid(feature_sizes, self.strides, device)}
        return self._grid_cache[key]

    def forward_raw(self, features) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Raw head output ``[B, A, 5 + C]`` (box offsets, objectness logit, class logits) and the level sizes."""
        outputs, sizes = [], []
        for k, x in enumerate(features):
            x = self.stems[k](x)
            cls_feat = self.cls_convs[k](x)
            reg_feat = self.reg_convs[k](x)
            out = torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), self.cls_preds[k](cls_feat)], 1)
            sizes.append(tuple(out.shape[-2:]))
            # [B, 5 + C, H, W] -> [B, H * W, 5 + C]: a free view in channels_last, one copy otherwise.
            outputs.append(out.permute(0, 2, 3, 1).reshape(out.shape[0], -1, out.shape[1]))
        return torch.cat(outputs, dim=1), sizes

    def forward(self, features, labels: torch.Tensor | None = None):
        raw, sizes = self.forward_raw(features)
        grids, strides = self.grids(sizes, raw.device)
        if self.training:
            if labels is None:
                raise ValueError("the model is in train mode: forward(images, targets) needs targets [B, N, 5]")
            return self.loss(raw, grids, strides, labels)
        scores = raw[..., 4:].sigmoid()
        boxes = decode_boxes(raw[..., :4], grids, strides) if self.decode_in_inference else raw[..., :4]
        return torch.cat([boxes, scores], dim=-1)
