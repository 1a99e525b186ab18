"""The YOLOX training loss: IoU, objectness, classification and (no-aug epochs) L1 terms.

Fixed shapes throughout: every term is computed for all ``B x A`` anchors and summed with the
foreground mask as a weight, so the loss has no boolean indexing, no ``nonzero`` and no ``.item()``.
On a GPU each of those is a host sync that stops the CPU from queueing the backward pass; without
them the loss (with the assigner op) also compiles with ``torch.compile(fullgraph=True)``. The
values equal the official per-image loss (:func:`yolox_fast.ops.reference.yolox_loss`) up to the
order of the float sums (tested to 1e-6 relative). The objectness term covers all anchors; the
others run on a fixed-size gather of at most ``10 x G`` anchors per image that holds every foreground one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.box_coding import decode_boxes, encode_boxes
from ..ops.simota_batch import SimOTABatch


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Official ``IOUloss(reduction="none", loss_type="iou")``.

    ``1 - IoU^2`` of ``[..., 4]`` cx, cy, w, h pairs -> ``[...]``.
    """
    tl = torch.max(pred[..., :2] - pred[..., 2:] / 2, target[..., :2] - target[..., 2:] / 2)
    br = torch.min(pred[..., :2] + pred[..., 2:] / 2, target[..., :2] + target[..., 2:] / 2)
    area_p = torch.prod(pred[..., 2:], -1)
    area_g = torch.prod(target[..., 2:], -1)
    en = (tl < br).to(tl.dtype).prod(dim=-1)
    area_i = torch.prod(br - tl, -1) * en
    iou = area_i / (area_p + area_g - area_i + 1e-16)
    return 1 - iou**2


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
            raw: ``[B, A, 5 + C]`` raw head output (box offsets, objectness logit, class logits); any float
                dtype (the loss is computed in float32, as under the official autocast rules for BCE).
            grids: ``[A, 2]`` grid cells; strides: ``[A]``.
            labels: ``[B, N, 5]`` class, cx, cy, w, h in input pixels; all-zero rows are padding.

        Returns:
            ``total_loss``, ``iou_loss`` (already times ``reg_weight``), ``l1_loss``, ``conf_loss``,
            ``cls_loss`` (each divided by ``max(num_fg, 1)``) and ``num_fg`` (fg anchors per GT), all
            0-d float32 tensors on the input device.
        """
        if labels.dim() != 3 or labels.shape[0] != raw.shape[0] or labels.shape[-1] != 5:
            raise ValueError(
                f"targets must be [B={raw.shape[0]}, N, 5] (class, cx, cy, w, h), got {tuple(labels.shape)}"
            )
        raw = raw.float()
        pred_boxes = decode_boxes(raw[..., :4], grids, strides)  # [B, A, 4]
        obj_logits = raw[..., 4:5]
        cls_logits = raw[..., 5:]

        gt_mask = (labels != 0).any(dim=-1)
        gt_classes = labels[..., 0].long()
        gt_boxes = labels[..., 1:5].float()
        batch = SimOTABatch(pred_boxes.detach(), cls_logits.detach(), obj_logits.detach(), grids, strides, gt_boxes,
                            gt_classes.masked_fill(~gt_mask, 0), gt_mask)
        with torch.no_grad():
            res = self.assigner.assign(*batch)
        fg = res.fg_mask  # [B, A]
        num_fg = res.num_fg.sum().clamp(min=1).to(torch.float32)
        loss_obj = F.binary_cross_entropy_with_logits(obj_logits, fg[..., None].to(raw.dtype), reduction="sum") / num_fg

        # The other terms only concern foreground anchors. SimOTA gives each GT at most 10 anchors (dynamic
        # k = int(sum of at most 10 IoUs) <= 10), so an image has at most 10 G of them: take the K =
        # min(A, 10 G) anchors of highest fg flag (every fg anchor, then background as filler) with a
        # fixed-size top-k and gather their rows. Fixed shapes, no host sync, and the class BCE runs on
        # B x K x C elements instead of B x A x C (nano 416 batch 8: 52 -> 6 ms on one CPU thread).
        matched = res.matched_gt.clamp(min=0)  # background anchors point at GT 0; masked out below
        matched_iou = res.matched_iou
        num_anchors, k = raw.shape[1], min(raw.shape[1], 10 * labels.shape[1])
        if k < num_anchors:
            rows = torch.topk(fg.to(raw.dtype), k, dim=1, sorted=False).indices  # [B, K]
            fg, matched, matched_iou = (torch.gather(t, 1, rows) for t in (fg, matched, matched_iou))
            raw = torch.gather(raw, 1, rows[..., None].expand(-1, -1, raw.shape[-1]))
            pred_boxes = torch.gather(pred_boxes, 1, rows[..., None].expand(-1, -1, 4))
            grids, strides = grids[rows], strides[rows]  # [B, K, 2], [B, K]

        # Targets of every kept anchor: its matched GT's box and class (meaningless, but finite, for background).
        reg_target = torch.gather(gt_boxes, 1, matched[..., None].expand(-1, -1, 4))  # [B, K, 4]
        cls_ids = torch.gather(gt_classes, 1, matched)  # [B, K]
        # One-hot by comparison: F.one_hot checks the ids' range with a host sync on the CPU.
        onehot = cls_ids[..., None] == torch.arange(self.num_classes, device=raw.device)
        cls_target = onehot.to(raw.dtype) * matched_iou[..., None].to(raw.dtype)  # [B, K, C]

        # torch.where, not a multiplication by the mask: a background term that is inf or NaN stays out.
        zero = raw.new_zeros(())
        loss_iou = torch.where(fg, iou_loss(pred_boxes, reg_target), zero).sum() / num_fg
        cls_terms = F.binary_cross_entropy_with_logits(raw[..., 5:], cls_target, reduction="none")
        loss_cls = torch.where(fg[..., None], cls_terms, zero).sum() / num_fg
        if self.use_l1:
            l1_terms = F.l1_loss(raw[..., :4], encode_boxes(reg_target, grids, strides), reduction="none")
            loss_l1 = torch.where(fg[..., None], l1_terms, zero).sum() / num_fg
        else:
            loss_l1 = zero

        total = self.reg_weight * loss_iou + loss_obj + loss_cls + loss_l1
        return {
            "total_loss": total,
            "iou_loss": self.reg_weight * loss_iou,
            "l1_loss": loss_l1,
            "conf_loss": loss_obj,
            "cls_loss": loss_cls,
            "num_fg": res.num_fg.sum().float() / gt_mask.sum().clamp(min=1),
        }
