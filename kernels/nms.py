"""Postprocess and NMS in Triton: the CUDA backend's pipeline (csrc/cuda/nms_kernel.cu) as Triton kernels.

1. ``_score_kernel``: a block of anchor rows x all classes per program: obj * max cls (first argmax, NaN
   rows dropped), threshold, and an int64 sort key per candidate slot (score, then the reference's tie
   order: class then anchor when class-aware, anchor then class when agnostic);
2. torch.sort of each image's keys (descending, stable);
3. ``_gather_kernel``: float32 corners, class and anchor of the first ``cap`` candidates of each image;
4. ``_nms_mask_kernel``: a fixed grid of programs per image loops over the 64 x 64 tiles on and above the
   diagonal and within the image's candidate count (read on the device: no sync); bit j of ``mask[i, w]`` =
   candidate ``64 w + j`` comes after ``i``, has its class (class-aware) and IoU > threshold with it;
5. ``_nms_reduce_kernel``: one program per image walks the candidates in order, one reduction per 64
   candidates (the removed bits of their word), scalar bit tests in between, a row load per kept box only,
   and stops at ``max_det``; the mask stays on the device;
6. ``_rows_kernel``: ``[B, M, 7]`` rows, zero padded.

Arithmetic follows yolox_fast/ops/reference.py op by op (rounded to the prediction dtype where the
reference rounds; IoU in float32 with IEEE division; launched with fp fusion off so that ``a * b + c``
keeps two roundings). Raw input uses Triton's exp, within an ulp or two of PyTorch's.
"""

from __future__ import annotations

import math
import struct

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ._launch import NO_FP_FUSION, device_guard

TILE = 64
INVALID_KEY = -(2**63)
MAX_MASK_BYTES = 4 << 30  # as the CUDA backend
#: programs per image of the mask kernel, as the CUDA backend: ~4096 programs in all, at least 1 per image
MASK_PROGRAMS = 4096
GATHER_BLOCK = 128  # candidates per program of _gather_kernel
ROWS_BLOCK = 64  # output rows per program of _rows_kernel


@triton.jit
def _round(x, DT: tl.constexpr, ACC: tl.constexpr):
    # store in the prediction dtype and read back: what a PyTorch op in that dtype does to its result
    return x.to(DT).to(ACC)


@triton.jit
def _sigmoid(x, DT: tl.constexpr, ACC: tl.constexpr):
    if ACC == tl.float64:  # float64 division is always IEEE; div_rn is float32-only
        return _round(1.0 / (1.0 + tl.exp(-x)), DT, ACC)
    else:
        return _round(tl.math.div_rn(tl.full(x.shape, 1.0, ACC), 1.0 + tl.exp(-x)), DT, ACC)


@triton.jit
def _sort_key(score, sec, ACC: tl.constexpr):
    """int64 key, larger = better: score descending, then ``sec`` ascending (float32 and narrower)."""
    score = tl.where(score == 0, 0.0, score)  # -0 ranks as +0 (torch.sort treats them as equal)
    if ACC == tl.float64:
        u = score.to(tl.int64, bitcast=True)
        return tl.where(u < 0, u ^ 0x7FFFFFFFFFFFFFFF, u)  # ties: slot order (stable sort)
    else:
        u = score.to(tl.int32, bitcast=True)
        k = tl.where(u < 0, u ^ 0x7FFFFFFF, u).to(tl.int64)
        return (k << 32) | (tl.full(sec.shape, 0xFFFFFFFF, tl.int64) - sec.to(tl.int64))


@triton.jit(do_not_specialize=["conf_bits"])
def _score_kernel(pred_ptr, conf_bits, keys_ptr, label_ptr, A, S, C, L, RAW: tl.constexpr, MULTI: tl.constexpr,
                  AGNOSTIC: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    DT: tl.constexpr = pred_ptr.dtype.element_ty
    b = tl.program_id(1)
    a = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_C)
    row_ok = a < A
    cls_ok = row_ok[:, None] & (c[None, :] < C)
    rows = pred_ptr + (b * A + a).to(tl.int64) * S
    # the threshold arrives as the int64 bits of a float64 (a scalar argument: no device copy, no sync)
    conf = conf_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
    obj = tl.load(rows + 4, mask=row_ok, other=0.0).to(ACC)
    x = tl.load(rows[:, None] + 5 + c[None, :], mask=cls_ok, other=float("-inf")).to(ACC)
    if RAW:
        obj = _sigmoid(obj, DT, ACC)
        x = tl.where(cls_ok, _sigmoid(x, DT, ACC), float("-inf"))
    if MULTI:
        score = _round(obj[:, None] * x, DT, ACC)
        valid = cls_ok & (score >= conf)
        if AGNOSTIC:
            slot = a[:, None].to(tl.int64) * C + c[None, :]
        else:
            slot = c[None, :].to(tl.int64) * A + a[:, None]
        key = _sort_key(score, slot, ACC)
        tl.store(keys_ptr + b.to(tl.int64) * L + slot, tl.where(valid, key, -(2**63)), mask=cls_ok)
    else:
        nan = tl.max((x != x).to(tl.int32), axis=1) > 0
        clean = tl.where(x != x, float("-inf"), x)
        best = tl.max(clean, axis=1)
        idx = tl.argmax(clean, axis=1, tie_break_left=True)  # torch.max: first index of the maximum
        score = _round(obj * best, DT, ACC)
        valid = row_ok & (~nan) & (score >= conf)  # a NaN score fails, as the reference's `>=`
        if AGNOSTIC:
            sec = a.to(tl.int64) * C + idx
        else:
            sec = idx.to(tl.int64) * A + a
        key = _sort_key(score, sec, ACC)
        tl.store(keys_ptr + b.to(tl.int64) * L + a, tl.where(valid, key, -(2**63)), mask=row_ok)
        tl.store(label_ptr + b * A + a, idx, mask=row_ok)


@triton.jit
def _anchor_box(rows, grids_ptr, strides_ptr, a, ok, RAW: tl.constexpr, DT: tl.constexpr, ACC: tl.constexpr):
    cx = tl.load(rows + 0, mask=ok, other=0.0).to(ACC)
    cy = tl.load(rows + 1, mask=ok, other=0.0).to(ACC)
    w = tl.load(rows + 2, mask=ok, other=0.0).to(ACC)
    h = tl.load(rows + 3, mask=ok, other=0.0).to(ACC)
    if RAW:
        gx = _round(tl.load(grids_ptr + 2 * a, mask=ok, other=0.0).to(ACC), DT, ACC)
        gy = _round(tl.load(grids_ptr + 2 * a + 1, mask=ok, other=0.0).to(ACC), DT, ACC)
        s = _round(tl.load(strides_ptr + a, mask=ok, other=0.0).to(ACC), DT, ACC)
        cx = _round(_round(cx + gx, DT, ACC) * s, DT, ACC)
        cy = _round(_round(cy + gy, DT, ACC) * s, DT, ACC)
        w = _round(_round(tl.exp(w), DT, ACC) * s, DT, ACC)
        h = _round(_round(tl.exp(h), DT, ACC) * s, DT, ACC)
    # w / 2 as w * 0.5 (the same number, exactly): a float32 `/` would lower to the approximate div.full.f32
    hw = _round(w * 0.5, DT, ACC)
    hh = _round(h * 0.5, DT, ACC)
    return (_round(cx - hw, DT, ACC), _round(cy - hh, DT, ACC), _round(cx + hw, DT, ACC), _round(cy + hh, DT, ACC))


@triton.jit
def _gather_kernel(pred_ptr, grids_ptr, strides_ptr, order_ptr, label_ptr, n_ptr, boxes_ptr, cls_ptr, anchor_ptr,
                   A, S, C, L, cap, RAW: tl.constexpr, MULTI: tl.constexpr, AGNOSTIC: tl.constexpr,
                   ACC: tl.constexpr, BLOCK: tl.constexpr):
    DT: tl.constexpr = pred_ptr.dtype.element_ty
    b = tl.program_id(1)
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n = tl.minimum(tl.load(n_ptr + b), cap)
    ok = r < n
    s = tl.load(order_ptr + b.to(tl.int64) * L + r, mask=ok, other=0)
    if MULTI:
        if AGNOSTIC:
            a = s // C
            c = s % C
        else:
            a = s % A
            c = s // A
    else:
        a = s
        c = tl.load(label_ptr + b * A + a, mask=ok, other=0)
    rows = pred_ptr + (b * A + a).to(tl.int64) * S
    x1, y1, x2, y2 = _anchor_box(rows, grids_ptr, strides_ptr, a, ok, RAW, DT, ACC)
    out = boxes_ptr + (b * cap + r).to(tl.int64) * 4
    tl.store(out + 0, x1.to(tl.float32), mask=ok)
    tl.store(out + 1, y1.to(tl.float32), mask=ok)
    tl.store(out + 2, x2.to(tl.float32), mask=ok)
    tl.store(out + 3, y2.to(tl.float32), mask=ok)
    tl.store(cls_ptr + b * cap + r, c.to(tl.int64), mask=ok)
    tl.store(anchor_ptr + b * cap + r, a.to(tl.int32), mask=ok)


@triton.jit
def _nms_tile(boxes_ptr, cls_ptr, mask_ptr, g, n, cap, words, rb, cb, thr, HAS_CLS: tl.constexpr,
              TILE_: tl.constexpr):
    i = rb * TILE_ + tl.arange(0, TILE_)
    j = cb * TILE_ + tl.arange(0, TILE_)
    ri = i < n
    rj = j < n
    bi = boxes_ptr + (g * cap + i).to(tl.int64) * 4
    bj = boxes_ptr + (g * cap + j).to(tl.int64) * 4
    ax1 = tl.load(bi + 0, mask=ri, other=0.0)[:, None]
    ay1 = tl.load(bi + 1, mask=ri, other=0.0)[:, None]
    ax2 = tl.load(bi + 2, mask=ri, other=0.0)[:, None]
    ay2 = tl.load(bi + 3, mask=ri, other=0.0)[:, None]
    bx1 = tl.load(bj + 0, mask=rj, other=0.0)[None, :]
    by1 = tl.load(bj + 1, mask=rj, other=0.0)[None, :]
    bx2 = tl.load(bj + 2, mask=rj, other=0.0)[None, :]
    by2 = tl.load(bj + 3, mask=rj, other=0.0)[None, :]
    # box_iou_nms of csrc/common/box_math.h, op by op
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    w = tl.where(ax2 < bx2, ax2, bx2) - tl.where(ax1 > bx1, ax1, bx1)
    h = tl.where(ay2 < by2, ay2, by2) - tl.where(ay1 > by1, ay1, by1)
    inter = tl.where(w < 0, 0.0, w) * tl.where(h < 0, 0.0, h)
    iou = tl.math.div_rn(inter, (area_a + area_b) - inter)
    hit = (iou > thr) & rj[None, :] & (j[None, :] > i[:, None])
    if HAS_CLS:
        ci = tl.load(cls_ptr + (g * cap + i).to(tl.int64), mask=ri, other=-1)
        cj = tl.load(cls_ptr + (g * cap + j).to(tl.int64), mask=rj, other=-2)
        hit = hit & (ci[:, None] == cj[None, :])
    shift = tl.arange(0, TILE_).to(tl.int64)
    # distinct bits, so their sum is their OR
    bits = tl.sum(tl.where(hit, tl.full(hit.shape, 1, tl.int64) << shift[None, :], 0), axis=1)
    tl.store(mask_ptr + (g * cap + i).to(tl.int64) * words + cb, bits, mask=ri)


@triton.jit
def _nms_mask_kernel(boxes_ptr, cls_ptr, n_ptr, mask_ptr, cap, words, thr, HAS_CLS: tl.constexpr,
                     TILE_: tl.constexpr):
    # grid (programs, G): program p of problem g takes tiles p, p + programs, ... of the nb x nb tile
    # square of its n candidates, and skips those below the diagonal (a box only suppresses later boxes).
    # Tiles past n are never visited: sized by the count on the device, the grid by the capacity.
    p = tl.program_id(0)
    programs = tl.num_programs(0)
    g = tl.program_id(1)
    n = tl.minimum(tl.load(n_ptr + g), cap).to(tl.int32)
    nb = tl.cdiv(n, TILE_)
    for t in range(p, nb * nb, programs):
        rb = t // nb
        cb = t % nb
        if cb >= rb:
            _nms_tile(boxes_ptr, cls_ptr, mask_ptr, g, n, cap, words, rb, cb, thr, HAS_CLS, TILE_)


@triton.jit
def _nms_reduce_kernel(mask_ptr, n_ptr, keep_ptr, count_ptr, cap, words, limit, BLOCK_W: tl.constexpr,
                       TILE_: tl.constexpr):
    # Greedy scan of one problem's mask. `removed` holds the suppressed bits of all words in registers;
    # word rb is pulled out once per 64 candidates (one reduction), its bits tested as a scalar, and a
    # kept row's words (from its own block on: earlier words were never written) OR-ed in with one load.
    # Stops as soon as `limit` boxes are kept.
    g = tl.program_id(0)
    n = tl.minimum(tl.load(n_ptr + g), cap).to(tl.int32)
    nb = tl.cdiv(n, TILE_)
    offs = tl.arange(0, BLOCK_W)
    removed = tl.zeros([BLOCK_W], dtype=tl.int64)
    count = tl.full([], 0, tl.int32)
    rb = tl.full([], 0, tl.int32)
    while (rb < nb) & (count < limit):
        rem = tl.sum(tl.where(offs == rb, removed, 0))
        rows = tl.minimum(n - rb * TILE_, TILE_)
        k = tl.full([], 0, tl.int32)
        while (k < rows) & (count < limit):
            if ((rem >> k.to(tl.int64)) & 1) == 0:
                r = rb * TILE_ + k
                tl.store(keep_ptr + g * limit + count, r)
                row_ptr = mask_ptr + (g * cap + r).to(tl.int64) * words
                removed = removed | tl.load(row_ptr + offs, mask=(offs >= rb) & (offs < nb), other=0)
                rem = rem | tl.load(row_ptr + rb)
                count += 1
            k += 1
        rb += 1
    tl.store(count_ptr + g, count.to(tl.int64))


@triton.jit
def _rows_kernel(pred_ptr, grids_ptr, strides_ptr, keep_ptr, count_ptr, cls_ptr, anchor_ptr, out_ptr, A, S, cap,
                 limit, M, RAW: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    DT: tl.constexpr = pred_ptr.dtype.element_ty
    b = tl.program_id(1)
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_out = k < M
    ok = k < tl.load(count_ptr + b)
    r = tl.load(keep_ptr + b * limit + k, mask=ok, other=0)
    a = tl.load(anchor_ptr + b * cap + r, mask=ok, other=0)
    c = tl.load(cls_ptr + b * cap + r, mask=ok, other=0)
    rows = pred_ptr + (b * A + a).to(tl.int64) * S
    x1, y1, x2, y2 = _anchor_box(rows, grids_ptr, strides_ptr, a, ok, RAW, DT, ACC)
    obj = tl.load(rows + 4, mask=ok, other=0.0).to(ACC)
    cc = tl.load(rows + 5 + c, mask=ok, other=0.0).to(ACC)
    if RAW:
        obj = _sigmoid(obj, DT, ACC)
        cc = _sigmoid(cc, DT, ACC)
    out = out_ptr + (b * M + k).to(tl.int64) * 7
    zero = tl.zeros([BLOCK], dtype=ACC)
    tl.store(out + 0, tl.where(ok, x1, zero).to(DT), mask=in_out)
    tl.store(out + 1, tl.where(ok, y1, zero).to(DT), mask=in_out)
    tl.store(out + 2, tl.where(ok, x2, zero).to(DT), mask=in_out)
    tl.store(out + 3, tl.where(ok, y2, zero).to(DT), mask=in_out)
    tl.store(out + 4, tl.where(ok, obj, zero).to(DT), mask=in_out)
    tl.store(out + 5, tl.where(ok, cc, zero).to(DT), mask=in_out)
    tl.store(out + 6, tl.where(ok, c.to(ACC), zero).to(DT), mask=in_out)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def score_blocks(num_classes: int) -> tuple[int, int]:
    """``(BLOCK_R, BLOCK_C)`` of ``_score_kernel``: all classes of a row in one block, ~4096 elements."""
    block_c = triton.next_power_of_2(num_classes)
    return max(1, min(64, 4096 // block_c)), block_c


def _f32(x: float) -> float:
    if math.isfinite(x) and abs(x) >= 3.4028235677973366e38:  # rounds past FLT_MAX: overflows to inf
        return math.copysign(math.inf, x)
    return struct.unpack("<f", struct.pack("<f", x))[0]


def threshold_as(x: float, dtype: torch.dtype) -> float:
    """``x`` rounded to ``dtype`` as ``torch.tensor(x, dtype=dtype)`` rounds it (through float32), computed
    on the host without a tensor: the reference compares scores with the threshold in the prediction dtype."""
    if dtype == torch.float64 or math.isnan(x):
        return float(x)
    f = _f32(x)
    if dtype == torch.float16:
        try:
            return struct.unpack("<e", struct.pack("<e", f))[0]
        except OverflowError:
            return math.copysign(math.inf, f)
    if dtype == torch.bfloat16 and math.isfinite(f):  # round to nearest even on the upper 16 bits
        u = struct.unpack("<I", struct.pack("<f", f))[0]
        u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000) & 0xFFFFFFFF
        return struct.unpack("<f", struct.pack("<I", u))[0]
    return f


def float_bits(x: float) -> int:
    """The int64 bit pattern of float64 ``x``: how a float64 reaches a kernel exactly (Triton passes Python
    floats as float32)."""
    return struct.unpack("<q", struct.pack("<d", x))[0]


def launch_nms(boxes: torch.Tensor, cls: torch.Tensor | None, n_valid: torch.Tensor, cap: int, thr: float,
               limit: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bitmask NMS of ``G`` problems: ``boxes [G, cap, 4]`` float32 in priority order, ``cls [G, cap]`` int64
    (None: class-agnostic), ``n_valid [G]`` int64. Returns ``keep [G, limit]`` int32 ranks (the first
    ``count[g]`` valid) and ``count [G]`` int64.

    ``mask``: optional ``[G, cap, ceil(cap / 64)]`` int64 workspace; only the words of the tiles on and
    above the diagonal within each problem's count are written."""
    g = boxes.shape[0]
    words = triton.cdiv(cap, TILE)
    if g * cap * words * 8 > MAX_MASK_BYTES:
        raise RuntimeError(f"NMS on the GPU would need a {g * cap * words * 8 >> 20} MiB suppression mask for "
                           f"{g} x {cap} candidate boxes; lower the candidate count (pre_nms_topk, a higher "
                           "conf_thre, or max_det=None for the list output, which sizes it from the actual count)")
    keep = torch.zeros((g, max(limit, 1)), dtype=torch.int32, device=boxes.device)
    count = torch.zeros((g,), dtype=torch.int64, device=boxes.device)
    if cap == 0 or limit == 0:
        return keep, count
    if g > 65535:
        raise RuntimeError(f"NMS on the GPU takes at most 65535 problems per call, got {g}")
    if mask is None:
        mask = torch.empty((g, cap, words), dtype=torch.int64, device=boxes.device)
    programs = max(1, min(words * words, MASK_PROGRAMS // max(g, 1)))
    with device_guard(boxes.device):
        wrap_triton(_nms_mask_kernel)[(programs, g)](
            boxes, cls if cls is not None else n_valid, n_valid, mask, cap, words, thr, HAS_CLS=cls is not None,
            TILE_=TILE, **NO_FP_FUSION)
        wrap_triton(_nms_reduce_kernel)[(g,)](mask, n_valid, keep, count, cap, words, max(limit, 1),
                                              BLOCK_W=triton.next_power_of_2(words), TILE_=TILE)
    return keep, count


@triton_op("yolox_fast::postprocess_triton", mutates_args=())
def postprocess_triton(prediction: torch.Tensor, num_classes: int, conf_thre: float, nms_thre: float,
                       class_agnostic: bool, multi_label: bool, pre_nms_topk: int, max_det: int,
                       grids: torch.Tensor | None, strides: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton postprocess, the semantics of ``torch.ops.yolox_fast.postprocess`` (see
    :mod:`yolox_fast.ops.postprocess`): ``(detections [B, M, 7], counts [B] int64)``."""
    pred = prediction.contiguous()
    num_images, num_anchors, stride = pred.shape
    num_classes = int(num_classes)
    raw = grids is not None
    slots = num_anchors * num_classes if multi_label else num_anchors
    device = pred.device
    acc = _acc(pred.dtype)
    if num_images == 0 or slots == 0:
        return pred.new_zeros((num_images, max(max_det, 0), 7)), torch.zeros(num_images, dtype=torch.long,
                                                                             device=device)
    g = grids.to(torch.float32).contiguous() if raw else pred
    s = strides.to(torch.float32).contiguous() if raw else pred
    with device_guard(device):
        return _postprocess_triton(pred, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, pre_nms_topk,
                                   max_det, g, s, raw, slots, acc)


def _postprocess_triton(pred, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, pre_nms_topk, max_det,
                        g, s, raw, slots, acc):
    num_images, num_anchors, stride = pred.shape
    device = pred.device
    conf_bits = float_bits(threshold_as(float(conf_thre), pred.dtype))
    keys = torch.empty((num_images, slots), dtype=torch.int64, device=device)
    label = torch.empty((num_images, num_anchors), dtype=torch.int32, device=device)
    block_r, block_c = score_blocks(num_classes)
    wrap_triton(_score_kernel)[(triton.cdiv(num_anchors, block_r), num_images)](
        pred, conf_bits, keys, label, num_anchors, stride, num_classes, slots, RAW=raw, MULTI=multi_label,
        AGNOSTIC=class_agnostic, ACC=acc, BLOCK_R=block_r, BLOCK_C=block_c, **NO_FP_FUSION)
    n_valid = (keys != INVALID_KEY).sum(1)
    if acc == tl.float64 and not multi_label and not class_agnostic:
        # float64 keys are all score, with no room for the tie-break (class, then anchor); slot order is
        # anchor order. Pre-order the slots by (class, anchor): the stable sort keeps that order among ties.
        anchors = torch.arange(num_anchors, device=device, dtype=torch.int64)
        pre = torch.sort(label.to(torch.int64) * num_anchors + anchors, dim=1, stable=True).indices
        order = pre.gather(1, torch.sort(keys.gather(1, pre), dim=1, descending=True, stable=True).indices)
        order = order.to(torch.int32)
    else:
        order = torch.sort(keys, dim=1, descending=True, stable=True).indices.to(torch.int32)

    cap = min(pre_nms_topk, slots) if pre_nms_topk > 0 else slots
    if max_det <= 0:  # the list output (which syncs anyway): size the work by the actual count
        cap = min(cap, int(n_valid.max()))
    limit = min(max_det, cap) if max_det > 0 else cap
    cap1 = max(cap, 1)
    boxes = torch.empty((num_images, cap1, 4), dtype=torch.float32, device=device)
    cls = torch.empty((num_images, cap1), dtype=torch.int64, device=device)
    anchor = torch.empty((num_images, cap1), dtype=torch.int32, device=device)
    if cap > 0:
        wrap_triton(_gather_kernel)[(triton.cdiv(cap, GATHER_BLOCK), num_images)](
            pred, g, s, order, label, n_valid, boxes, cls, anchor, num_anchors, stride, num_classes, slots, cap,
            RAW=raw, MULTI=multi_label, AGNOSTIC=class_agnostic, ACC=acc, BLOCK=GATHER_BLOCK, **NO_FP_FUSION)
    keep, count = launch_nms(boxes, None if class_agnostic else cls, n_valid, cap, float(nms_thre), limit)

    m = max_det if max_det > 0 else limit
    out = torch.empty((num_images, m, 7), dtype=pred.dtype, device=device)
    if m > 0:
        wrap_triton(_rows_kernel)[(triton.cdiv(m, ROWS_BLOCK), num_images)](
            pred, g, s, keep, count, cls, anchor, out, num_anchors, stride, cap1, max(limit, 1), m, RAW=raw, ACC=acc,
            BLOCK=ROWS_BLOCK, **NO_FP_FUSION)
    if max_det <= 0:
        out = out[:, : int(count.max())].contiguous()
    return out, count


def nms_triton(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor | None, iou_threshold: float):
    """Triton (batched) NMS: kept indices by decreasing score, equal scores by index (NaN-free scores)."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    with device_guard(boxes.device):
        return _nms_triton(boxes, scores, idxs, iou_threshold)


def _nms_triton(boxes, scores, idxs, iou_threshold):
    n = boxes.shape[0]
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order].to(torch.float32).contiguous()[None]
    cls = idxs[order].to(torch.int64).contiguous()[None] if idxs is not None else None
    n_valid = torch.full((1,), n, dtype=torch.int64, device=boxes.device)
    keep, count = launch_nms(sorted_boxes, cls, n_valid, n, float(iou_threshold), n)
    return order[keep[0, : int(count[0])].long()]
