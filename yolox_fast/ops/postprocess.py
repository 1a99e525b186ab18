"""Inference postprocess: decode (optional), score filter and NMS over the head output, batched.

Two entry points over the same backends:

* :func:`postprocess` -- the official YOLOX function and signature: a list with, per image, ``[n, 7]``
  rows ``(x1, y1, x2, y2, obj, cls_conf, cls_id)`` by decreasing score, or ``None``;
* :func:`postprocess_padded` -- for deployment: fixed-size ``detections [B, max_det, 7]`` (zero rows
  after the last detection) and ``counts [B]``, with no host synchronisation on the GPU.

Semantics (those of :func:`yolox_fast.ops.reference.postprocess`, the official code):

* ``cls_conf, cls_id = max/argmax of the class scores`` (first index among equal maxima),
  ``score = obj * cls_conf``; a box is a candidate when ``score >= conf_thre``. Arithmetic and the
  comparison happen in the prediction's dtype, as the official code does (fp16 in, fp16 math).
* NMS over the candidates: class-aware (boxes of different classes never suppress each other) or
  class-agnostic, suppressing when the IoU (torchvision's formula, float32) is ``> nms_thre``.
* Rows are sorted by decreasing score; equal scores by class then anchor index (class-aware) or by
  anchor index (class-agnostic), as the reference.
* NaN: a row whose objectness or any class score is NaN has a NaN score, which fails ``>=`` and is
  dropped, as in the official code (no error: the GPU path cannot raise without a host sync).
  ``+inf`` scores pass and rank first. Boxes with NaN or infinite coordinates are kept or dropped by
  the IoU rule (a NaN IoU never suppresses).

Options beyond the official function (each backend implements all of them):

* raw input: ``grids [A, 2]`` + ``strides [A]`` (or ``input_size=(h, w)`` to derive them) mean the
  prediction holds raw head outputs (box offsets and logits, ``YOLOXHead.forward_raw``); the decode
  ``xy = (t + grid) * stride, wh = exp(t) * stride, sigmoid(obj, cls)`` is fused into the filter and
  only runs for candidates (sigmoid(obj) < conf rules a row out without touching its class logits).
* ``multi_label``: a box yields a candidate for every class with ``obj * cls >= conf_thre``
  (a NaN class score never passes; the others still may);
* ``pre_nms_topk``: only the best ``k`` candidates of each image (in the output order) enter NMS;
* ``max_det``: at most this many detections per image, the best ones.

GPU notes (CUDA and Triton backends): the fixed-size form never synchronises with the host; its NMS
bitmask holds ``B x cap x cap / 8`` bytes with ``cap = pre_nms_topk`` or, without it, every candidate slot
(``A``, or ``A x C`` multi-label), and asks for ``pre_nms_topk`` beyond 4 GiB (multi-label at 640 needs
it). The list form sizes it from the actual candidate count (it synchronises anyway). With float64
predictions, class-aware ties between different classes come out in anchor order on the GPU.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from . import _extension
from . import backends, reference
from .anchors import anchor_grid_for_input
from .arg_checks import check_args
from .box_coding import box_cxcywh_to_xyxy, decode_outputs
from .nms import greedy_nms_padded
from .triton_support import triton_unavailable

OP = "postprocess"

#: Default ``max_det`` of :func:`postprocess_padded`.
DEFAULT_MAX_DET = 300

#: What a detector predicts with unless told otherwise: score threshold (``obj * cls``), NMS IoU threshold
#: and detections per image. The one definition for ``predict``, :class:`yolox_fast.Detector`, the ONNX
#: Runtime model and the export's in-graph NMS. (Evaluation keeps nearly every box instead: 0.01 / 0.65.
#: :func:`postprocess` keeps the official function's own signature defaults.)
PREDICT_CONF = 0.25
PREDICT_IOU = 0.45
PREDICT_MAX_DET = 100

__all__ = ["PaddedDetections", "postprocess", "postprocess_padded", "padded_to_list", "DEFAULT_MAX_DET",
           "PREDICT_CONF", "PREDICT_IOU", "PREDICT_MAX_DET"]


class PaddedDetections(NamedTuple):
    """Fixed-size postprocess output.

    Attributes:
        detections: ``[B, M, 7]`` rows ``(x1, y1, x2, y2, obj, cls_conf, cls_id)`` in the prediction's
            dtype, by decreasing score; rows ``counts[b]:`` of image ``b`` are zeros.
        counts: ``[B]`` int64, the number of detections of each image.
    """

    detections: torch.Tensor
    counts: torch.Tensor


if _extension.extension_loaded():

    @torch.library.register_fake("yolox_fast::postprocess")
    def _postprocess_fake(prediction, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, pre_nms_topk,
                          max_det, grids, strides):
        m = max_det if max_det > 0 else torch.library.get_ctx().new_dynamic_size()
        b = prediction.shape[0]
        return prediction.new_empty((b, m, 7)), prediction.new_empty((b,), dtype=torch.long)


# --------------------------------------------------------------------------------------------------
# Reference: the official per-image loop, plus a readable per-image spec of the extra options
# --------------------------------------------------------------------------------------------------


def _by_score_then(score: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """Indices that order ``score [K]`` decreasing, equal scores by increasing ``tie [K]``."""
    order = torch.argsort(tie, stable=True)
    return order[torch.sort(score[order], descending=True, stable=True).indices]


def _postprocess_image_spec(pred, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, topk, max_det):
    """One decoded image ``[A, 5 + C]`` -> ``[n, 7]`` (possibly empty), every option, readably."""
    num_anchors = pred.shape[0]
    boxes = box_cxcywh_to_xyxy(pred[:, :4])
    obj = pred[:, 4]
    cls = pred[:, 5 : 5 + num_classes]
    if multi_label:
        anchor, label = (obj[:, None] * cls >= conf_thre).nonzero(as_tuple=True)  # anchor-major order
    else:
        cls_conf, cls_id = cls.max(1)
        anchor = (obj * cls_conf >= conf_thre).nonzero().squeeze(1)
        label = cls_id[anchor]
    det = torch.cat([boxes[anchor], obj[anchor, None], cls[anchor, label, None], label[:, None].to(pred.dtype)], 1)
    score = det[:, 4] * det[:, 5]
    # the output order: score descending, then class, anchor (class-aware) or anchor, class (agnostic)
    tie = anchor * num_classes + label if class_agnostic else label * num_anchors + anchor
    if topk > 0 and det.shape[0] > topk:
        chosen = _by_score_then(score, tie)[:topk].sort().values  # back to anchor-major order, as NMS needs
        det, score, label, tie = det[chosen], score[chosen], label[chosen], tie[chosen]
    if class_agnostic:
        keep = reference.nms(det[:, :4], score, nms_thre)
    else:  # batched_nms leaves equal scores in row (anchor) order: put them in class order
        keep = reference.batched_nms(det[:, :4], score, label, nms_thre)
        keep = keep[_by_score_then(score[keep], tie[keep])]
    det = det[keep]
    return det[:max_det] if max_det > 0 else det


def _list_to_padded(outputs, prediction, max_det):
    counts = [0 if o is None else o.shape[0] for o in outputs]
    m = max_det if max_det > 0 else max(counts, default=0)
    dets = prediction.new_zeros((len(outputs), m, 7))
    for b, o in enumerate(outputs):
        if o is not None:
            dets[b, : min(m, o.shape[0])] = o[:m]
    counts = torch.tensor(counts, dtype=torch.long, device=prediction.device)
    return dets, counts.clamp(max=m) if max_det > 0 else counts


@backends.register(OP, "reference", backends.always)
def _postprocess_reference(prediction, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, pre_nms_topk,
                           max_det, grids, strides):
    if grids is not None:
        prediction = decode_outputs(prediction, grids, strides)
    if not multi_label and pre_nms_topk <= 0 and max_det <= 0:
        outputs = reference.postprocess(prediction, num_classes, conf_thre, nms_thre, class_agnostic)
    else:
        outputs = []
        for image_pred in prediction:
            det = _postprocess_image_spec(image_pred, num_classes, conf_thre, nms_thre, class_agnostic, multi_label,
                                          pre_nms_topk, max_det)
            outputs.append(det if det.shape[0] else None)
    return _list_to_padded(outputs, prediction, max_det)


# --------------------------------------------------------------------------------------------------
# Batched PyTorch: every image at once, no per-image loop
# --------------------------------------------------------------------------------------------------


@backends.register(OP, "torch", backends.always)
def _postprocess_torch(prediction, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, pre_nms_topk,
                       max_det, grids, strides):
    num_images, num_anchors = prediction.shape[:2]
    num_classes = int(num_classes)
    device = prediction.device
    p = prediction[..., : 5 + num_classes]
    if grids is not None:
        p = decode_outputs(p, grids, strides)
    obj, cls = p[..., 4], p[..., 5:]
    if multi_label:
        score_all = obj[..., None] * cls
        img, anchor, label = (score_all >= conf_thre).nonzero(as_tuple=True)
        score = score_all[img, anchor, label]
    else:
        cls_conf, cls_id = cls.max(-1)
        score_all = obj * cls_conf
        img, anchor = (score_all >= conf_thre).nonzero(as_tuple=True)
        label = cls_id[img, anchor]
        score = score_all[img, anchor]

    # Output order: image, score descending, tie (three stable sorts, last key first).
    tie = anchor * num_classes + label if class_agnostic else label * num_anchors + anchor
    order = torch.argsort(tie, stable=True)
    order = order[torch.sort(score[order], descending=True, stable=True).indices]
    order = order[torch.sort(img[order], stable=True).indices]
    img, anchor, label = img[order], anchor[order], label[order]
    counts = torch.bincount(img, minlength=num_images)
    rank = torch.arange(img.numel(), device=device) - (counts.cumsum(0) - counts)[img]
    if pre_nms_topk > 0:
        sel = rank < pre_nms_topk
        img, anchor, label, rank = img[sel], anchor[sel], label[sel], rank[sel]
        counts = counts.clamp(max=pre_nms_topk)

    # NMS on padded [B, N] problems; class-aware groups each image's candidates by class (stably).
    group = label if not class_agnostic else torch.zeros_like(label)
    by_group = torch.sort(img * (num_classes + 1) + group, stable=True).indices
    n_max = int(counts.max()) if counts.numel() else 0
    slot = torch.arange(img.numel(), device=device) - (counts.cumsum(0) - counts)[img[by_group]]
    gi, ga = img[by_group], anchor[by_group]
    boxes = box_cxcywh_to_xyxy(p[gi, ga, :4])
    padded = torch.zeros((num_images, n_max, 4), dtype=torch.float32, device=device)
    padded[gi, slot] = boxes.float()
    valid = torch.zeros((num_images, n_max), dtype=torch.bool, device=device)
    valid[gi, slot] = True
    labels = None
    if not class_agnostic:
        labels = torch.full((num_images, n_max), num_classes, dtype=torch.long, device=device)
        labels[gi, slot] = group[by_group]
    keep = greedy_nms_padded(padded, valid, nms_thre, labels)
    kept = torch.zeros_like(img, dtype=torch.bool)
    kept[by_group] = keep[gi, slot]

    img, anchor, label = img[kept], anchor[kept], label[kept]
    counts = torch.bincount(img, minlength=num_images)
    rank = torch.arange(img.numel(), device=device) - (counts.cumsum(0) - counts)[img]
    if max_det > 0:
        sel = rank < max_det
        img, anchor, label, rank = img[sel], anchor[sel], label[sel], rank[sel]
        counts = counts.clamp(max=max_det)
    m = max_det if max_det > 0 else (int(counts.max()) if counts.numel() else 0)
    rows = torch.cat([box_cxcywh_to_xyxy(p[img, anchor, :4]), p[img, anchor, 4:5],
                      cls[img, anchor, label][:, None], label[:, None].to(p.dtype)], 1)
    dets = p.new_zeros((num_images, m, 7))
    dets[img, rank] = rows
    return dets, counts


# --------------------------------------------------------------------------------------------------
# Compiled backends
# --------------------------------------------------------------------------------------------------


@backends.register(OP, "cpu", _extension.cpu_op_unavailable)
@backends.register(OP, "cuda", _extension.cuda_op_unavailable)
def _postprocess_ext(prediction, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, pre_nms_topk,
                     max_det, grids, strides):
    return torch.ops.yolox_fast.postprocess(prediction, num_classes, conf_thre, nms_thre, class_agnostic, multi_label,
                                            pre_nms_topk, max_det, grids, strides)


@backends.register(OP, "triton", triton_unavailable)
def _postprocess_triton(prediction, num_classes, conf_thre, nms_thre, class_agnostic, multi_label, pre_nms_topk,
                        max_det, grids, strides):
    from yolox_fast.kernels.postprocess import postprocess_triton

    return postprocess_triton(prediction, num_classes, conf_thre, nms_thre, class_agnostic, multi_label,
                              pre_nms_topk, max_det, grids, strides)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _grid_for(height: int, width: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return anchor_grid_for_input(height, width, device=device)


def _prepare(prediction, num_classes, grids, strides, input_size, pre_nms_topk, max_det):
    """The Python API's own arguments (``input_size``, ``None`` limits), then the op's one rule
    (:mod:`yolox_fast.ops.arg_checks`: prediction, num_classes, grids, strides)."""
    if input_size is not None:
        if grids is not None or strides is not None:
            raise ValueError("give grids/strides or input_size, not both")
        check_args("postprocess", prediction, int(num_classes), None, None)
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        grids, strides = _grid_for(int(h), int(w), str(prediction.device))
    check_args("postprocess", prediction, int(num_classes), grids, strides)
    topk = 0 if pre_nms_topk is None else int(pre_nms_topk)
    limit = 0 if max_det is None else int(max_det)
    if pre_nms_topk is not None and topk < 1:
        raise ValueError(f"pre_nms_topk must be >= 1 or None, got {pre_nms_topk}")
    if max_det is not None and limit < 1:
        raise ValueError(f"max_det must be >= 1 or None, got {max_det}")
    return grids, strides, topk, limit


def postprocess_padded(
    prediction: torch.Tensor,
    num_classes: int,
    conf_thre: float = 0.7,
    nms_thre: float = 0.45,
    class_agnostic: bool = False,
    *,
    multi_label: bool = False,
    pre_nms_topk: int | None = None,
    max_det: int | None = DEFAULT_MAX_DET,
    grids: torch.Tensor | None = None,
    strides: torch.Tensor | None = None,
    input_size: int | tuple[int, int] | None = None,
    backend: str | None = None,
) -> PaddedDetections:
    """Batched postprocess with a fixed-size output (module docstring for the semantics).

    Args:
        prediction: ``[B, A, 5 + C]``: decoded cx, cy, w, h, objectness, class scores (the model's eval
            output), or raw head outputs when ``grids``/``strides`` or ``input_size`` are given.
            Never modified.
        num_classes: C (extra trailing columns are ignored).
        conf_thre: candidates have ``obj * cls_conf >= conf_thre``.
        nms_thre: suppress when IoU ``> nms_thre``.
        class_agnostic: one NMS over all classes instead of one per class.
        multi_label: a box keeps every class above the threshold.
        pre_nms_topk: only the best ``k`` candidates per image enter NMS (None: all).
        max_det: rows per image (None: as many as the largest count, a data-dependent size).
        grids, strides: ``[A, 2]`` grid cells and ``[A]`` strides of raw input
            (:func:`yolox_fast.ops.anchors.anchor_grid`).
        input_size: ``(h, w)`` (or one int) of the network input, to derive grids/strides for raw input.
        backend: force a backend (see :mod:`yolox_fast.ops.backends`).

    Returns:
        :class:`PaddedDetections` ``(detections [B, max_det, 7], counts [B] int64)``.
    """
    grids, strides, topk, limit = _prepare(prediction, num_classes, grids, strides, input_size, pre_nms_topk, max_det)
    _, impl = backends.choose(OP, prediction.device, backend)
    dets, counts = impl(prediction, int(num_classes), float(conf_thre), float(nms_thre), bool(class_agnostic),
                        bool(multi_label), topk, limit, grids, strides)
    return PaddedDetections(dets, counts)


def padded_to_list(detections: torch.Tensor, counts: torch.Tensor) -> list[torch.Tensor | None]:
    """``[B, M, 7]`` + ``counts [B]`` -> the official list: ``detections[b, :counts[b]]`` (a view) or None."""
    return [detections[b, :n] if n else None for b, n in enumerate(counts.tolist())]


def postprocess(
    prediction: torch.Tensor,
    num_classes: int,
    conf_thre: float = 0.7,
    nms_thre: float = 0.45,
    class_agnostic: bool = False,
    backend: str | None = None,
    *,
    multi_label: bool = False,
    pre_nms_topk: int | None = None,
    max_det: int | None = None,
    grids: torch.Tensor | None = None,
    strides: torch.Tensor | None = None,
    input_size: int | tuple[int, int] | None = None,
) -> list[torch.Tensor | None]:
    """The official YOLOX postprocess on the fast backends (see :func:`yolox_fast.ops.reference.postprocess`).

    Args:
        prediction: ``[B, A, 5 + C]`` decoded cx, cy, w, h, objectness, class scores. Never modified.
        num_classes: C.
        conf_thre: keep boxes with ``obj * cls_conf >= conf_thre``.
        nms_thre: suppress boxes whose IoU with a better one is ``> nms_thre``.
        class_agnostic: NMS over all classes at once.
        backend: force a backend (see :mod:`yolox_fast.ops.backends`).
        multi_label, pre_nms_topk, max_det, grids, strides, input_size: as :func:`postprocess_padded`
            (defaults: the official behaviour, no limits).

    Returns:
        Per image, ``[n, 7]`` ``(x1, y1, x2, y2, obj, cls_conf, cls_id)`` by decreasing score, or None.
        The tensors are views into one ``[B, M, 7]`` tensor.
    """
    dets, counts = postprocess_padded(prediction, num_classes, conf_thre, nms_thre, class_agnostic,
                                      multi_label=multi_label, pre_nms_topk=pre_nms_topk, max_det=max_det,
                                      grids=grids, strides=strides, input_size=input_size, backend=backend)
    return padded_to_list(dets, counts)
