"""SimOTA batched over images in pure PyTorch: the backend that runs anywhere and compiles.

No per-image or per-GT Python loop, no host sync, fixed-size outputs: ``torch.compile(fullgraph=True)``
traces it. The classification cost uses the per-anchor BCE-sum identity of docs/design.md,

    sum_c BCE(p[u, c], onehot(class_g)[c]) = S_u - L1(p[u, class_g]) + Lp(p[u, class_g]),

so the memory grows as O(B x G x A) (plus the O(B x A x C) scores themselves), never O(G x A x C).
Candidate tests, IoUs and dynamic k repeat the reference's float32 operations exactly; the cost
differs from the reference by the rounding of the identity (~1e-6 relative), which only matters at
near-ties.

Ties follow the reference (lowest anchor index first among equal costs, lowest GT index wins a
contested anchor): the k cheapest anchors of a GT are those strictly below the k-th smallest cost plus
the first equal ones in anchor order (``topk`` alone leaves the order among equal values unspecified).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .simota_variant import SimOTAVariant

__all__ = ["simota_assign_torch"]

MAX_TOP = 10  # the top-10 IoUs give dynamic k, so no GT ever takes more than 10 anchors


def simota_assign_torch(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    obj_logits: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_mask: torch.Tensor,
    variant: SimOTAVariant,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA for a padded batch, all images at once.

    Args:
        pred_boxes: ``[B, A, 4]`` predicted cx, cy, w, h in input pixels (any float dtype).
        cls_logits: ``[B, A, C]`` raw class logits.
        obj_logits: ``[B, A, 1]`` (or ``[B, A]``) raw objectness logits.
        grids: ``[A, 2]`` grid-cell x, y; strides: ``[A]``.
        gt_boxes: ``[B, G, 4]`` cx, cy, w, h; gt_classes: ``[B, G]`` int; gt_mask: ``[B, G]`` bool.
        variant: radius, candidate rule and penalty (:mod:`yolox_fast.ops.simota_variant`).

    Returns:
        ``fg_mask [B, A]`` bool, ``matched_gt [B, A]`` int64 (index into G, -1 background),
        ``matched_iou [B, A]`` float32 (0 background).
    """
    center_radius, center_only, penalty = variant.op_args()
    b, a = pred_boxes.shape[:2]
    g = gt_boxes.shape[1]
    device = pred_boxes.device
    if g == 0 or a == 0 or b == 0:
        return (
            torch.zeros((b, a), dtype=torch.bool, device=device),
            torch.full((b, a), -1, dtype=torch.long, device=device),
            torch.zeros((b, a), dtype=torch.float32, device=device),
        )

    with torch.autocast(device_type=device.type, enabled=False):
        valid = gt_mask[:, :, None]  # [B, G, 1]
        centers = (grids.float() + 0.5) * strides.float()[:, None]  # [A, 2], as reference.anchor_centers
        x = centers[None, None, :, 0]  # [1, 1, A]
        y = centers[None, None, :, 1]
        gt = gt_boxes.float()
        cx, cy, w, h = (gt[:, :, i : i + 1] for i in range(4))  # each [B, G, 1]

        # Candidate tests, as reference.candidate_masks ("min of four deltas > 0" == "all four > 0").
        radius = center_radius * strides.float()[None, None, :]  # [1, 1, A]
        in_center = (x - (cx - radius) > 0) & (y - (cy - radius) > 0) & ((cx + radius) - x > 0) & (
            (cy + radius) - y > 0
        )
        in_center &= valid
        if center_only:
            geometry = in_center
            candidate = in_center.any(dim=1)  # [B, A]
        else:
            in_box = (x - (cx - 0.5 * w) > 0) & (y - (cy - 0.5 * h) > 0) & ((cx + 0.5 * w) - x > 0) & (
                (cy + 0.5 * h) - y > 0
            )
            in_box &= valid
            candidate = (in_box | in_center).any(dim=1)
            geometry = in_box & in_center
            del in_box
        pair_ok = valid & candidate[:, None, :]  # [B, G, A]: a real GT and a candidate anchor

        # IoU of every (GT, anchor), as reference.pairwise_iou(gt, pred, "cxcywh").
        pb = pred_boxes.float()
        px, py, pw, ph = (pb[:, None, :, i] for i in range(4))  # each [B, 1, A]
        tlx = torch.maximum(cx - w / 2, px - pw / 2)
        tly = torch.maximum(cy - h / 2, py - ph / 2)
        brx = torch.minimum(cx + w / 2, px + pw / 2)
        bry = torch.minimum(cy + h / 2, py + ph / 2)
        overlap = (tlx < brx) & (tly < bry)
        inter = (brx - tlx) * (bry - tly) * overlap
        del tlx, tly, brx, bry, overlap
        union = w * h + pw * ph - inter
        iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))
        del inter, union

        # dynamic k: the <= 10 largest candidate IoUs (zeros elsewhere do not change the sum), summed
        # in float32 from the largest down.
        n_top = min(MAX_TOP, a)
        top = torch.topk(torch.where(pair_ok, iou, torch.zeros_like(iou)), n_top, dim=2).values
        iou_sum = top[:, :, 0]
        for j in range(1, n_top):  # fixed order: the documented float32 summation
            iou_sum = iou_sum + top[:, :, j]
        ks = torch.where(gt_mask, iou_sum.int().clamp(min=1), 0)  # [B, G], 0 for padding

        # Classification cost through the per-anchor BCE sum.
        p = (cls_logits.float().sigmoid() * obj_logits.float().reshape(b, a, 1).sigmoid()).sqrt()  # [B, A, C]
        s_u = F.binary_cross_entropy(p, torch.zeros_like(p), reduction="none").sum(-1)  # [B, A]
        # padding rows may hold any class id; a real GT's must be valid (gather checks it)
        idx = torch.where(gt_mask, gt_classes.long(), 0)[:, None, :].expand(b, a, g)
        p_g = torch.gather(p, 2, idx).transpose(1, 2)  # [B, G, A]
        del p
        l1 = -(torch.log1p(-p_g).clamp(min=-100.0))
        lp = -(torch.log(p_g).clamp(min=-100.0))
        cls_cost = (s_u[:, None, :] - l1) + lp
        del p_g, l1, lp
        cost = (cls_cost + 3.0 * (-torch.log(iou + 1e-8))) + penalty * (~geometry).float()
        del cls_cost
        cost = torch.where(pair_ok, cost, torch.full_like(cost, float("inf")))

        # The k cheapest anchors of each GT, lowest anchor index first among equal costs.
        kth = torch.gather(torch.topk(cost, n_top, dim=2, largest=False).values, 2, (ks - 1).clamp(min=0)[:, :, None])
        below = cost < kth
        equal = cost == kth
        n_below = below.sum(dim=2, keepdim=True, dtype=torch.int32)
        rank_equal = equal.to(torch.int32).cumsum(dim=2, dtype=torch.int32)
        take = (below | (equal & (rank_equal <= ks[:, :, None] - n_below))) & pair_ok & (ks[:, :, None] > 0)
        del below, equal, rank_equal

        # A contested anchor goes to the GT of lowest cost over ALL GTs (argmin: first index on ties).
        takers = take.sum(dim=1)  # [B, A]
        first = take.to(torch.uint8).argmax(dim=1)
        best = cost.argmin(dim=1)
        fg = takers > 0
        matched = torch.where(takers > 1, best, first)
        matched_iou = torch.gather(iou, 1, matched[:, None, :]).squeeze(1)
        return (
            fg,
            torch.where(fg, matched, torch.full_like(matched, -1)),
            torch.where(fg, matched_iou, torch.zeros_like(matched_iou)),
        )
