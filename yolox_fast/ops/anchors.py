"""Anchor points of the three YOLOX feature maps: grid cells and their strides."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

DEFAULT_STRIDES = (8, 16, 32)
#: The largest input side accepted: a 4096 x 4096 float32 image is 200 MB before the first convolution;
#: more is a typo, not a model (issue 18.7).
MAX_INPUT_SIZE = 4096


def check_input_size(size, what: str = "img_size", strides: Sequence[int] = DEFAULT_STRIDES) -> tuple[int, int]:
    """``size`` (one int, or ``(h, w)``) as ``(h, w)``; each side a positive multiple of the largest stride, at
    most :data:`MAX_INPUT_SIZE`.

    The one rule for every network input size (training, evaluation, prediction, export): the coarsest
    feature map must tile the input exactly, so each side is a multiple of ``max(strides)`` (32).

    Raises:
        ValueError: naming ``what`` (the argument or flag) and the size given.
    """
    top = max(strides)
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, Sequence) else ()
    bad = (isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < top or s % top for s in pair)
    shown = " ".join(map(str, size)) if isinstance(size, Sequence) and not isinstance(size, str) else repr(size)
    if len(pair) != 2 or any(bad):
        raise ValueError(f"{what} must be a positive multiple of {top}, got {shown}")
    if max(pair) > MAX_INPUT_SIZE:
        raise ValueError(f"{what} must be at most {MAX_INPUT_SIZE}, got {shown}")
    return int(pair[0]), int(pair[1])


def anchor_grid(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int] = DEFAULT_STRIDES,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cells and strides of every anchor, in the head's output order.

    Args:
        feature_sizes: ``(height, width)`` of each feature map, finest first.
        strides: stride of each feature map.
        device: where to put the result.

    Returns:
        ``grids [A, 2]`` float32 (x, y) cell indices and ``strides [A]`` float32, maps in the given
        order, each row-major (x fastest), ``A = sum(h * w)``.
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(f"got {len(feature_sizes)} feature sizes for {len(strides)} strides")
    grids, expanded = [], []
    for (h, w), s in zip(feature_sizes, strides, strict=False):
        yv, xv = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        grids.append(torch.stack((xv, yv), dim=2).reshape(-1, 2))
        expanded.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(grids).float(), torch.cat(expanded)


def anchor_grid_for_input(
    height: int, width: int, strides: Sequence[int] = DEFAULT_STRIDES, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`anchor_grid` for an input of ``height x width`` pixels (multiples of the largest stride)."""
    check_input_size((height, width), "the input size", strides)
    return anchor_grid([(height // s, width // s) for s in strides], strides, device)
