"""SimOTA in Triton: candidate masks, per-anchor BCE sums, per-GT dynamic-k top-k, conflict resolution.

Four kernels, all launched with fixed grids (no host sync, fixed-size outputs):

1. ``_simota_candidates_kernel`` (image, block of anchors): the candidate flag of every anchor (inside
   some real GT's box or centre square);
2. ``_simota_bce_sum_kernel`` (image, block of anchors): ``S_u = sum_c -max(log1p(-p_c), -100)`` for the
   candidate anchors only (docs/design.md), so no kernel ever holds a [G, A, C] tensor;
3. ``_simota_select_kernel`` (image, GT): one pass over the anchors keeping the 10 largest candidate
   IoUs (-> dynamic k) and the 10 cheapest candidates by (cost, anchor index); the first k are the GT's
   picks, counted per anchor with atomics (count, highest taker);
4. ``_simota_resolve_kernel`` (image, block of anchors): an anchor with several takers goes to the GT
   of lowest cost over ALL real GTs (lowest GT index on ties); writes fg_mask, matched_gt, matched_iou.

Exactness: the candidate tests and IoUs repeat the reference's float32 operations; products that
feed an addition go through ``mul_rn`` (never contracted into an FMA, whatever the launch options: eager
and torch.compile run the same code) and divisions / square roots are IEEE (``div_rn``, ``sqrt_rn``), so
the same anchors pass and IoUs agree bit for bit with the reference. The shared math is in ``_math.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._launch import launch_on, traceable
from ._math import GPU_MATH, half, log, log1p, mul_rn, sigmoid

BLOCK_CAND = 256  # anchors per program, kernels 1 and 4
BLOCK_S_A = 32  # anchors x classes per tile, kernel 2
BLOCK_S_C = 32
BLOCK_SCAN = 512  # anchors per step of a GT's scan, kernel 3
SLOTS = 16  # kept IoUs / cheapest anchors per GT (10 used: k <= 10)
#: empty slot's anchor index. A tl.constexpr object: compiled Triton refuses plain module globals (and
#: `INT_MAX: tl.constexpr = ...` annotations) inside a kernel, although the interpreter accepts them.
INT_MAX = tl.constexpr(2**31 - 1)


# --------------------------------------------------------------------------------------------------
# Shared math (mirrors csrc/common/simota_math.h)
# --------------------------------------------------------------------------------------------------


@triton.jit
def _iou(gx1, gy1, gx2, gy2, garea, px1, py1, px2, py2, parea, GPU: tl.constexpr):
    # box_iou of csrc/common/box_math.h: max/min as ternaries, strict overlap, union 0 -> 0
    tlx = tl.where(gx1 > px1, gx1, px1)
    tly = tl.where(gy1 > py1, gy1, py1)
    brx = tl.where(gx2 < px2, gx2, px2)
    bry = tl.where(gy2 < py2, gy2, py2)
    overlap = (tlx < brx) & (tly < bry)
    inter = tl.where(overlap, mul_rn(brx - tlx, bry - tly, GPU), 0.0)
    uni = (garea + parea) - inter
    return tl.where(uni > 0.0, tl.math.div_rn(inter, tl.where(uni > 0.0, uni, 1.0)), 0.0)


@triton.jit
def _pred_corners(pred_ptr, base, offs, valid, GPU: tl.constexpr):
    cx = tl.load(pred_ptr + base + 4 * offs, mask=valid, other=0.0)
    cy = tl.load(pred_ptr + base + 4 * offs + 1, mask=valid, other=0.0)
    w = tl.load(pred_ptr + base + 4 * offs + 2, mask=valid, other=0.0)
    h = tl.load(pred_ptr + base + 4 * offs + 3, mask=valid, other=0.0)
    return _box_corners(cx, cy, w, h, GPU)


@triton.jit
def _box_corners(cx, cy, w, h, GPU: tl.constexpr):
    # cx - w / 2 (exact halving: w * 0.5 is the same number), area = w * h
    hw = half(w, GPU)
    hh = half(h, GPU)
    return cx - hw, cy - hh, cx + hw, cy + hh, mul_rn(w, h, GPU)


@triton.jit
def _anchors(grids_ptr, strides_ptr, offs, valid, radius_scale, GPU: tl.constexpr):
    gx = tl.load(grids_ptr + 2 * offs, mask=valid, other=0.0)
    gy = tl.load(grids_ptr + 2 * offs + 1, mask=valid, other=0.0)
    st = tl.load(strides_ptr + offs, mask=valid, other=0.0)
    # the centres feed subtractions (the geometry tests): explicit products
    return mul_rn(gx + 0.5, st, GPU), mul_rn(gy + 0.5, st, GPU), mul_rn(st, tl.zeros_like(st) + radius_scale, GPU)


@triton.jit
def _in_center(x, y, r, cx, cy):
    return (x - (cx - r) > 0.0) & (y - (cy - r) > 0.0) & ((cx + r) - x > 0.0) & ((cy + r) - y > 0.0)


@triton.jit
def _in_box(x, y, cx, cy, w, h, GPU: tl.constexpr):
    hw = half(w, GPU)
    hh = half(h, GPU)
    return (x - (cx - hw) > 0.0) & (y - (cy - hh) > 0.0) & ((cx + hw) - x > 0.0) & ((cy + hh) - y > 0.0)


@triton.jit
def _geometry(x, y, r, cx, cy, w, h, CENTER_ONLY: tl.constexpr, GPU: tl.constexpr):
    if CENTER_ONLY:
        return _in_center(x, y, r, cx, cy)
    else:
        return _in_center(x, y, r, cx, cy) & _in_box(x, y, cx, cy, w, h, GPU)


@triton.jit
def _pair_cost(s, logit, so, iou, geo, penalty, GPU: tl.constexpr):
    # ((S - L1(p)) + Lp(p)) + 3 * -log(iou + 1e-8) + penalty * !geo,  p = sqrt(sigmoid(logit) * so)
    p = tl.sqrt_rn(sigmoid(logit, GPU) * so)
    l1 = -tl.maximum(log1p(-p, GPU), -100.0)
    lp = -tl.maximum(log(p, GPU), -100.0)
    cls = (s - l1) + lp
    ic = mul_rn(tl.zeros_like(iou) + 3.0, -log(iou + 1e-8, GPU), GPU)
    return (cls + ic) + tl.where(geo, 0.0, penalty)  # penalty * !geo, with no product to contract


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _simota_candidates_kernel(grids_ptr, strides_ptr, gt_ptr, gt_mask_ptr, cand_ptr, A, G, radius_scale,
                              CENTER_ONLY: tl.constexpr, GPU: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < A
    x, y, r = _anchors(grids_ptr, strides_ptr, offs, valid, radius_scale, GPU)
    cand = tl.zeros([BLOCK], dtype=tl.int32)
    # while, not `for g in range(G)`: Triton 3.6's interpreter cannot take a tensor as a range bound (NumPy 2)
    g = tl.full([], 0, tl.int32)
    while g < G:
        real = tl.load(gt_mask_ptr + b * G + g) != 0
        cx = tl.load(gt_ptr + (b * G + g) * 4)
        cy = tl.load(gt_ptr + (b * G + g) * 4 + 1)
        w = tl.load(gt_ptr + (b * G + g) * 4 + 2)
        h = tl.load(gt_ptr + (b * G + g) * 4 + 3)
        hit = _in_center(x, y, r, cx, cy)
        if not CENTER_ONLY:
            hit = hit | _in_box(x, y, cx, cy, w, h, GPU)
        cand = cand | tl.where(real, hit.to(tl.int32), 0)
        g += 1
    tl.store(cand_ptr + b * A + offs, cand.to(tl.int8), mask=valid)


@triton.jit
def _simota_bce_sum_kernel(cls_ptr, stride_b, stride_a, stride_c, obj_ptr, cand_ptr, s_ptr, A, C,
                           GPU: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    offs_a = tl.program_id(1) * BLOCK_A + tl.arange(0, BLOCK_A)
    va = offs_a < A
    cand = tl.load(cand_ptr + b * A + offs_a, mask=va, other=0) != 0
    if tl.max(cand.to(tl.int32), 0) > 0:  # S is needed only for candidates
        so = sigmoid(tl.load(obj_ptr + b * A + offs_a, mask=va, other=0.0), GPU)
        acc = tl.zeros([BLOCK_A], dtype=tl.float32)
        c0 = tl.full([], 0, tl.int32)
        while c0 < C:  # (a while loop: see the candidates kernel)
            offs_c = c0 + tl.arange(0, BLOCK_C)
            m = cand[:, None] & (offs_c[None, :] < C)
            # int64 image offset: B * A * C reaches 2^31 at B = 16, A = 33600, C = 4000
            ptrs = cls_ptr + b.to(tl.int64) * stride_b + offs_a[:, None] * stride_a + offs_c[None, :] * stride_c
            logit = tl.load(ptrs, mask=m, other=0.0).to(tl.float32)
            p = tl.sqrt_rn(sigmoid(logit, GPU) * so[:, None])
            acc += tl.sum(tl.where(m, -tl.maximum(log1p(-p, GPU), -100.0), 0.0), axis=1)
            c0 += BLOCK_C
        tl.store(s_ptr + b * A + offs_a, acc, mask=va)


@triton.jit
def _simota_select_kernel(pred_ptr, cls_ptr, stride_b, stride_a, stride_c, obj_ptr, grids_ptr, strides_ptr, gt_ptr,
                          gt_cls_ptr, gt_mask_ptr, cand_ptr, s_ptr, count_ptr, owner_ptr, A, G, radius_scale, penalty,
                          CENTER_ONLY: tl.constexpr, GPU: tl.constexpr, BLOCK: tl.constexpr, SLOTS: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // G
    g = pid % G
    if tl.load(gt_mask_ptr + pid) != 0:
        cx = tl.load(gt_ptr + pid * 4)
        cy = tl.load(gt_ptr + pid * 4 + 1)
        w = tl.load(gt_ptr + pid * 4 + 2)
        h = tl.load(gt_ptr + pid * 4 + 3)
        cls_g = tl.load(gt_cls_ptr + pid)
        gx1, gy1, gx2, gy2, garea = _box_corners(cx, cy, w, h, GPU)
        slots = tl.arange(0, SLOTS)
        lanes = tl.arange(0, BLOCK)
        # the 10 largest candidate IoUs (descending; -1 = empty) ...
        top = tl.full([SLOTS], -1.0, dtype=tl.float32)
        # ... and the 10 cheapest candidates by (cost, anchor index), ascending
        best_c = tl.full([SLOTS], float("inf"), dtype=tl.float32)
        best_i = tl.full([SLOTS], INT_MAX, dtype=tl.int32)
        a0 = tl.full([], 0, tl.int32)
        while a0 < A:  # (a while loop: see the candidates kernel)
            offs = a0 + lanes
            valid = offs < A
            cand = (tl.load(cand_ptr + b * A + offs, mask=valid, other=0) != 0) & valid
            px1, py1, px2, py2, parea = _pred_corners(pred_ptr, b * A * 4, offs, valid, GPU)
            iou = _iou(gx1, gy1, gx2, gy2, garea, px1, py1, px2, py2, parea, GPU)
            # Non-candidates count as IoU 0 (cannot change the sum), padding lanes never enter.
            blk = tl.where(valid, tl.where(cand, iou, 0.0), -2.0)
            tenth = tl.sum(tl.where(slots == 9, top, 0.0), 0)
            if tl.max(blk, 0) > tenth:  # merge: the 10 largest of top and blk
                new_top = tl.full([SLOTS], -1.0, dtype=tl.float32)
                old = tl.where(slots < 10, top, -3.0)
                for t in tl.static_range(10):
                    mb = tl.max(blk, 0)
                    mo = tl.max(old, 0)
                    from_blk = mb > mo
                    new_top = tl.where(slots == t, tl.where(from_blk, mb, mo), new_top)
                    # (a scalar condition goes in tl.where: `vector & scalar` fails in the interpreter)
                    blk = tl.where(from_blk, tl.where(lanes == tl.argmax(blk, 0), -3.0, blk), blk)
                    old = tl.where(from_blk, old, tl.where(slots == tl.argmax(old, 0), -3.0, old))
                top = new_top

            x, y, r = _anchors(grids_ptr, strides_ptr, offs, valid, radius_scale, GPU)
            geo = _geometry(x, y, r, cx, cy, w, h, CENTER_ONLY, GPU)
            s = tl.load(s_ptr + b * A + offs, mask=cand, other=0.0)
            logit = tl.load(cls_ptr + b.to(tl.int64) * stride_b + offs * stride_a + cls_g * stride_c, mask=cand,
                            other=0.0)
            so = sigmoid(tl.load(obj_ptr + b * A + offs, mask=cand, other=0.0), GPU)
            cost = _pair_cost(s, logit.to(tl.float32), so, iou, geo, penalty, GPU)
            cost = tl.where(cand, cost, float("inf"))
            idx = tl.where(cand, offs, INT_MAX)
            tenth_c = tl.sum(tl.where(slots == 9, best_c, 0.0), 0)
            if tl.min(cost, 0) <= tenth_c:  # merge by (cost, index); earlier blocks hold lower indices
                new_c = tl.full([SLOTS], float("inf"), dtype=tl.float32)
                new_i = tl.full([SLOTS], INT_MAX, dtype=tl.int32)
                old_c = tl.where(slots < 10, best_c, float("inf"))
                old_i = tl.where(slots < 10, best_i, INT_MAX)
                for t in tl.static_range(10):
                    mb = tl.min(cost, 0)
                    ib = tl.min(tl.where(cost == mb, idx, INT_MAX), 0)
                    mo = tl.min(old_c, 0)
                    io = tl.min(tl.where(old_c == mo, old_i, INT_MAX), 0)
                    from_blk = (mb < mo) | ((mb == mo) & (ib < io))
                    new_c = tl.where(slots == t, tl.where(from_blk, mb, mo), new_c)
                    new_i = tl.where(slots == t, tl.where(from_blk, ib, io), new_i)
                    hit_b = tl.where(from_blk, idx == ib, False)
                    cost = tl.where(hit_b, float("inf"), cost)
                    idx = tl.where(hit_b, INT_MAX, idx)
                    hit_o = tl.where(from_blk, False, old_i == io)
                    old_c = tl.where(hit_o, float("inf"), old_c)
                    old_i = tl.where(hit_o, INT_MAX, old_i)
                best_c = new_c
                best_i = new_i
            a0 += BLOCK

        # dynamic k = max(1, int(sum of the top IoUs, largest first, in float32))
        total = tl.sum(tl.where(slots == 0, tl.maximum(top, 0.0), 0.0), 0)
        for t in tl.static_range(1, 10):
            total = total + tl.sum(tl.where(slots == t, tl.maximum(top, 0.0), 0.0), 0)
        k = tl.minimum(tl.maximum(total.to(tl.int32), 1), 10)
        take = (slots < k) & (best_i != INT_MAX)
        anchor = tl.where(take, best_i, 0)
        tl.atomic_add(count_ptr + b * A + anchor, 1, mask=take)
        tl.atomic_max(owner_ptr + b * A + anchor, g, mask=take)


@triton.jit
def _simota_resolve_kernel(pred_ptr, cls_ptr, stride_b, stride_a, stride_c, obj_ptr, grids_ptr, strides_ptr, gt_ptr,
                           gt_cls_ptr, gt_mask_ptr, s_ptr, count_ptr, owner_ptr, fg_ptr, matched_ptr, miou_ptr, A, G,
                           radius_scale, penalty, CENTER_ONLY: tl.constexpr, GPU: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < A
    takers = tl.load(count_ptr + b * A + offs, mask=valid, other=0)
    owner = tl.load(owner_ptr + b * A + offs, mask=valid, other=-1)
    fg = takers > 0
    px1, py1, px2, py2, parea = _pred_corners(pred_ptr, b * A * 4, offs, valid, GPU)
    contested = takers > 1
    if tl.max(contested.to(tl.int32), 0) > 0:
        # argmin over all real GTs of the cost, lowest GT index on ties (strict < in GT order)
        x, y, r = _anchors(grids_ptr, strides_ptr, offs, valid, radius_scale, GPU)
        s = tl.load(s_ptr + b * A + offs, mask=contested, other=0.0)
        so = sigmoid(tl.load(obj_ptr + b * A + offs, mask=contested, other=0.0), GPU)
        best = tl.full([BLOCK], float("inf"), dtype=tl.float32)
        best_g = owner
        g = tl.full([], 0, tl.int32)
        while g < G:  # (as in the candidates kernel: no tensor range bound)
            if tl.load(gt_mask_ptr + b * G + g) != 0:
                cx = tl.load(gt_ptr + (b * G + g) * 4)
                cy = tl.load(gt_ptr + (b * G + g) * 4 + 1)
                w = tl.load(gt_ptr + (b * G + g) * 4 + 2)
                h = tl.load(gt_ptr + (b * G + g) * 4 + 3)
                cls_g = tl.load(gt_cls_ptr + b * G + g)
                gx1, gy1, gx2, gy2, garea = _box_corners(cx, cy, w, h, GPU)
                iou = _iou(gx1, gy1, gx2, gy2, garea, px1, py1, px2, py2, parea, GPU)
                geo = _geometry(x, y, r, cx, cy, w, h, CENTER_ONLY, GPU)
                logit = tl.load(cls_ptr + b.to(tl.int64) * stride_b + offs * stride_a + cls_g * stride_c,
                                mask=contested, other=0.0)
                cost = _pair_cost(s, logit.to(tl.float32), so, iou, geo, penalty, GPU)
                better = contested & (cost < best)
                best = tl.where(better, cost, best)
                best_g = tl.where(better, g, best_g)
            g += 1
        owner = tl.where(contested, best_g, owner)
    og = tl.where(fg, owner, 0)
    gbase = (b * G + og) * 4
    cx = tl.load(gt_ptr + gbase, mask=fg, other=0.0)
    cy = tl.load(gt_ptr + gbase + 1, mask=fg, other=0.0)
    w = tl.load(gt_ptr + gbase + 2, mask=fg, other=0.0)
    h = tl.load(gt_ptr + gbase + 3, mask=fg, other=0.0)
    gx1, gy1, gx2, gy2, garea = _box_corners(cx, cy, w, h, GPU)
    iou = _iou(gx1, gy1, gx2, gy2, garea, px1, py1, px2, py2, parea, GPU)
    tl.store(fg_ptr + b * A + offs, fg, mask=valid)
    tl.store(matched_ptr + b * A + offs, tl.where(fg, owner, -1).to(tl.int64), mask=valid)
    tl.store(miou_ptr + b * A + offs, tl.where(fg, iou, 0.0), mask=valid)


# --------------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------------


def launch_simota(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask, center_radius,
                  center_only, penalty, fg, matched, miou) -> None:
    """Fill ``fg [B, A]`` bool, ``matched [B, A]`` int64 and ``miou [B, A]`` float32.

    ``pred_boxes [B, A, 4]``, ``obj_logits [B, A]``, ``grids [A, 2]``, ``strides [A]``, ``gt_boxes
    [B, G, 4]`` contiguous float32; ``gt_classes [B, G]`` int32 and ``gt_mask [B, G]`` int8,
    contiguous; ``cls_logits [B, A, C]`` any float dtype and strides.
    """
    b, a, c = cls_logits.shape
    g = gt_boxes.shape[1]
    device = pred_boxes.device
    cand = torch.empty((b, a), dtype=torch.int8, device=device)
    s_u = torch.zeros((b, a), dtype=torch.float32, device=device)
    takers = torch.zeros((b, a), dtype=torch.int32, device=device)
    owner = torch.full((b, a), -1, dtype=torch.int32, device=device)
    sb, sa, sc = cls_logits.stride()
    common = dict(CENTER_ONLY=center_only, GPU=GPU_MATH)
    with launch_on("launch_simota", pred_boxes=pred_boxes, cls_logits=cls_logits, obj_logits=obj_logits, grids=grids,
                   strides=strides, gt_boxes=gt_boxes, gt_classes=gt_classes, gt_mask=gt_mask, fg=fg, matched=matched,
                   miou=miou):
        traceable(_simota_candidates_kernel)[(b, triton.cdiv(a, BLOCK_CAND))](
            grids, strides, gt_boxes, gt_mask, cand, a, g, center_radius, BLOCK=BLOCK_CAND, **common)
        if g > 0:
            traceable(_simota_bce_sum_kernel)[(b, triton.cdiv(a, BLOCK_S_A))](
                cls_logits, sb, sa, sc, obj_logits, cand, s_u, a, c, GPU=GPU_MATH, BLOCK_A=BLOCK_S_A, BLOCK_C=BLOCK_S_C)
            traceable(_simota_select_kernel)[(b * g,)](
                pred_boxes, cls_logits, sb, sa, sc, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask, cand,
                s_u, takers, owner, a, g, center_radius, penalty, BLOCK=BLOCK_SCAN, SLOTS=SLOTS, **common)
        traceable(_simota_resolve_kernel)[(b, triton.cdiv(a, BLOCK_CAND))](
            pred_boxes, cls_logits, sb, sa, sc, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask, s_u, takers,
            owner, fg, matched, miou, a, g, center_radius, penalty, BLOCK=BLOCK_CAND, **common)


@triton_op("yolox_fast::simota_assign_triton", mutates_args=())
def simota_assign_triton(pred_boxes: torch.Tensor, cls_logits: torch.Tensor, obj_logits: torch.Tensor,
                         grids: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                         gt_mask: torch.Tensor, center_radius: float, center_only: bool,
                         penalty: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA of a padded batch in Triton; arguments and outputs as ``torch.ops.yolox_fast.simota_assign``."""
    b, a = pred_boxes.shape[:2]
    device = pred_boxes.device
    fg = torch.empty((b, a), dtype=torch.bool, device=device)
    matched = torch.empty((b, a), dtype=torch.long, device=device)
    miou = torch.empty((b, a), dtype=torch.float32, device=device)
    if b == 0 or a == 0:
        return fg, matched, miou
    launch_simota(
        pred_boxes.float().contiguous(),
        cls_logits,
        obj_logits.float().reshape(b, a).contiguous(),
        grids.float().contiguous(),
        strides.float().contiguous(),
        gt_boxes.float().contiguous(),
        gt_classes.to(torch.int32).contiguous(),
        gt_mask.to(torch.int8).contiguous(),
        float(center_radius),
        bool(center_only),
        float(penalty),
        fg,
        matched,
        miou,
    )
    return fg, matched, miou
