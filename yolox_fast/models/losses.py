"""The YOLOX training loss: IoU, objectness, classification and (no-aug epochs) L1 terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Official ``IOUloss(reduction="none", loss_type="iou")``.

    ``1 - IoU^2`` of ``[N, 4]`` cx, cy, w, h pairs -> ``[N]``.
    """
    tl = torch.max(pred[:, :2] - pred[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)
    br = torch.min(pred[:, :2] + pred[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
    area_p = torch.prod(pred[:, 2:], 1)
    area_g = torch.prod(target[:, 2:], 1)
    en = (tl < br).to(tl.dtype).prod(dim=1)
    area_i = torch.prod(br - tl, 1) * en
    iou = area_i / (area_p + area_g - area_i + 1e-16)
    return 1 - iou**2


def l1_targets(gt_boxes: torch.Tensor, grids: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Regression targets in the head's raw space.

    ``[N, 4]`` cx, cy, w, h -> ``(x/s - gx, y/s - gy, log(w/s + 1e-8), log(h/s + 1e-8))``.
    """
    s = strides[:, None]
    xy = gt_boxes[:, :2] / s - grids
    wh = torch.log(gt_boxes[:, 2:4] / s + 1e-8)
    return torch.cat([xy, wh], dim=1)


class YOLOXLoss(nn.Module):
    """The official YOLOX loss on a whole batch, with label assignment done by a batched assigner.

    Args:
        num_classes: C.
        assigner: an object with the :class:`yolox_fast.SimOTAAssigner` ``assign`` method.
        reg_weight: weight of the IoU term (5.0 in the official recipe).

    ``use_l1`` is switched on for the last no-augmentation epochs.
    """

    def __init__(self, num_classes: int, assigner, reg_weight: float = 5.0):
        super().__init__()
        self.num_classes = num_classes
        self.assigner = assigner
        self.reg_weight = reg_weight
        self.use_l1 = False

    def forward(
        self, raw: torch.Tensor, grids: torch.Tensor, strides: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Loss of a batch.

        Args:
            raw: ``[B, A, 5 + C]`` raw head output (box offsets, objectness logit, class logits).
            grids: ``[A, 2]`` grid cells; strides: ``[A]``.
            labels: ``[B, N, 5]`` class, cx, cy, w, h in input pixels; all-zero rows are padding.

        Returns:
            ``total_loss``, ``iou_loss`` (already times ``reg_weight``), ``l1_loss``, ``conf_loss``,
            ``cls_loss`` (each divided by ``max(num_fg, 1)``) and ``num_fg`` (fg anchors per GT).
        """
        if labels.dim() != 3 or labels.shape[0] != raw.shape[0] or labels.shape[-1] != 5:
            raise ValueError(
                f"targets must be [B={raw.shape[0]}, N, 5] (class, cx, cy, w, h), got {tuple(labels.shape)}"
            )
        grids = grids.to(raw.dtype)
        strides_ = strides.to(raw.dtype)
        pred_boxes = torch.cat(
            [(raw[..., 0:2] + grids) * strides_[:, None], torch.exp(raw[..., 2:4]) * strides_[:, None]], dim=-1
        )
        obj_logits = raw[..., 4:5]
        cls_logits = raw[..., 5:]

        gt_mask = (labels != 0).any(dim=-1)
        gt_classes = labels[..., 0].long()
        gt_boxes = labels[..., 1:5].float()
        with torch.no_grad():
            res = self.assigner.assign(
                pred_boxes.detach(),
                cls_logits.detach(),
                obj_logits.detach(),
                grids,
                strides,
                gt_boxes,
                gt_classes.masked_fill(~gt_mask, 0),
                gt_mask,
            )
        fg = res.fg_mask
        num_fg = res.num_fg.sum().clamp(min=1).to(torch.float32)
        matched = res.matched_gt.clamp(min=0)

        reg_target = torch.gather(gt_boxes, 1, matched[..., None].expand(-1, -1, 4))[fg]
        cls_ids = torch.gather(gt_classes, 1, matched)[fg]
        cls_target = F.one_hot(cls_ids, self.num_classes).to(raw.dtype) * res.matched_iou[fg][:, None].to(raw.dtype)

        loss_iou = iou_loss(pred_boxes[fg], reg_target).sum() / num_fg
        loss_obj = F.binary_cross_entropy_with_logits(obj_logits, fg[..., None].to(raw.dtype), reduction="sum") / num_fg
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits[fg], cls_target, reduction="sum") / num_fg
        if self.use_l1:
            expand_grid = grids[None].expand(raw.shape[0], -1, -1)[fg]
            expand_stride = strides_[None].expand(raw.shape[0], -1)[fg]
            l1_target = l1_targets(reg_target, expand_grid, expand_stride)
            loss_l1 = F.l1_loss(raw[..., :4][fg], l1_target, reduction="sum") / num_fg
        else:
            loss_l1 = raw.new_zeros(())

        total = self.reg_weight * loss_iou + loss_obj + loss_cls + loss_l1
        return {
            "total_loss": total,
            "iou_loss": self.reg_weight * loss_iou,
            "l1_loss": loss_l1,
            "conf_loss": loss_obj,
            "cls_loss": loss_cls,
            "num_fg": res.num_fg.sum().float() / gt_mask.sum().clamp(min=1),
        }
