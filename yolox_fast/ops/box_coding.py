"""The head's box coding: raw offsets <-> boxes in input pixels, relative to the anchor grid; box formats.

The one definition of both directions, of the decode of a whole head output and of the cx, cy, w, h ->
corners conversion, used by the head (inference decoding), the training loss (predicted boxes, L1
targets), the postprocess backends, the ONNX export and runtime, and the readable specification
(:mod:`yolox_fast.ops.reference`, which imports them from here).

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


def decode_outputs(raw: torch.Tensor, grids: torch.Tensor, strides: torch.Tensor, sigmoid: bool = True) -> torch.Tensor:
    """Decode the head's raw output ``[B, A, 5 + C]`` into boxes and scores ``[B, A, 5 + C]`` (a new tensor).

    Boxes by :func:`decode_boxes` (cx, cy, w, h in input pixels); objectness and class logits go through a
    sigmoid unless ``sigmoid=False`` (the model's eval forward already applied it).
    """
    scores = raw[..., 4:].sigmoid() if sigmoid else raw[..., 4:]
    return torch.cat([decode_boxes(raw[..., :4], grids, strides), scores], dim=-1)


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` cx, cy, w, h -> ``[..., 4]`` x1, y1, x2, y2 (a new tensor)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)
