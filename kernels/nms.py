"""Bitmask NMS in Triton, shared by ``nms`` / ``batched_nms`` and the postprocess (kernels/postprocess.py); the
CUDA backend's csrc/cuda/bitmask_nms.cuh as Triton kernels.

1. ``_nms_mask_kernel``: a fixed grid of programs per problem loops over the 64 x 64 tiles on and above the
   diagonal and within the problem's candidate count (read on the device: no sync); bit j of ``mask[i, w]`` =
   candidate ``64 w + j`` comes after ``i``, has its class (class-aware) and IoU > threshold with it;
2. ``_nms_reduce_kernel``: one program per problem walks the candidates in order, one reduction per 64
   candidates (the removed bits of their word), scalar bit tests in between, a row load per kept box only,
   and stops at ``limit``; the mask stays on the device.

IoU in float32, op by op as csrc/common/box_math.h, with an IEEE division and explicit products (_math.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import launch_on, traceable
from ._math import GPU_MATH, mul_rn

TILE = 64
MAX_MASK_BYTES = 4 << 30  # as the CUDA backend
#: programs per problem of the mask kernel, as the CUDA backend: ~4096 programs in all, at least 1 per problem
MASK_PROGRAMS = 4096


@triton.jit
def _nms_tile(boxes_ptr, cls_ptr, mask_ptr, g, n, cap, words, rb, cb, thr, HAS_CLS: tl.constexpr,
              TILE_: tl.constexpr, GPU: tl.constexpr):
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
    area_a = mul_rn(ax2 - ax1, ay2 - ay1, GPU)
    area_b = mul_rn(bx2 - bx1, by2 - by1, GPU)
    w = tl.where(ax2 < bx2, ax2, bx2) - tl.where(ax1 > bx1, ax1, bx1)
    h = tl.where(ay2 < by2, ay2, by2) - tl.where(ay1 > by1, ay1, by1)
    inter = mul_rn(tl.where(w < 0, 0.0, w), tl.where(h < 0, 0.0, h), GPU)
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
def _nms_mask_kernel(boxes_ptr, cls_ptr, n_ptr, mask_ptr, cap, words, programs, thr, HAS_CLS: tl.constexpr,
                     TILE_: tl.constexpr, GPU: tl.constexpr):
    # 1-D grid of G x `programs` (grid axes 1 and 2 stop at 65535): program p of problem g takes tiles p,
    # p + programs, ... of the nb x nb tile square of its n candidates, and skips those below the diagonal
    # (a box only suppresses later boxes). Tiles past n are never visited: sized by the count on the device,
    # the grid by the capacity.
    g = tl.program_id(0) // programs
    p = tl.program_id(0) % programs
    n = tl.minimum(tl.load(n_ptr + g), cap).to(tl.int32)
    nb = tl.cdiv(n, TILE_)
    # a while loop: Triton 3.6's interpreter cannot take a tensor as a `range` bound under NumPy 2
    t = p
    while t < nb * nb:
        rb = t // nb
        cb = t % nb
        if cb >= rb:
            _nms_tile(boxes_ptr, cls_ptr, mask_ptr, g, n, cap, words, rb, cb, thr, HAS_CLS, TILE_, GPU)
        t += programs


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
    if mask is None:
        mask = torch.empty((g, cap, words), dtype=torch.int64, device=boxes.device)
    programs = max(1, min(words * words, MASK_PROGRAMS // max(g, 1)))
    with launch_on("launch_nms", boxes=boxes, cls=cls, n_valid=n_valid, mask=mask, keep=keep):
        traceable(_nms_mask_kernel)[(programs * g,)](
            boxes, cls if cls is not None else n_valid, n_valid, mask, cap, words, programs, thr,
            HAS_CLS=cls is not None, TILE_=TILE, GPU=GPU_MATH)
        traceable(_nms_reduce_kernel)[(g,)](mask, n_valid, keep, count, cap, words, max(limit, 1),
                                            BLOCK_W=triton.next_power_of_2(words), TILE_=TILE)
    return keep, count


def nms_triton(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor | None, iou_threshold: float):
    """Triton (batched) NMS: kept indices by decreasing score, equal scores by index (NaN-free scores)."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order].to(torch.float32).contiguous()[None]
    cls = idxs[order].to(torch.int64).contiguous()[None] if idxs is not None else None
    n_valid = torch.full((1,), n, dtype=torch.int64, device=boxes.device)
    keep, count = launch_nms(sorted_boxes, cls, n_valid, n, float(iou_threshold), n)
    return order[keep[0, : int(count[0])].long()]
