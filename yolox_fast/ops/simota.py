"""SimOTA assignment: the dispatching wrapper over the backends.

Every backend takes the same padded batch (a :class:`~yolox_fast.ops.simota_batch.SimOTABatch`) and a
variant, and returns ``(fg_mask [B, A] bool, matched_gt [B, A] int64, matched_iou [B, A] float32)``; see
:meth:`yolox_fast.SimOTAAssigner.assign` for the formats.

Backends (:mod:`yolox_fast.ops.backends` picks the first available, or the forced one):

* ``cuda`` / ``cpu``: the ``torch.ops.yolox_fast.simota_assign`` op of ``yolox_fast._C``
  (``csrc/cuda/simota_kernel.cu``, ``csrc/cpu/simota_kernel.cpp``, math in ``csrc/common/simota_math.h``);
* ``triton``: ``yolox_fast.kernels.simota`` (CUDA tensors; CPU only under ``TRITON_INTERPRET=1``);
* ``torch``: :func:`yolox_fast.ops.simota_torch.simota_assign_torch`, batched pure PyTorch;
* ``reference``: :func:`yolox_fast.ops.reference.simota_assign`, image by image (the specification).

All of them follow the reference's tie rules (lowest anchor index first among equal costs, lowest GT
index wins a contested anchor) and compute the cost in float32 whatever the prediction dtype.
"""

from __future__ import annotations

import torch

from . import _extension
from . import backends, reference
from .arg_checks import check_args
from .simota_batch import SimOTABatch
from .simota_torch import simota_assign_torch
from .simota_variant import SEED, SimOTAVariant
from .triton_support import triton_unavailable

OP = "simota_assign"


def _fake_outputs(pred_boxes: torch.Tensor):
    b, a = pred_boxes.shape[:2]
    return (
        pred_boxes.new_empty((b, a), dtype=torch.bool),
        pred_boxes.new_empty((b, a), dtype=torch.long),
        pred_boxes.new_empty((b, a), dtype=torch.float32),
    )


if _extension.extension_loaded():

    @torch.library.register_fake("yolox_fast::simota_assign")
    def _simota_assign_fake(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask,
                            center_radius, center_only, penalty):
        return _fake_outputs(pred_boxes)


@backends.register(OP, "cpu", _extension.cpu_op_unavailable)
@backends.register(OP, "cuda", _extension.cuda_op_unavailable)
def _simota_ext(batch: SimOTABatch, variant: SimOTAVariant):
    return torch.ops.yolox_fast.simota_assign(*batch, *variant.op_args())


@backends.register(OP, "triton", triton_unavailable)
def _simota_triton(batch: SimOTABatch, variant: SimOTAVariant):
    from yolox_fast.kernels.simota import simota_assign_triton

    return simota_assign_triton(*batch, *variant.op_args())


@backends.register(OP, "torch", backends.always)
def _simota_torch(batch: SimOTABatch, variant: SimOTAVariant):
    return simota_assign_torch(*batch, variant)


@backends.register(OP, "reference", backends.always)
def _simota_reference(batch: SimOTABatch, variant: SimOTAVariant):
    return reference.simota_assign(*batch, variant)


def assign_batch(batch: SimOTABatch, variant: SimOTAVariant = SEED, backend: str | None = None,
                 check: bool = True):
    """Run SimOTA on ``batch`` with the chosen (or best available) backend.

    ``check=False`` skips the op's argument rule, for a batch already checked against it (the assigner's
    ``validate`` runs it). Returns and ``backend`` as :func:`simota_assign`.
    """
    if check:
        check_args(OP, *batch)
    _, impl = backends.choose(OP, batch.pred_boxes.device, backend)
    return impl(batch, variant)


def simota_assign(pred_boxes: torch.Tensor, cls_logits: torch.Tensor, obj_logits: torch.Tensor,
                  grids: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                  gt_mask: torch.Tensor, variant: SimOTAVariant = SEED, backend: str | None = None):
    """Run SimOTA on a padded batch with the chosen (or best available) backend.

    Shapes as :class:`~yolox_fast.ops.simota_batch.SimOTABatch`; ``variant`` from
    :mod:`yolox_fast.ops.simota_variant`. Returns ``fg_mask [B, A]``,
    ``matched_gt [B, A]`` (index into the padded G axis, -1 background), ``matched_iou [B, A]``.
    ``backend`` forces one of :data:`yolox_fast.ops.backends.BACKENDS` (else ``$YOLOX_FAST_BACKEND``,
    else the best available for the device). Bad arguments raise the op's one rule
    (:mod:`yolox_fast.ops.arg_checks`) whatever the backend.
    """
    batch = SimOTABatch(pred_boxes, cls_logits, obj_logits, grids, strides, gt_boxes, gt_classes, gt_mask)
    return assign_batch(batch, variant, backend)

