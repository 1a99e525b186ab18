"""The readable pure-PyTorch specification of every hot path.

Everything here follows the official YOLOX source step by step (docs/design.md states the semantics), image by
image, so that it can be read next to the paper. Every fast backend (C++ CPU, CUDA, Triton, batched
torch) is tested against these functions. Nothing here is tuned for speed.

Conventions used throughout:

* boxes are float tensors ``[..., 4]``; ``cxcywh`` means centre x, centre y, width, height in input
  pixels, ``xyxy`` means corners;
* an anchor is one cell of one feature map; its centre is ``(grid + 0.5) * stride``;
* anchors are ordered stride 8, then 16, then 32, each map row-major.

Decisions the official code leaves open, fixed here and followed by every backend:

* **IoU of two empty boxes** (union 0) is 0, not NaN.
* **Ties in dynamic-k matching**: among anchors of equal cost the one with the lowest anchor index is
  taken first; among GTs of equal cost for a contested anchor the lowest GT index wins.
* **dynamic k** is ``max(1, int(s))`` where ``s`` is the float32 sum of the ``min(10, U)`` largest IoUs
  of the GT, added one after the other from the largest down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The box coding and the decode are shared with production code, so they are defined once, in box_coding:
# decode_outputs (xy = (t_xy + grid) * stride, wh = exp(t_wh) * stride, sigmoid of the scores) and
# box_cxcywh_to_xyxy (c -/+ wh / 2) are part of this specification as imported.
from .box_coding import box_cxcywh_to_xyxy, decode_boxes, decode_outputs, encode_boxes
from .simota_variant import SEED, SimOTAVariant

__all__ = [
    "box_cxcywh_to_xyxy",
    "pairwise_iou",
    "anchor_centers",
    "candidate_masks",
    "simota_cost",
    "dynamic_k_matching",
    "simota_assign_image",
    "simota_assign",
    "loss_targets_image",
    "yolox_loss",
    "decode_outputs",
    "nms",
    "batched_nms",
    "postprocess",
]


# --------------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------------


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, fmt: str = "cxcywh") -> torch.Tensor:
    """IoU of every box in ``boxes1 [N, 4]`` with every box in ``boxes2 [M, 4]`` -> ``[N, M]``.

    The official ``bboxes_iou``: the intersection counts only when its top-left lies strictly above
    and left of its bottom-right. A union that is not positive (two empty boxes, negative sizes, NaN)
    gives IoU 0 instead of NaN. Computed in the promoted dtype of the inputs, float16 and bfloat16 in
    float32 (rounded once at the end: a 300 x 300 box's area already overflows float16).
    """
    if fmt not in ("cxcywh", "xyxy"):
        raise ValueError(f"fmt must be 'cxcywh' or 'xyxy', got {fmt!r}")
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    if out_dtype in (torch.float16, torch.bfloat16):
        return pairwise_iou(boxes1.float(), boxes2.float(), fmt).to(out_dtype)
    if fmt == "xyxy":
        tl = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
        br = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
        area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
        area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    else:
        tl = torch.max(boxes1[:, None, :2] - boxes1[:, None, 2:] / 2, boxes2[None, :, :2] - boxes2[None, :, 2:] / 2)
        br = torch.min(boxes1[:, None, :2] + boxes1[:, None, 2:] / 2, boxes2[None, :, :2] + boxes2[None, :, 2:] / 2)
        area1 = boxes1[:, 2] * boxes1[:, 3]
        area2 = boxes2[:, 2] * boxes2[:, 3]
    overlaps = (tl < br).all(dim=2)
    inter = (br - tl).prod(dim=2) * overlaps
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


# --------------------------------------------------------------------------------------------------
# SimOTA, one image at a time
# --------------------------------------------------------------------------------------------------


def anchor_centers(grids: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Anchor centres in input pixels: ``(grids [A, 2] + 0.5) * strides [A]`` -> ``[A, 2]`` (x, y)."""
    return (grids.float() + 0.5) * strides.float()[:, None]


def candidate_masks(
    gt_boxes: torch.Tensor,
    centers: torch.Tensor,
    strides: torch.Tensor,
    variant: SimOTAVariant,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre prior of SimOTA for one image.

    Args:
        gt_boxes: ``[G, 4]`` cx, cy, w, h.
        centers: ``[A, 2]`` anchor centres (see :func:`anchor_centers`).
        strides: ``[A]`` stride of each anchor.
        variant: its ``center_radius`` (half side of the centre square in strides) and ``candidates`` rule
            (see :mod:`yolox_fast.ops.simota_variant`).

    Returns:
        ``candidate [A]`` bool: the anchors SimOTA considers at all;
        ``geometry [G, A]`` bool: pairs that escape the cost penalty
        (in box AND in centre square for the seed, in centre square for ``center``).
    """
    gt = gt_boxes.float()
    x = centers[None, :, 0]  # [1, A]
    y = centers[None, :, 1]
    cx, cy, w, h = (gt[:, i : i + 1] for i in range(4))  # each [G, 1]

    # Inside the GT box: all four distances strictly positive.
    box_deltas = torch.stack([x - (cx - 0.5 * w), y - (cy - 0.5 * h), (cx + 0.5 * w) - x, (cy + 0.5 * h) - y], 2)
    in_box = box_deltas.min(dim=-1).values > 0.0  # [G, A]

    # Inside the square of half side center_radius * stride around the GT centre.
    radius = variant.center_radius * strides.float()[None, :]  # [1, A]
    center_deltas = torch.stack([x - (cx - radius), y - (cy - radius), (cx + radius) - x, (cy + radius) - y], 2)
    in_center = center_deltas.min(dim=-1).values > 0.0  # [G, A]

    if variant.center_only:
        candidate = in_center.any(dim=0)
        geometry = in_center
    else:
        candidate = in_box.any(dim=0) | in_center.any(dim=0)
        geometry = in_box & in_center
    return candidate, geometry


def simota_cost(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    obj_logits: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    geometry: torch.Tensor,
    penalty: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost and IoU of every (GT, candidate anchor) pair, as the official head computes them.

    Args:
        pred_boxes: ``[U, 4]`` predicted cx, cy, w, h of the U candidate anchors.
        cls_logits: ``[U, C]`` raw class logits.
        obj_logits: ``[U, 1]`` or ``[U]`` raw objectness logits.
        gt_boxes: ``[G, 4]`` cx, cy, w, h.
        gt_classes: ``[G]`` integer class ids in ``[0, C)``.
        geometry: ``[G, U]`` bool, pairs that escape the penalty.
        penalty: the variant's penalty (:mod:`yolox_fast.ops.simota_variant`).

    Returns:
        ``cost [G, U]`` float32 and ``iou [G, U]`` float32.

    Builds the ``[G, U, C]`` tensor exactly like the official code: readable, and the reason the
    official code runs out of memory. The fast paths use the per-anchor BCE sum instead.
    """
    num_classes = cls_logits.shape[-1]
    iou = pairwise_iou(gt_boxes.float(), pred_boxes.float(), fmt="cxcywh")
    iou_cost = -torch.log(iou + 1e-8)

    with torch.autocast(device_type=cls_logits.device.type, enabled=False):
        obj = obj_logits.float().reshape(-1, 1)
        p = (cls_logits.float().sigmoid() * obj.sigmoid()).sqrt()  # [U, C]
        onehot = F.one_hot(gt_classes.long(), num_classes).float()  # [G, C]
        g, u = geometry.shape
        cls_cost = F.binary_cross_entropy(
            p[None].expand(g, u, num_classes), onehot[:, None].expand(g, u, num_classes), reduction="none"
        ).sum(-1)

    cost = cls_cost + 3.0 * iou_cost + penalty * (~geometry).float()
    return cost, iou


def dynamic_k_matching(cost: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
    """Dynamic-k matching of SimOTA.

    Args:
        cost: ``[G, U]`` cost of every (GT, candidate) pair.
        iou: ``[G, U]`` IoU of every pair.

    Returns:
        ``matched [U]`` int64: the GT each candidate is assigned to, -1 for background.

    Each GT g takes its ``k_g`` cheapest candidates, ``k_g = max(1, int(sum of its min(10, U) largest
    IoUs))``; a candidate taken by several GTs goes to the GT of lowest cost among ALL GTs. Ties: lowest
    anchor index first, lowest GT index wins (module docstring).
    """
    num_gt, num_cand = cost.shape
    matched = torch.full((num_cand,), -1, dtype=torch.long, device=cost.device)
    if num_gt == 0 or num_cand == 0:
        return matched

    n_top = min(10, num_cand)
    top_ious = torch.topk(iou, n_top, dim=1).values  # [G, n_top], largest first
    iou_sum = torch.zeros(num_gt, dtype=torch.float32, device=iou.device)
    for j in range(n_top):  # sequential float32 sum, largest first: the documented order
        iou_sum = iou_sum + top_ious[:, j].float()
    dynamic_ks = iou_sum.int().clamp(min=1)

    matching = torch.zeros((num_gt, num_cand), dtype=torch.bool, device=cost.device)
    order = torch.sort(cost, dim=1, stable=True).indices  # equal costs keep anchor order
    for g in range(num_gt):
        matching[g, order[g, : int(dynamic_ks[g])]] = True

    takers = matching.sum(0)
    contested = takers > 1
    if contested.any():
        best_gt = _argmin_first(cost[:, contested])  # lowest GT index on ties
        matching[:, contested] = False
        matching[best_gt, contested.nonzero().squeeze(1)] = True

    fg = matching.any(0)
    matched[fg] = matching[:, fg].float().argmax(0)
    return matched


def _argmin_first(x: torch.Tensor) -> torch.Tensor:
    """Index of the minimum along dim 0, the lowest index on ties (``[G, N]`` -> ``[N]``)."""
    is_min = x == x.min(dim=0, keepdim=True).values
    idx = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(x)
    return torch.where(is_min, idx, torch.full_like(idx, x.shape[0])).min(dim=0).values


def simota_assign_image(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    obj_logits: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    variant: SimOTAVariant = SEED,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA for one image.

    Args:
        pred_boxes: ``[A, 4]`` predicted cx, cy, w, h in pixels.
        cls_logits: ``[A, C]`` raw class logits.
        obj_logits: ``[A, 1]`` raw objectness logits.
        grids: ``[A, 2]`` grid-cell x, y of each anchor.
        strides: ``[A]`` stride of each anchor.
        gt_boxes: ``[G, 4]`` cx, cy, w, h (no padding rows).
        gt_classes: ``[G]`` integer class ids.
        variant: a :class:`~yolox_fast.ops.simota_variant.SimOTAVariant` (default: the seed's).

    Returns:
        ``fg_mask [A]`` bool, ``matched_gt [A]`` int64 (-1 background), ``matched_iou [A]`` float32
        (0 background).
    """
    num_anchors = pred_boxes.shape[0]
    device = pred_boxes.device
    fg_mask = torch.zeros(num_anchors, dtype=torch.bool, device=device)
    matched_gt = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
    matched_iou = torch.zeros(num_anchors, dtype=torch.float32, device=device)
    if gt_boxes.shape[0] == 0:
        return fg_mask, matched_gt, matched_iou

    centers = anchor_centers(grids, strides)
    candidate, geometry = candidate_masks(gt_boxes, centers, strides, variant)
    cand_idx = candidate.nonzero().squeeze(1)
    if cand_idx.numel() == 0:
        return fg_mask, matched_gt, matched_iou

    cost, iou = simota_cost(
        pred_boxes[cand_idx],
        cls_logits[cand_idx],
        obj_logits[cand_idx],
        gt_boxes,
        gt_classes,
        geometry[:, cand_idx],
        variant.penalty,
    )
    matched = dynamic_k_matching(cost, iou)
    fg_cand = matched >= 0
    fg_idx = cand_idx[fg_cand]
    fg_mask[fg_idx] = True
    matched_gt[fg_idx] = matched[fg_cand]
    matched_iou[fg_idx] = iou[matched[fg_cand], fg_cand.nonzero().squeeze(1)]
    return fg_mask, matched_gt, matched_iou


def simota_assign(
    pred_boxes: torch.Tensor,
    cls_logits: torch.Tensor,
    obj_logits: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_mask: torch.Tensor,
    variant: SimOTAVariant = SEED,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA for a padded batch, image by image (the official algorithm, the reference path).

    Shapes: ``pred_boxes [B, A, 4]``, ``cls_logits [B, A, C]``, ``obj_logits [B, A, 1]``,
    ``grids [A, 2]``, ``strides [A]``, ``gt_boxes [B, G, 4]``, ``gt_classes [B, G]``,
    ``gt_mask [B, G]`` (False = padding). Returns ``fg_mask [B, A]``, ``matched_gt [B, A]`` (index
    into the padded G axis, -1 background), ``matched_iou [B, A]``.
    """
    fgs, gts, ious = [], [], []
    for b in range(pred_boxes.shape[0]):
        valid = gt_mask[b].nonzero().squeeze(1)
        fg, matched, iou = simota_assign_image(
            pred_boxes[b],
            cls_logits[b],
            obj_logits[b],
            grids,
            strides,
            gt_boxes[b][valid],
            gt_classes[b][valid],
            variant,
        )
        matched = torch.where(fg, valid[matched.clamp(min=0)] if valid.numel() else matched, matched)
        fgs.append(fg)
        gts.append(matched)
        ious.append(iou)
    return torch.stack(fgs), torch.stack(gts), torch.stack(ious)


# --------------------------------------------------------------------------------------------------
# Loss targets
# --------------------------------------------------------------------------------------------------


def loss_targets_image(
    fg_mask: torch.Tensor,
    matched_gt: torch.Tensor,
    matched_iou: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
    num_classes: int,
) -> dict[str, torch.Tensor]:
    """The official training targets of one image from its assignment.

    Returns a dict with ``cls [F, C]`` (one-hot times IoU with the matched GT), ``reg [F, 4]`` (the
    matched GT cx, cy, w, h), ``obj [A, 1]`` (fg as float) and ``l1 [F, 4]``
    (``x/s - grid_x, y/s - grid_y, log(w/s + 1e-8), log(h/s + 1e-8)``), F = number of fg anchors.
    """
    idx = matched_gt[fg_mask]
    cls = F.one_hot(gt_classes[idx].long(), num_classes).float() * matched_iou[fg_mask, None]
    reg = gt_boxes[idx].float()
    l1 = encode_boxes(reg, grids[fg_mask].float(), strides[fg_mask].float())
    return {"cls": cls, "reg": reg, "obj": fg_mask.float()[:, None], "l1": l1}


def yolox_loss(
    raw: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    use_l1: bool = False,
    variant: SimOTAVariant = SEED,
    reg_weight: float = 5.0,
) -> dict[str, torch.Tensor]:
    """The official YOLOX loss of a batch, image by image (``YOLOXHead.get_losses``).

    Args:
        raw: ``[B, A, 5 + C]`` raw head output (box offsets, objectness logit, class logits).
        grids: ``[A, 2]``; strides: ``[A]``.
        labels: ``[B, N, 5]`` class, cx, cy, w, h in input pixels; all-zero rows are padding.
        num_classes: C.
        use_l1: add the L1 term (the official no-augmentation epochs).
        variant: the SimOTA variant of the assignment.
        reg_weight: weight of the IoU term.

    Returns:
        ``total_loss``, ``iou_loss`` (times ``reg_weight``), ``l1_loss``, ``conf_loss``, ``cls_loss``, each
        summed over the batch's foreground anchors (objectness: all anchors) and divided by
        ``max(num_fg, 1)``, and ``num_fg`` (foreground anchors per GT). The IoU of a matched pair is
        :func:`pairwise_iou` (the official ``IOUloss`` adds ``1e-16`` to the union instead: equal within
        float rounding for real boxes).
    """
    pred_boxes = decode_boxes(raw[..., :4], grids, strides)
    fg_masks, reg_t, cls_t, l1_t = [], [], [], []
    num_gts = 0
    for b in range(raw.shape[0]):
        valid = (labels[b] != 0).any(dim=-1)
        gt_boxes, gt_classes = labels[b][valid, 1:5].float(), labels[b][valid, 0].long()
        num_gts += gt_boxes.shape[0]
        fg, matched, iou = simota_assign_image(
            pred_boxes[b].detach(), raw[b, :, 5:].detach(), raw[b, :, 4:5].detach(), grids, strides, gt_boxes,
            gt_classes, variant,
        )
        targets = loss_targets_image(fg, matched, iou, gt_boxes, gt_classes, grids, strides, num_classes)
        fg_masks.append(fg)
        reg_t.append(targets["reg"])
        cls_t.append(targets["cls"])
        l1_t.append(targets["l1"])
    fg = torch.cat(fg_masks)
    num_fg = max(int(fg.sum()), 1)
    flat = raw.reshape(-1, raw.shape[-1])
    pred = pred_boxes.reshape(-1, 4)[fg]
    reg = torch.cat(reg_t)
    iou = pairwise_iou(pred, reg).diagonal() if len(reg) else pred.new_zeros(0)
    loss_iou = (1 - iou**2).sum() / num_fg
    loss_obj = F.binary_cross_entropy_with_logits(flat[:, 4], fg.to(flat.dtype), reduction="sum") / num_fg
    loss_cls = F.binary_cross_entropy_with_logits(flat[fg, 5:], torch.cat(cls_t), reduction="sum") / num_fg
    loss_l1 = F.l1_loss(flat[fg, :4], torch.cat(l1_t), reduction="sum") / num_fg if use_l1 else flat.new_zeros(())
    return {
        "total_loss": reg_weight * loss_iou + loss_obj + loss_cls + loss_l1,
        "iou_loss": reg_weight * loss_iou,
        "l1_loss": loss_l1,
        "conf_loss": loss_obj,
        "cls_loss": loss_cls,
        "num_fg": fg.sum().float() / max(num_gts, 1),
    }


# --------------------------------------------------------------------------------------------------
# Inference: NMS, postprocess (the decode is box_coding.decode_outputs)
# --------------------------------------------------------------------------------------------------


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with torchvision's semantics.

    Args:
        boxes: ``[N, 4]`` x1, y1, x2, y2.
        scores: ``[N]``.
        iou_threshold: a box is suppressed by a kept box when their IoU is strictly greater.

    Returns:
        ``keep`` int64 indices into ``boxes``, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes.float()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        # torchvision: w = max(0, min(x2) - max(x1)), IoU = inter / (area_i + area_j - inter)
        w = (torch.min(b[i, 2], b[:, 2]) - torch.max(b[i, 0], b[:, 0])).clamp(min=0)
        h = (torch.min(b[i, 3], b[:, 3]) - torch.max(b[i, 1], b[:, 1])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area - inter)
        suppressed |= (iou > iou_threshold).cpu()
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each category of ``idxs [N]`` independently (torchvision's semantics, without its offset trick).

    Returns the kept indices by decreasing score, equal scores by index, across categories too (torchvision
    leaves the order of equal scores open).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    keep = []
    for c in torch.unique(idxs).tolist():
        members = (idxs == c).nonzero().squeeze(1)
        keep.append(members[nms(boxes[members], scores[members], iou_threshold)])
    # Index order first, so that the stable sort leaves equal scores in index order across categories too.
    keep = torch.cat(keep).sort().values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def _order_by_score_then_class(keep: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``keep [K]`` indices reordered by decreasing score, equal scores by label, then by index.

    The class-aware postprocess's output order (its rows are anchor-major, so index order is anchor order);
    :func:`batched_nms` itself orders equal scores by index alone.
    """
    keep = keep.sort().values
    keep = keep[torch.sort(labels[keep], stable=True).indices]
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def postprocess(
    prediction: torch.Tensor,
    num_classes: int,
    conf_thre: float = 0.7,
    nms_thre: float = 0.45,
    class_agnostic: bool = False,
) -> list[torch.Tensor | None]:
    """The official YOLOX postprocess, image by image; the input is left untouched.

    Args:
        prediction: ``[B, A, 5 + C]`` decoded cx, cy, w, h, objectness, class scores (the model's
            eval output).
        num_classes: C.
        conf_thre: keep a box when ``obj * max class score >= conf_thre``.
        nms_thre: IoU above which a lower-scored box is suppressed.
        class_agnostic: one NMS over all classes instead of one per class.

    Returns:
        One entry per image: ``[n, 7]`` rows ``(x1, y1, x2, y2, obj, cls_conf, cls_id)`` by decreasing
        score, or ``None`` when nothing is left.
    """
    output: list[torch.Tensor | None] = [None] * prediction.shape[0]
    for i, image_pred in enumerate(prediction):
        if image_pred.shape[0] == 0:
            continue
        boxes = box_cxcywh_to_xyxy(image_pred[:, :4])
        class_conf, class_pred = torch.max(image_pred[:, 5 : 5 + num_classes], 1, keepdim=True)
        conf_mask = image_pred[:, 4] * class_conf.squeeze(1) >= conf_thre
        detections = torch.cat((boxes, image_pred[:, 4:5], class_conf, class_pred.to(image_pred.dtype)), 1)
        detections = detections[conf_mask]
        if detections.shape[0] == 0:
            continue
        score = detections[:, 4] * detections[:, 5]
        if class_agnostic:
            keep = nms(detections[:, :4], score, nms_thre)
        else:
            keep = batched_nms(detections[:, :4], score, detections[:, 6], nms_thre)
            keep = _order_by_score_then_class(keep, score, detections[:, 6])
        output[i] = detections[keep]
    return output
