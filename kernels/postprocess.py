"""The postprocess in Triton: the CUDA backend's pipeline (csrc/cuda/postprocess_kernel.cu) as Triton kernels.

1. ``_score_kernel``: a block of anchor rows x all classes per program: obj * max cls (first argmax, NaN
   rows dropped), threshold, and an int64 sort key per candidate slot (score, then the reference's tie
   order: class then anchor when class-aware, anchor then class when agnostic);
2. torch.sort of each image's keys (descending, stable);
3. ``_gather_kernel``: float32 corners, class and anchor of the first ``cap`` candidates of each image;
4-5. the bitmask NMS of kernels/nms.py (``launch_nms``), one problem per image, stopping at ``max_det``;
6. ``_rows_kernel``: ``[B, M, 7]`` rows, zero padded.

Grids are 1-D (images x blocks on axis 0, whose limit is 2^31 - 1; axes 1 and 2 stop at 65,535), so any
number of images goes in one call.

Arithmetic follows yolox_fast/ops/reference.py op by op (rounded to the prediction dtype where the
reference rounds; IoU in float32 with IEEE division; products that feed an addition explicit, so that
``a * b + c`` keeps two roundings under torch.compile too: kernels/_math.py). Raw input uses libdevice's exp
on the GPU (NumPy's in the interpreter), within an ulp or two of PyTorch's.
"""

from __future__ import annotations

import math
import struct

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._launch import launch_on, traceable
from ._math import GPU_MATH, exp, half, mul_rn, sigmoid
from .nms import launch_nms

INVALID_KEY = -(2**63)
GATHER_BLOCK = 128  # candidates per program of _gather_kernel
ROWS_BLOCK = 64  # output rows per program of _rows_kernel


@triton.jit
def _round(x, DT: tl.constexpr, ACC: tl.constexpr):
    # store in the prediction dtype and read back: what a PyTorch op in that dtype does to its result
    return x.to(DT).to(ACC)


@triton.jit
def _sigmoid_as(x, DT: tl.constexpr, ACC: tl.constexpr, GPU: tl.constexpr):
    # PyTorch's sigmoid in the prediction dtype: computed in ACC, rounded to DT
    return _round(sigmoid(x, GPU), DT, ACC)


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
                  AGNOSTIC: tl.constexpr, ACC: tl.constexpr, GPU: tl.constexpr, BLOCK_R: tl.constexpr,
                  BLOCK_C: tl.constexpr):
    DT: tl.constexpr = pred_ptr.dtype.element_ty
    blocks = tl.cdiv(A, BLOCK_R)
    b = tl.program_id(0) // blocks
    a = (tl.program_id(0) % blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_C)
    row_ok = a < A
    cls_ok = row_ok[:, None] & (c[None, :] < C)
    rows = pred_ptr + (b * A + a).to(tl.int64) * S
    # the threshold arrives as the int64 bits of a float64 (a scalar argument: no device copy, no sync)
    conf = conf_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
    obj = tl.load(rows + 4, mask=row_ok, other=0.0).to(ACC)
    x = tl.load(rows[:, None] + 5 + c[None, :], mask=cls_ok, other=float("-inf")).to(ACC)
    if RAW:
        obj = _sigmoid_as(obj, DT, ACC, GPU)
        x = tl.where(cls_ok, _sigmoid_as(x, DT, ACC, GPU), float("-inf"))
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
def _anchor_box(rows, grids_ptr, strides_ptr, a, ok, RAW: tl.constexpr, DT: tl.constexpr, ACC: tl.constexpr,
                GPU: tl.constexpr):
    cx = tl.load(rows + 0, mask=ok, other=0.0).to(ACC)
    cy = tl.load(rows + 1, mask=ok, other=0.0).to(ACC)
    w = tl.load(rows + 2, mask=ok, other=0.0).to(ACC)
    h = tl.load(rows + 3, mask=ok, other=0.0).to(ACC)
    if RAW:
        gx = _round(tl.load(grids_ptr + 2 * a, mask=ok, other=0.0).to(ACC), DT, ACC)
        gy = _round(tl.load(grids_ptr + 2 * a + 1, mask=ok, other=0.0).to(ACC), DT, ACC)
        s = _round(tl.load(strides_ptr + a, mask=ok, other=0.0).to(ACC), DT, ACC)
        cx = _round(mul_rn(_round(cx + gx, DT, ACC), s, GPU), DT, ACC)
        cy = _round(mul_rn(_round(cy + gy, DT, ACC), s, GPU), DT, ACC)
        w = _round(mul_rn(_round(exp(w, GPU), DT, ACC), s, GPU), DT, ACC)
        h = _round(mul_rn(_round(exp(h, GPU), DT, ACC), s, GPU), DT, ACC)
    # w / 2 as w * 0.5 (the same number, exactly): a float32 `/` would lower to the approximate div.full.f32
    hw = _round(half(w, GPU), DT, ACC)
    hh = _round(half(h, GPU), DT, ACC)
    return (_round(cx - hw, DT, ACC), _round(cy - hh, DT, ACC), _round(cx + hw, DT, ACC), _round(cy + hh, DT, ACC))


@triton.jit
def _gather_kernel(pred_ptr, grids_ptr, strides_ptr, order_ptr, label_ptr, n_ptr, boxes_ptr, cls_ptr, anchor_ptr,
                   A, S, C, L, cap, RAW: tl.constexpr, MULTI: tl.constexpr, AGNOSTIC: tl.constexpr,
                   ACC: tl.constexpr, GPU: tl.constexpr, BLOCK: tl.constexpr):
    DT: tl.constexpr = pred_ptr.dtype.element_ty
    blocks = tl.cdiv(cap, BLOCK)
    b = tl.program_id(0) // blocks
    r = (tl.program_id(0) % blocks) * BLOCK + tl.arange(0, BLOCK)
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
    x1, y1, x2, y2 = _anchor_box(rows, grids_ptr, strides_ptr, a, ok, RAW, DT, ACC, GPU)
    out = boxes_ptr + (b * cap + r).to(tl.int64) * 4
    tl.store(out + 0, x1.to(tl.float32), mask=ok)
    tl.store(out + 1, y1.to(tl.float32), mask=ok)
    tl.store(out + 2, x2.to(tl.float32), mask=ok)
    tl.store(out + 3, y2.to(tl.float32), mask=ok)
    tl.store(cls_ptr + b * cap + r, c.to(tl.int64), mask=ok)
    tl.store(anchor_ptr + b * cap + r, a.to(tl.int32), mask=ok)


@triton.jit
def _rows_kernel(pred_ptr, grids_ptr, strides_ptr, keep_ptr, count_ptr, cls_ptr, anchor_ptr, out_ptr, A, S, cap,
                 limit, M, RAW: tl.constexpr, ACC: tl.constexpr, GPU: tl.constexpr, BLOCK: tl.constexpr):
    DT: tl.constexpr = pred_ptr.dtype.element_ty
    blocks = tl.cdiv(M, BLOCK)
    b = tl.program_id(0) // blocks
    k = (tl.program_id(0) % blocks) * BLOCK + tl.arange(0, BLOCK)
    in_out = k < M
    ok = k < tl.load(count_ptr + b)
    r = tl.load(keep_ptr + b * limit + k, mask=ok, other=0)
    a = tl.load(anchor_ptr + b * cap + r, mask=ok, other=0)
    c = tl.load(cls_ptr + b * cap + r, mask=ok, other=0)
    rows = pred_ptr + (b * A + a).to(tl.int64) * S
    x1, y1, x2, y2 = _anchor_box(rows, grids_ptr, strides_ptr, a, ok, RAW, DT, ACC, GPU)
    obj = tl.load(rows + 4, mask=ok, other=0.0).to(ACC)
    cc = tl.load(rows + 5 + c, mask=ok, other=0.0).to(ACC)
    if RAW:
        obj = _sigmoid_as(obj, DT, ACC, GPU)
        cc = _sigmoid_as(cc, DT, ACC, GPU)
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
    with launch_on("postprocess_triton", prediction=pred, grids=g if raw else None, strides=s if raw else None):
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
    traceable(_score_kernel)[(triton.cdiv(num_anchors, block_r) * num_images,)](
        pred, conf_bits, keys, label, num_anchors, stride, num_classes, slots, RAW=raw, MULTI=multi_label,
        AGNOSTIC=class_agnostic, ACC=acc, GPU=GPU_MATH, BLOCK_R=block_r, BLOCK_C=block_c)
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
        traceable(_gather_kernel)[(triton.cdiv(cap, GATHER_BLOCK) * num_images,)](
            pred, g, s, order, label, n_valid, boxes, cls, anchor, num_anchors, stride, num_classes, slots, cap,
            RAW=raw, MULTI=multi_label, AGNOSTIC=class_agnostic, ACC=acc, GPU=GPU_MATH, BLOCK=GATHER_BLOCK)
    keep, count = launch_nms(boxes, None if class_agnostic else cls, n_valid, cap, float(nms_thre), limit)

    m = max_det if max_det > 0 else limit
    out = torch.empty((num_images, m, 7), dtype=pred.dtype, device=device)
    if m > 0:
        traceable(_rows_kernel)[(triton.cdiv(m, ROWS_BLOCK) * num_images,)](
            pred, g, s, keep, count, cls, anchor, out, num_anchors, stride, cap1, max(limit, 1), m, RAW=raw, ACC=acc,
            GPU=GPU_MATH, BLOCK=ROWS_BLOCK)
    if max_det <= 0:
        out = out[:, : int(count.max())].contiguous()
    return out, count


