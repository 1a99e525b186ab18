"""The head's box coding: raw offsets <-> boxes in input pixels, relative to the anchor grid.

The one definition of both directions, used by the head (inference decoding), the training loss
(predicted boxes, L1 targets) and the reference (:mod:`yolox_fast.ops.reference`).

Anchor ``a`` has grid cell ``grids[a] = (gx, gy)`` and stride ``s = strides[a]``; a box is
``(cx, cy, w, h)`` in input pixels; the raw offsets are ``(tx, ty, tw, th)`` with

* decode: ``cx = (tx + gx) * s``, ``cy = (ty + gy) * s``, ``w = exp(tw) * s``, ``h = exp(th) * s``;
* encode (the official L1 target): ``tx = cx / s - gx``, ``ty = cy / s - gy``, ``tw = log(w / s + 1e-8)``,
  ``th = log(h / s + 1e-8)`` (the ``1e-8`` keeps zero-size boxes finite).
"""

from __future__ import annotations

import torch

#: Added inside the log of the L1 target's width and height (official value).
LOG_EPS = 1e-8


def decode_boxes(offsets: torch.Tensor, grids: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Raw offsets ``[..., A, 4]`` -> boxes ``[..., A, 4]`` cx, cy, w, h in input pixels (a new tensor).

    ``grids [..., A, 2]`` and ``strides [..., A]`` (usually ``[A, 2]`` and ``[A]``) are cast to the dtype of
    ``offsets``.
    """
    s = strides.to(offsets.dtype)[..., None]
    xy = (offsets[..., 0:2] + grids.to(offsets.dtype)) * s
    wh = torch.exp(offsets[..., 2:4]) * s
    return torch.cat([xy, wh], dim=-1)


def encode_boxes(boxes: torch.Tensor, grids: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Boxes ``[..., A, 4]`` cx, cy, w, h -> raw-offset targets ``[..., A, 4]`` (the official L1 target).

    ``grids [..., A, 2]`` and ``strides [..., A]`` are cast to the dtype of ``boxes``.
    """
    s = strides.to(boxes.dtype)[..., None]
    xy = boxes[..., 0:2] / s - grids.to(boxes.dtype)
    wh = torch.log(boxes[..., 2:4] / s + LOG_EPS)
    return torch.cat([xy, wh], dim=-1)
