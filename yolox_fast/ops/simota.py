"""SimOTA assignment: the dispatching wrapper over the backends.

Every backend takes the same padded batch and returns ``(fg_mask [B, A] bool, matched_gt [B, A]
int64, matched_iou [B, A] float32)``; see :meth:`yolox_fast.SimOTAAssigner.assign` for the formats.
"""

from __future__ import annotations

import torch

from . import backends, reference
from .reference import SimOTAVariant

OP = "simota_assign"


@backends.register(OP, "reference", backends.always)
def _simota_reference(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask, variant):
    return reference.simota_assign(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes,
                                   gt_mask, variant)


def simota_assign(pred_boxes: torch.Tensor, cls_logits: torch.Tensor, obj_logits: torch.Tensor,
                  grids: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                  gt_mask: torch.Tensor, variant: SimOTAVariant = reference.SEED, backend: str | None = None):
    """Run SimOTA on a padded batch with the chosen (or best available) backend."""
    _, impl = backends.choose(OP, pred_boxes.device, backend)
    return impl(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask, variant)
