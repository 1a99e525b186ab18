"""The padded batch SimOTA assigns: its eight tensors, named once.

Every SimOTA entry point (the op ``torch.ops.yolox_fast.simota_assign``, the Triton kernel, the batched
torch path, the reference, :class:`yolox_fast.SimOTAAssigner`) takes these tensors in this order, so a
:class:`SimOTABatch` unpacks into any of them: ``simota_assign(*batch, variant)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SimOTABatch(NamedTuple):
    """The arguments of SimOTA, in the op's order (``csrc/yolox_fast.cpp`` holds the schema).

    Attributes:
        pred_boxes: ``[B, A, 4]`` predicted cx, cy, w, h in input pixels (any float dtype).
        cls_logits: ``[B, A, C]`` raw class logits (the cost is computed in float32).
        obj_logits: ``[B, A, 1]`` raw objectness logits.
        grids: ``[A, 2]`` grid-cell x, y of each anchor.
        strides: ``[A]`` stride of each anchor.
        gt_boxes: ``[B, G, 4]`` cx, cy, w, h in input pixels (G padded to the largest image's count).
        gt_classes: ``[B, G]`` integer class ids in ``[0, C)``.
        gt_mask: ``[B, G]`` bool, False for padding rows.
    """

    pred_boxes: torch.Tensor
    cls_logits: torch.Tensor
    obj_logits: torch.Tensor
    grids: torch.Tensor
    strides: torch.Tensor
    gt_boxes: torch.Tensor
    gt_classes: torch.Tensor
    gt_mask: torch.Tensor

    def to(self, *args, **kwargs) -> SimOTABatch:
        """Every tensor moved with ``.to(*args, **kwargs)`` (a device; a dtype would cast the masks too)."""
        return SimOTABatch(*(t.to(*args, **kwargs) for t in self))
