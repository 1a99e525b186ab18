"""The building blocks of CSPDarknet and PAFPN, with the official module and parameter names.

Every block keeps the attribute names of the official YOLOX release (``conv``, ``bn``, ``dconv``,
``pconv``, ``conv1``...), since they form the state-dict keys official checkpoints are loaded with.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.batchnorm_silu import batch_norm_silu

#: BatchNorm settings of the official training recipe (``init_yolo``).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def get_activation(name: str = "silu") -> nn.Module:
    """``"silu"``, ``"relu"`` or ``"lrelu"`` (slope 0.1), as the official ``get_activation``."""
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=True)
    raise ValueError(f"unsupported activation {name!r}; use 'silu', 'relu' or 'lrelu'")


class BaseConv(nn.Module):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> activation.

    With a SiLU activation, ``fuse_bn_silu`` (default True; :meth:`YOLOX.set_cpu_fusions` sets it for a
    whole model) lets training on the CPU run BatchNorm + SiLU as one op
    (:func:`yolox_fast.ops.batchnorm_silu.batch_norm_silu`, same values within float32 rounding); other
    devices, dtypes, layouts and eval mode run the modules.
    """

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1, groups: int = 1,
                 bias: bool = False, act: str = "silu"):
        super().__init__()
        pad = (ksize - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, ksize, stride, pad, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = get_activation(act)
        self.fuse_bn_silu = isinstance(self.act, nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize_activate(self.conv(x))

    def normalize_activate(self, y: torch.Tensor) -> torch.Tensor:
        """BatchNorm then the activation, of a conv output ``y [B, C, H, W]`` (fused where it applies)."""
        if self.fuse_bn_silu and self.training:
            return batch_norm_silu(y, self.bn)
        return self.act(self.bn(y))


class DWConv(nn.Module):
    """Depthwise ``ksize`` conv followed by a pointwise 1x1 conv, each a :class:`BaseConv`."""

    def __init__(self, in_channels: int, out_channels: int, ksize: int, stride: int = 1, act: str = "silu"):
        super().__init__()
        self.dconv = BaseConv(in_channels, in_channels, ksize, stride, groups=in_channels, act=act)
        self.pconv = BaseConv(in_channels, out_channels, 1, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


class Bottleneck(nn.Module):
    """1x1 conv to ``expansion * out`` channels, 3x3 conv back, plus the input when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = True, expansion: float = 0.5,
                 depthwise: bool = False, act: str = "silu"):
        super().__init__()
        hidden = int(out_channels * expansion)
        conv = DWConv if depthwise else BaseConv
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv2 = conv(hidden, out_channels, 3, 1, act=act)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (max pools 5, 9, 13, stride 1) between two 1x1 convs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes=(5, 9, 13), activation: str = "silu"):
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=activation)
        self.m = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes])
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1, 1, act=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = torch.cat([x] + [pool(x) for pool in self.m], dim=1)
        return self.conv2(x)


class CSPLayer(nn.Module):
    """Cross-stage-partial block: two 1x1 branches, ``n`` bottlenecks on one, concat, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 1, shortcut: bool = True,
                 expansion: float = 0.5, depthwise: bool = False, act: str = "silu"):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv2 = BaseConv(in_channels, hidden, 1, 1, act=act)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1, 1, act=act)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise, act=act) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels to 4 channels, official order) followed by a :class:`BaseConv`.

    On the CPU the same function runs as one strided convolution on the image: a ``k x k`` stride-``s``
    conv over the space-to-depth channels equals a ``2k x 2k`` stride-``2s`` conv with padding ``k - 1``
    over the pixels, with the kernel rearranged (:func:`space_to_depth_kernel`). Same parameters (official
    checkpoints load as they are), same values within float32 rounding. Why: no strided slices and
    concatenation, and oneDNN's 3-channel first-layer kernels; measured on the dev CPU (one thread,
    forward + backward of the stem conv): yolox-nano 416 B=8 44 -> 27 ms, yolox-s 640 B=4 103 -> 82 ms.
    Other devices and ONNX export keep the official slicing; so does ``as_strided_conv = False``.
    """

    def __init__(self, in_channels: int, out_channels: int, ksize: int = 1, stride: int = 1, act: str = "silu"):
        super().__init__()
        self.conv = BaseConv(in_channels * 4, out_channels, ksize, stride, act=act)
        self.as_strided_conv = True  # the CPU path above; False: the official slicing everywhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv.conv
        on_cpu_even = x.device.type == "cpu" and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0
        if (self.as_strided_conv and on_cpu_even and conv.bias is None and not torch.jit.is_tracing()
                and not torch.onnx.is_in_onnx_export()):
            k, s = conv.kernel_size[0], conv.stride[0]
            y = torch.nn.functional.conv2d(x, space_to_depth_kernel(conv.weight), stride=2 * s, padding=k - 1)
            return self.conv.normalize_activate(y)
        top_left = x[..., ::2, ::2]
        top_right = x[..., ::2, 1::2]
        bot_left = x[..., 1::2, ::2]
        bot_right = x[..., 1::2, 1::2]
        return self.conv(torch.cat((top_left, bot_left, top_right, bot_right), dim=1))


def space_to_depth_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The pixel-space kernel of a conv over Focus's space-to-depth channels.

    ``weight [O, 4 * C, k, k]`` (channel blocks in Focus's order: pixel offsets (dy, dx) = (0, 0), (1, 0),
    (0, 1), (1, 1)) -> ``[O, C, 2k, 2k]`` with ``out[o, c, 2a + dy, 2b + dx] = weight[o, q(dy, dx) * C + c, a, b]``.
    Differentiable: gradients flow back to ``weight``.
    """
    out_channels, s2d_channels, kh, kw = weight.shape
    channels = s2d_channels // 4
    blocks = weight.view(out_channels, 2, 2, channels, kh, kw)  # [O, dx, dy, C, a, b]: q = 2 * dx + dy
    # -> [O, C, a, dy, b, dx] -> [O, C, 2a + dy, 2b + dx]
    return blocks.permute(0, 3, 4, 2, 5, 1).reshape(out_channels, channels, 2 * kh, 2 * kw)
