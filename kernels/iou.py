"""Pairwise IoU in Triton: one program per (row of boxes1, block of boxes2), on a 1-D grid."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ._launch import launch_on, traceable
from ._math import GPU_MATH, div_rn, half, mul_rn

BLOCK_M = 128


@triton.jit
def _corners(p0, p1, p2, p3, XYXY: tl.constexpr, GPU: tl.constexpr):
    # Same operations as yolox_fast/ops/reference.py, so results agree bit for bit (products that feed an
    # addition are explicit: never contracted into an FMA, see _math.py).
    if XYXY:
        x1, y1, x2, y2 = p0, p1, p2, p3
        area = mul_rn(p2 - p0, p3 - p1, GPU)
    else:
        hw = half(p2, GPU)  # x / 2 is exact, so x * 0.5 is the same number, without a division instruction
        hh = half(p3, GPU)
        x1, y1, x2, y2 = p0 - hw, p1 - hh, p0 + hw, p1 + hh
        area = mul_rn(p2, p3, GPU)
    return x1, y1, x2, y2, area


@triton.jit
def _pairwise_iou_kernel(b1_ptr, b2_ptr, out_ptr, M, XYXY: tl.constexpr, ACC: tl.constexpr, GPU: tl.constexpr,
                         BLOCK: tl.constexpr):
    # 1-D grid (grid axes 1 and 2 stop at 65535); offsets in int64: N * M reaches 2^31 at N = 256, M = 8.4M.
    blocks = tl.cdiv(M, BLOCK)
    pid = tl.program_id(0)
    i = (pid // blocks).to(tl.int64)
    offs = (pid % blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < M
    ax1, ay1, ax2, ay2, area_a = _corners(
        tl.load(b1_ptr + 4 * i).to(ACC),
        tl.load(b1_ptr + 4 * i + 1).to(ACC),
        tl.load(b1_ptr + 4 * i + 2).to(ACC),
        tl.load(b1_ptr + 4 * i + 3).to(ACC),
        XYXY, GPU,
    )
    bx1, by1, bx2, by2, area_b = _corners(
        tl.load(b2_ptr + 4 * offs, mask=valid, other=0.0).to(ACC),
        tl.load(b2_ptr + 4 * offs + 1, mask=valid, other=0.0).to(ACC),
        tl.load(b2_ptr + 4 * offs + 2, mask=valid, other=0.0).to(ACC),
        tl.load(b2_ptr + 4 * offs + 3, mask=valid, other=0.0).to(ACC),
        XYXY, GPU,
    )
    tlx = tl.maximum(ax1, bx1)
    tly = tl.maximum(ay1, by1)
    brx = tl.minimum(ax2, bx2)
    bry = tl.minimum(ay2, by2)
    overlap = (tlx < brx) & (tly < bry)
    inter = tl.where(overlap, mul_rn(brx - tlx, bry - tly, GPU), 0.0)
    union = area_a + area_b - inter
    iou = tl.where(union > 0, div_rn(inter, tl.where(union > 0, union, 1.0)), 0.0)
    tl.store(out_ptr + i * M + offs, iou.to(out_ptr.dtype.element_ty), mask=valid)


def iou_acc(dtype: torch.dtype):
    """The compute dtype of the IoU kernel: float64 for float64 boxes (as the CUDA op and the reference),
    else float32 (half and bfloat16 computed in float32, rounded once)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def launch_pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, xyxy: bool, out: torch.Tensor) -> None:
    """Fill ``out [N, M]`` with the IoU of contiguous ``boxes1 [N, 4]`` and ``boxes2 [M, 4]``."""
    n, m = boxes1.shape[0], boxes2.shape[0]
    if n == 0 or m == 0:
        return
    grid = (n * triton.cdiv(m, BLOCK_M),)
    with launch_on("launch_pairwise_iou", boxes1=boxes1, boxes2=boxes2, out=out):
        traceable(_pairwise_iou_kernel)[grid](boxes1, boxes2, out, m, XYXY=xyxy, ACC=iou_acc(boxes1.dtype),
                                              GPU=GPU_MATH, BLOCK=BLOCK_M)


@triton_op("yolox_fast::pairwise_iou_triton", mutates_args=())
def pairwise_iou_triton(boxes1: torch.Tensor, boxes2: torch.Tensor, xyxy: bool) -> torch.Tensor:
    """Triton pairwise IoU ``[N, 4] x [M, 4] -> [N, M]`` (float32 math, float64 for float64 boxes; output in
    the input dtype)."""
    boxes1 = boxes1.contiguous()
    boxes2 = boxes2.contiguous()
    out = boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))
    launch_pairwise_iou(boxes1, boxes2, xyxy, out)
    return out
