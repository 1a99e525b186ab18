"""Non-maximum suppression with torchvision's signatures and semantics.

``nms(boxes, scores, iou_threshold)`` and ``batched_nms(boxes, scores, idxs, iou_threshold)`` are drop-in
replacements for ``torchvision.ops.nms`` / ``batched_nms``:

* ``boxes [N, 4]`` x1, y1, x2, y2; ``scores [N]`` (same dtype); ``idxs [N]`` category of each box;
* a box is suppressed by a better-scored kept box of its category when their IoU is strictly greater
  than ``iou_threshold`` (a box exactly at the threshold is kept);
* returns int64 indices of the kept boxes by decreasing score.

Rules that torchvision leaves open, followed by every backend here (as :mod:`yolox_fast.ops.reference`):

* IoU is ``inter / (area1 + area2 - inter)`` with ``w = max(0, min(x2) - max(x1))``, computed in float32
  whatever the input dtype and compared with the threshold rounded to float32. Two zero-area boxes have
  IoU 0/0 = NaN and never suppress each other.
* Equal scores keep index order (a box of lower index goes first), within and across categories.
* A NaN score raises ``ValueError`` (a NaN has no place in the order); +-inf scores are ordinary.
* float64 boxes are computed in float32 too, so a finite float64 coordinate beyond +-2**62
  (:data:`MAX_FLOAT64_COORDINATE`) raises ``ValueError``: its area could overflow float32 and the answer
  would silently differ from the float64 one (torchvision computes float64 in float64).

Backends (see :mod:`yolox_fast.ops.backends`): C++ CPU, CUDA (bitmask NMS reduced on the GPU), Triton,
batched PyTorch and the reference.
"""

from __future__ import annotations

import torch

from . import _extension
from . import backends, reference
from .arg_checks import check_args
from .triton_support import triton_unavailable

OP_NMS = "nms"
OP_BATCHED_NMS = "batched_nms"

__all__ = ["nms", "batched_nms", "greedy_nms_padded", "MAX_FLOAT64_COORDINATE"]

#: Largest finite ``|coordinate|`` of float64 boxes. NMS computes in float32, where sides up to 2**63 keep
#: every area (<= 2**126) and union (<= 2**127) finite; beyond it a float64 answer would silently be lost.
MAX_FLOAT64_COORDINATE = 2.0**62


if _extension.extension_loaded():

    @torch.library.register_fake("yolox_fast::nms")
    def _nms_fake(boxes, scores, iou_threshold):
        return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.long)

    @torch.library.register_fake("yolox_fast::batched_nms")
    def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
        return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.long)


# --------------------------------------------------------------------------------------------------
# Pure PyTorch: blocked greedy NMS, batched over independent problems
# --------------------------------------------------------------------------------------------------


def _iou_nms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a [G, n, 4]`` with ``b [G, m, 4]`` -> ``[G, n, m]``, operation by operation as
    :func:`yolox_fast.ops.reference.nms` (float32 inputs), so the results agree bit for bit."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    w = (torch.min(a[:, :, None, 2], b[:, None, :, 2]) - torch.max(a[:, :, None, 0], b[:, None, :, 0])).clamp(min=0)
    h = (torch.min(a[:, :, None, 3], b[:, None, :, 3]) - torch.max(a[:, :, None, 1], b[:, None, :, 1])).clamp(min=0)
    inter = w * h
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter)


def greedy_nms_padded(
    boxes: torch.Tensor,
    valid: torch.Tensor,
    iou_threshold: float,
    labels: torch.Tensor | None = None,
    block: int = 128,
) -> torch.Tensor:
    """Greedy NMS on ``G`` independent padded problems at once, in plain PyTorch.

    Args:
        boxes: ``[G, N, 4]`` float32 x1, y1, x2, y2, each row in priority order (best first).
        valid: ``[G, N]`` bool; the valid entries of a row come first.
        iou_threshold: suppress when IoU ``>`` it.
        labels: ``[G, N]`` int64 or None. When given, only boxes of equal label suppress each other and
            each row must be sorted by label first (equal labels contiguous), priority within a label.

    Returns:
        ``keep [G, N]`` bool.

    Blocks of ``block`` boxes in order: inside a block the greedy rule is solved by fixed-point
    iteration (``keep_i = not any(keep_j and S[j, i] for j < i)`` converges to the greedy answer in as
    many steps as the longest suppression chain, usually 2-4), then the block's kept boxes remove the
    later boxes they overlap. With labels, a block only looks as far as its last label run reaches.
    Memory is ``O(G * block * N)``; the loop runs ``N / block`` times.
    """
    num, n = valid.shape
    keep = torch.zeros_like(valid)
    if n == 0:
        return keep
    removed = ~valid
    thr = float(iou_threshold)  # `float32 tensor > thr` compares in float32, as the reference
    idx = torch.arange(n, device=boxes.device)
    if labels is not None:
        # run_end[g, i]: first position after i's label run (labels are sorted within each row).
        starts = torch.ones_like(valid)
        starts[:, 1:] = labels[:, 1:] != labels[:, :-1]
        start_pos = torch.where(starts, idx, n)
        nxt = torch.full_like(start_pos, n)
        nxt[:, :-1] = start_pos[:, 1:]
        run_end = nxt.flip(1).cummin(1).values.flip(1)
    n_valid = int(valid.sum(1).max())
    for start in range(0, n_valid, block):
        end = min(start + block, n_valid)
        blk = boxes[:, start:end]
        tri = idx[start:end, None] < idx[None, start:end]  # j after i
        s = (_iou_nms(blk, blk) > thr) & tri
        if labels is not None:
            s &= labels[:, start:end, None] == labels[:, None, start:end]
        base = ~removed[:, start:end]
        k = base
        while True:
            new = base & ~(s & k[:, :, None]).any(1)
            if torch.equal(new, k):
                break
            k = new
        keep[:, start:end] = k
        col_end = n_valid if labels is None else min(int(run_end[:, start:end].max()), n_valid)
        if col_end > end:
            later = boxes[:, end:col_end]
            s2 = _iou_nms(blk, later) > thr
            if labels is not None:
                s2 &= labels[:, start:end, None] == labels[:, None, end:col_end]
            removed[:, end:col_end] |= (s2 & k[:, :, None]).any(1)
    return keep


def _check_no_nan(scores: torch.Tensor, op: str) -> None:
    if scores.numel() and bool(torch.isnan(scores).any()):
        i = int(torch.isnan(scores).nonzero()[0, 0])
        raise ValueError(f"{op}: scores[{i}] is NaN; NMS needs ordered scores (+-inf are fine)")


def _check_float64_range(boxes: torch.Tensor, op: str) -> None:
    """Refuse finite float64 coordinates that float32 arithmetic cannot hold (module docstring)."""
    if boxes.dtype != torch.float64 or not boxes.numel() or torch.compiler.is_compiling():
        return
    too_big = torch.isfinite(boxes) & (boxes.abs() > MAX_FLOAT64_COORDINATE)
    if bool(too_big.any()):
        i, j = (int(v) for v in too_big.nonzero()[0])
        raise ValueError(f"{op}: boxes[{i}, {j}] = {float(boxes[i, j]):.6g} is beyond +-2**62; NMS computes IoU in "
                         "float32, where such a box's area overflows: scale the boxes down")


def _batched_nms_torch(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor | None, iou_threshold: float):
    _check_no_nan(scores, "batched_nms" if idxs is not None else "nms")
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    # Priority order: score descending, index ascending (stable sort); then by category, stably.
    order = torch.sort(scores, descending=True, stable=True).indices
    labels = None
    if idxs is not None:
        order = order[torch.sort(idxs[order], stable=True).indices]
        labels = idxs[order][None].long()
    keep = greedy_nms_padded(boxes[order].float()[None], torch.ones(1, n, dtype=torch.bool, device=boxes.device),
                             iou_threshold, labels)[0]
    kept = order[keep]
    if idxs is not None:  # merge the categories by score, equal scores by index
        kept = kept.sort().values
        kept = kept[torch.sort(scores[kept], descending=True, stable=True).indices]
    return kept


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


@backends.register(OP_NMS, "cpu", _extension.cpu_op_unavailable)
@backends.register(OP_NMS, "cuda", _extension.cuda_op_unavailable)
def _nms_ext(boxes, scores, iou_threshold):
    return torch.ops.yolox_fast.nms(boxes, scores, iou_threshold)


@backends.register(OP_BATCHED_NMS, "cpu", _extension.cpu_op_unavailable)
@backends.register(OP_BATCHED_NMS, "cuda", _extension.cuda_op_unavailable)
def _batched_nms_ext(boxes, scores, idxs, iou_threshold):
    return torch.ops.yolox_fast.batched_nms(boxes, scores, idxs, iou_threshold)


@backends.register(OP_NMS, "triton", triton_unavailable)
def _nms_triton(boxes, scores, iou_threshold):
    from yolox_fast.kernels.nms import nms_triton

    _check_no_nan(scores, "nms")
    return nms_triton(boxes, scores, None, iou_threshold)


@backends.register(OP_BATCHED_NMS, "triton", triton_unavailable)
def _batched_nms_triton(boxes, scores, idxs, iou_threshold):
    from yolox_fast.kernels.nms import nms_triton

    _check_no_nan(scores, "batched_nms")
    return nms_triton(boxes, scores, idxs, iou_threshold)


@backends.register(OP_NMS, "torch", backends.always)
def _nms_torch(boxes, scores, iou_threshold):
    return _batched_nms_torch(boxes, scores, None, iou_threshold)


@backends.register(OP_BATCHED_NMS, "torch", backends.always)
def _batched_nms_torch_backend(boxes, scores, idxs, iou_threshold):
    return _batched_nms_torch(boxes, scores, idxs, iou_threshold)


@backends.register(OP_NMS, "reference", backends.always)
def _nms_reference(boxes, scores, iou_threshold):
    _check_no_nan(scores, "nms")
    return reference.nms(boxes, scores, iou_threshold)


@backends.register(OP_BATCHED_NMS, "reference", backends.always)
def _batched_nms_reference(boxes, scores, idxs, iou_threshold):
    _check_no_nan(scores, "batched_nms")
    return reference.batched_nms(boxes, scores, idxs, iou_threshold)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, backend: str | None = None) -> torch.Tensor:
    """Greedy NMS, a drop-in for ``torchvision.ops.nms`` (module docstring for the exact rules).

    Args:
        boxes: ``[N, 4]`` x1, y1, x2, y2 (float16, bfloat16, float32 or float64; float64 within
            +-:data:`MAX_FLOAT64_COORDINATE`, else ``ValueError``).
        scores: ``[N]``, same dtype and device. NaN raises ``ValueError``.
        iou_threshold: suppress boxes whose IoU with a better kept box is ``> iou_threshold``.
        backend: force a backend (see :mod:`yolox_fast.ops.backends`).

    Returns:
        ``keep [K]`` int64 indices of the kept boxes, by decreasing score.
    """
    check_args("nms", boxes, scores, None)
    _check_float64_range(boxes, "nms")
    _, impl = backends.choose(OP_NMS, boxes.device, backend)
    return impl(boxes, scores, float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float,
                backend: str | None = None) -> torch.Tensor:
    """NMS within each category independently, a drop-in for ``torchvision.ops.batched_nms``.

    Args:
        boxes: ``[N, 4]`` x1, y1, x2, y2 (as :func:`nms`).
        scores: ``[N]``, same dtype and device. NaN raises ``ValueError``.
        idxs: ``[N]`` category of each box: integers, or floats holding class ids (as the official
            postprocess passes them); only equality matters.
        iou_threshold: suppress boxes whose IoU with a better kept box of the same category is ``>`` it.
        backend: force a backend (see :mod:`yolox_fast.ops.backends`).

    Returns:
        ``keep [K]`` int64 indices of the kept boxes, by decreasing score (equal scores by index).
    """
    if isinstance(idxs, torch.Tensor) and idxs.dtype.is_floating_point:
        # Float category ids: only equality matters, so number the distinct values (the op takes integers).
        idxs = torch.unique(idxs, return_inverse=True)[1]
    elif isinstance(idxs, torch.Tensor) and idxs.dtype == torch.bool:
        idxs = idxs.long()
    check_args("nms", boxes, scores, idxs)
    _check_float64_range(boxes, "batched_nms")
    _, impl = backends.choose(OP_BATCHED_NMS, boxes.device, backend)
    return impl(boxes, scores, idxs, float(iou_threshold))
