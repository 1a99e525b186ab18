"""The YOLOX detector and its official presets."""

from __future__ import annotations

import torch
from torch import nn

from .head import YOLOXHead
from .layout import memory_format
from .network_blocks import BN_EPS, BN_MOMENTUM, BaseConv, Focus
from .pafpn import YOLOPAFPN


class YOLOX(nn.Module):
    """YOLOX = :class:`YOLOPAFPN` (backbone + neck) and :class:`YOLOXHead`.

    ``model.eval()(images [B, 3, H, W])`` -> ``[B, A, 5 + C]`` decoded predictions;
    ``model.train()(images, targets [B, N, 5])`` -> loss dict. Images are BGR, 0-255, not normalised.
    """

    def __init__(self, backbone: YOLOPAFPN, head: YOLOXHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        #: the layout the network runs in (see :mod:`yolox_fast.models.layout`); when True inputs are converted.
        self.channels_last = False

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def set_channels_last(self, enabled: bool) -> YOLOX:
        """Put weights and activations in ``channels_last`` (NHWC) or back to contiguous (NCHW); returns self."""
        self.channels_last = bool(enabled)
        return self.to(memory_format=memory_format(self.channels_last))

    def set_cpu_fusions(self, enabled: bool) -> YOLOX:
        """Switch the CPU rewrites of the official modules on (the default) or off; returns self.

        * BatchNorm + SiLU of every SiLU :class:`BaseConv` as one op in CPU float32 channels_last training
          (:func:`yolox_fast.ops.batchnorm_silu.batch_norm_silu`);
        * the :class:`Focus` stem as one strided convolution on the CPU.

        Neither changes the parameters or, beyond float32 rounding, the results; False runs the official
        modules everywhere (what the benchmarks' official-style step does).
        """
        for module in self.modules():
            if isinstance(module, BaseConv):
                module.fuse_bn_silu = bool(enabled) and isinstance(module.act, nn.SiLU)
            elif isinstance(module, Focus):
                module.as_strided_conv = bool(enabled)
        return self

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(x.shape)}")
        if self.channels_last:  # no copy when the batch already is; other inputs keep their layout
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(x), targets)


#: depth, width, depthwise, default input size of the official experiments.
PRESETS: dict[str, dict] = {
    "yolox-nano": {"depth": 0.33, "width": 0.25, "depthwise": True, "input_size": 416, "mixup": False},
    "yolox-tiny": {"depth": 0.33, "width": 0.375, "depthwise": False, "input_size": 416, "mixup": False},
    "yolox-s": {"depth": 0.33, "width": 0.50, "depthwise": False, "input_size": 640, "mixup": True},
    "yolox-m": {"depth": 0.67, "width": 0.75, "depthwise": False, "input_size": 640, "mixup": True},
    "yolox-l": {"depth": 1.0, "width": 1.0, "depthwise": False, "input_size": 640, "mixup": True},
    "yolox-x": {"depth": 1.33, "width": 1.25, "depthwise": False, "input_size": 640, "mixup": True},
}


def canonical_name(name: str) -> str:
    """``"yolox_s"``, ``"YOLOX-S"``, ``"s"`` -> ``"yolox-s"``; unknown names raise ``ValueError``."""
    key = name.lower().replace("_", "-")
    if not key.startswith("yolox-"):
        key = "yolox-" + key
    if key not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    return key


def build_yolox(name: str = "yolox-s", num_classes: int = 80, act: str = "silu", assigner=None) -> YOLOX:
    """Build an official YOLOX preset, initialised as the official recipe does.

    Args:
        name: ``yolox-nano``, ``-tiny``, ``-s``, ``-m``, ``-l`` or ``-x``.
        num_classes: size of the class head.
        act: activation.
        assigner: label assigner for training (default: seed-variant ``SimOTAAssigner``).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    cfg = PRESETS[canonical_name(name)]
    in_channels = (256, 512, 1024)
    backbone = YOLOPAFPN(cfg["depth"], cfg["width"], in_channels=in_channels, depthwise=cfg["depthwise"], act=act)
    head = YOLOXHead(num_classes, cfg["width"], in_channels=in_channels, depthwise=cfg["depthwise"], act=act,
                     assigner=assigner)
    model = YOLOX(backbone, head)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = BN_EPS, BN_MOMENTUM
    head.initialize_biases(1e-2)
    return model
