"""Pairwise IoU in Triton: one program per (row of boxes1, block of boxes2)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

BLOCK_M = 128


@triton.jit
def _corners(p0, p1, p2, p3, XYXY: tl.constexpr):
    # Same operations as yolox_fast/ops/reference.py, so results agree bit for bit in float32.
    if XYXY:
        x1, y1, x2, y2 = p0, p1, p2, p3
        area = (p2 - p0) * (p3 - p1)
    else:
        x1, y1, x2, y2 = p0 - p2 / 2, p1 - p3 / 2, p0 + p2 / 2, p1 + p3 / 2
        area = p2 * p3
    return x1, y1, x2, y2, area


@triton.jit
def _pairwise_iou_kernel(b1_ptr, b2_ptr, out_ptr, M, XYXY: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < M
    ax1, ay1, ax2, ay2, area_a = _corners(
        tl.load(b1_ptr + 4 * i).to(tl.float32),
        tl.load(b1_ptr + 4 * i + 1).to(tl.float32),
        tl.load(b1_ptr + 4 * i + 2).to(tl.float32),
        tl.load(b1_ptr + 4 * i + 3).to(tl.float32),
        XYXY,
    )
    bx1, by1, bx2, by2, area_b = _corners(
        tl.load(b2_ptr + 4 * offs, mask=valid, other=0.0).to(tl.float32),
        tl.load(b2_ptr + 4 * offs + 1, mask=valid, other=0.0).to(tl.float32),
        tl.load(b2_ptr + 4 * offs + 2, mask=valid, other=0.0).to(tl.float32),
        tl.load(b2_ptr + 4 * offs + 3, mask=valid, other=0.0).to(tl.float32),
        XYXY,
    )
    tlx = tl.maximum(ax1, bx1)
    tly = tl.maximum(ay1, by1)
    brx = tl.minimum(ax2, bx2)
    bry = tl.minimum(ay2, by2)
    overlap = (tlx < brx) & (tly < bry)
    inter = tl.where(overlap, (brx - tlx) * (bry - tly), 0.0)
    union = area_a + area_b - inter
    iou = tl.where(union > 0, inter / tl.where(union > 0, union, 1.0), 0.0)
    tl.store(out_ptr + i * M + offs, iou.to(out_ptr.dtype.element_ty), mask=valid)


def launch_pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, xyxy: bool, out: torch.Tensor) -> None:
    """Fill ``out [N, M]`` with the IoU of contiguous ``boxes1 [N, 4]`` and ``boxes2 [M, 4]``."""
    n, m = boxes1.shape[0], boxes2.shape[0]
    if n == 0 or m == 0:
        return
    grid = (n, triton.cdiv(m, BLOCK_M))
    wrap_triton(_pairwise_iou_kernel)[grid](boxes1, boxes2, out, m, XYXY=xyxy, BLOCK=BLOCK_M)


@triton_op("yolox_fast::pairwise_iou_triton", mutates_args=())
def pairwise_iou_triton(boxes1: torch.Tensor, boxes2: torch.Tensor, xyxy: bool) -> torch.Tensor:
    """Triton pairwise IoU ``[N, 4] x [M, 4] -> [N, M]`` (float32 math, output in the input dtype)."""
    boxes1 = boxes1.contiguous()
    boxes2 = boxes2.contiguous()
    out = boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))
    launch_pairwise_iou(boxes1, boxes2, xyxy, out)
    return out
