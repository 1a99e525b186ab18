"""Pairwise IoU: the public wrapper over the C++ CPU, CUDA, Triton and PyTorch backends."""

from __future__ import annotations

import torch

from . import _extension
from . import backends, reference
from .arg_checks import check_args
from .triton_support import triton_unavailable

OP = "pairwise_iou"


if _extension.extension_loaded():

    @torch.library.register_fake("yolox_fast::pairwise_iou")
    def _pairwise_iou_fake(boxes1, boxes2, xyxy):
        return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


@backends.register(OP, "cpu", _extension.cpu_op_unavailable)
@backends.register(OP, "cuda", _extension.cuda_op_unavailable)
def _iou_ext(boxes1, boxes2, xyxy: bool):
    return torch.ops.yolox_fast.pairwise_iou(boxes1, boxes2, xyxy)


@backends.register(OP, "triton", triton_unavailable)
def _iou_triton(boxes1, boxes2, xyxy: bool):
    from yolox_fast.kernels.iou import pairwise_iou_triton

    return pairwise_iou_triton(boxes1, boxes2, xyxy)


@backends.register(OP, "torch", backends.always)
@backends.register(OP, "reference", backends.always)
def _iou_torch(boxes1, boxes2, xyxy: bool):
    # The reference is already vectorised over all pairs: it is the batched torch path too.
    return reference.pairwise_iou(boxes1, boxes2, "xyxy" if xyxy else "cxcywh")


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, fmt: str = "cxcywh", backend: str | None = None):
    """IoU of every box of ``boxes1 [N, 4]`` with every box of ``boxes2 [M, 4]`` -> ``[N, M]``.

    Args:
        boxes1, boxes2: float boxes on the same device, same dtype.
        fmt: ``"cxcywh"`` (centre, size) or ``"xyxy"`` (corners).
        backend: force a backend (see :mod:`yolox_fast.ops.backends`).

    The official ``bboxes_iou`` semantics (see :func:`yolox_fast.ops.reference.pairwise_iou`).
    Half-precision inputs are computed in float32 and rounded once. Bad arguments raise the op's one rule
    (:mod:`yolox_fast.ops.arg_checks`) whatever the backend.
    """
    if fmt not in ("cxcywh", "xyxy"):
        raise ValueError(f"fmt must be 'cxcywh' or 'xyxy', got {fmt!r}")
    check_args("pairwise_iou", boxes1, boxes2)
    _, impl = backends.choose(OP, boxes1.device, backend)
    return impl(boxes1, boxes2, fmt == "xyxy")
