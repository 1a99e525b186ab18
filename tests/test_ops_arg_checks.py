"""One argument rule per op (csrc/common/checks.h, simota_checks.h): every backend gives the same error.

For each bad input the compiled op's own error is the expectation; the public wrapper with every CPU
backend (the C++ op, batched torch, the reference) and, for SimOTA, the assigner must raise exactly it.
"""

from __future__ import annotations

import re

import pytest
import torch
from simota_inputs import random_simota_batch

from yolox_fast import SimOTAAssigner
from yolox_fast.ops import _extension
from yolox_fast.ops import backends, simota
from yolox_fast.ops.iou import pairwise_iou
from yolox_fast.ops.nms import batched_nms, nms
from yolox_fast.ops.postprocess import OP as POSTPROCESS
from yolox_fast.ops.postprocess import postprocess_padded
from yolox_fast.ops.simota_variant import SEED

pytestmark = pytest.mark.skipif(not _extension.extension_loaded(), reason="yolox_fast._C is not built")
OPS = torch.ops.yolox_fast


def error_of(fn) -> tuple[type, str]:
    """The exception type and first message line ``fn()`` raises (fails the test when it raises nothing).

    The dispatcher's error for a non-tensor starts with the op's name (``yolox_fast::simota_assign()
    Expected a value of type 'Tensor' for argument 'pred_boxes' ...``): that prefix is dropped.
    """
    with pytest.raises((ValueError, TypeError, RuntimeError)) as exc:
        fn()
    return type(exc.value), re.sub(r"^[\w:]+\(\):? ", "", str(exc.value).splitlines()[0])


def cpu_backends(op: str) -> list[str]:
    return [b for b in backends.available_backends(op, "cpu") if b != "triton"]


# -- pairwise_iou -----------------------------------------------------------------------------------
BOX = torch.zeros(3, 4)
IOU_CASES = {
    "boxes1 not [N, 4]": (torch.zeros(3, 5), BOX),
    "boxes2 1-d": (BOX, torch.zeros(4)),
    "integer boxes": (BOX.long(), BOX.long()),
    "mixed dtypes": (BOX, BOX.double()),
}


@pytest.mark.parametrize("case", list(IOU_CASES))
def test_pairwise_iou_same_error_on_every_backend(case):
    a, b = IOU_CASES[case]
    want = error_of(lambda: OPS.pairwise_iou(a, b, False))
    assert want[0] is ValueError
    for backend in cpu_backends("pairwise_iou"):
        assert error_of(lambda backend=backend: pairwise_iou(a, b, backend=backend)) == want, backend


# -- nms / batched_nms ------------------------------------------------------------------------------
NMS_CASES = {
    "boxes not [N, 4]": (torch.zeros(3, 5), torch.zeros(3)),
    "scores of another length": (BOX, torch.zeros(4)),
    "integer scores": (BOX, torch.zeros(3, dtype=torch.long)),
    "mixed dtypes": (BOX, torch.zeros(3, dtype=torch.float64)),
}


@pytest.mark.parametrize("case", list(NMS_CASES))
def test_nms_same_error_on_every_backend(case):
    boxes, scores = NMS_CASES[case]
    want = error_of(lambda: OPS.nms(boxes, scores, 0.5))
    for backend in cpu_backends("nms"):
        assert error_of(lambda backend=backend: nms(boxes, scores, 0.5, backend=backend)) == want, backend
    want = error_of(lambda: OPS.batched_nms(boxes, scores, torch.zeros(3, dtype=torch.long), 0.5))
    assert want[1].startswith("batched_nms: ")
    for backend in cpu_backends("batched_nms"):
        got = error_of(lambda backend=backend: batched_nms(boxes, scores, torch.zeros(3, dtype=torch.long), 0.5,
                                                           backend=backend))
        assert got == want, backend


def test_batched_nms_category_ids_same_error_on_every_backend():
    idxs = torch.zeros(2, dtype=torch.long)
    want = error_of(lambda: OPS.batched_nms(BOX, torch.zeros(3), idxs, 0.5))
    assert "idxs must be [N] with N = 3" in want[1]
    for backend in cpu_backends("batched_nms"):
        assert error_of(lambda backend=backend: batched_nms(BOX, torch.zeros(3), idxs, 0.5, backend=backend)) == want


# -- postprocess ------------------------------------------------------------------------------------
PRED = torch.rand(1, 84, 5 + 3)
POSTPROCESS_CASES = {
    "too few columns": (PRED, 4, None, None),
    "no classes": (PRED, 0, None, None),
    "2-d prediction": (PRED[0], 3, None, None),
    "integer prediction": ((PRED * 10).long(), 3, None, None),
    "grids without strides": (PRED, 3, torch.zeros(84, 2), None),
    "grids of another length": (PRED, 3, torch.zeros(80, 2), torch.ones(80)),
    "strides of another length": (PRED, 3, torch.zeros(84, 2), torch.ones(83)),
}


@pytest.mark.parametrize("case", list(POSTPROCESS_CASES))
def test_postprocess_same_error_on_every_backend(case):
    pred, num_classes, grids, strides = POSTPROCESS_CASES[case]
    want = error_of(lambda: OPS.postprocess(pred, num_classes, 0.3, 0.45, False, False, 0, 100, grids, strides))
    for backend in cpu_backends(POSTPROCESS):
        got = error_of(lambda backend=backend: postprocess_padded(pred, num_classes, 0.3, 0.45, grids=grids,
                                                                  strides=strides, backend=backend))
        assert got == want, backend


# -- simota_assign and the assigner -----------------------------------------------------------------
def simota_batch():
    return random_simota_batch(2, 4, 3, 84, seed=0)


def simota_case(name: str):
    x = simota_batch()
    b, a = x.pred_boxes.shape[:2]
    changes = {
        "pred_boxes not [B, A, 4]": dict(pred_boxes=x.pred_boxes[..., :3]),
        "cls_logits of another A": dict(cls_logits=x.cls_logits[:, :-1]),
        "obj_logits [B, A, 2]": dict(obj_logits=torch.zeros(b, a, 2)),
        "grids [A, 3]": dict(grids=torch.zeros(a, 3)),
        "strides of another A": dict(strides=x.strides[:-1]),
        "gt_boxes [B, G, 5]": dict(gt_boxes=torch.zeros(b, 4, 5)),
        "float gt_classes": dict(gt_classes=x.gt_classes.float()),
        "gt_classes of another G": dict(gt_classes=x.gt_classes[:, :-1]),
        "int gt_mask": dict(gt_mask=x.gt_mask.int()),
        "integer pred_boxes": dict(pred_boxes=x.pred_boxes.long()),
        "pred_boxes not a tensor": dict(pred_boxes="boxes"),
    }[name]
    return x._replace(**changes), next(iter(changes))


SIMOTA_CASES = ["pred_boxes not [B, A, 4]", "cls_logits of another A", "obj_logits [B, A, 2]", "grids [A, 3]",
                "strides of another A", "gt_boxes [B, G, 5]", "float gt_classes", "gt_classes of another G",
                "int gt_mask", "integer pred_boxes", "pred_boxes not a tensor"]


@pytest.mark.parametrize("case", SIMOTA_CASES)
def test_simota_same_error_on_every_backend_and_the_assigner(case):
    x, argument = simota_case(case)
    want = error_of(lambda: OPS.simota_assign(*x, *SEED.op_args()))
    assert want[0] is (RuntimeError if case.endswith("not a tensor") else ValueError)
    assert argument in want[1]  # the message names the bad argument
    for backend in cpu_backends(simota.OP):
        assert error_of(lambda backend=backend: simota.simota_assign(*x, SEED, backend=backend)) == want, backend
        assert error_of(lambda backend=backend: SimOTAAssigner(3, backend=backend).assign(*x)) == want, backend
        assert error_of(lambda backend=backend: SimOTAAssigner(3, backend=backend).validate(*x)) == want, backend


def test_obj_logits_without_the_last_axis_is_accepted_everywhere():
    """[B, A] objectness: the op always took it; the assigner's own copy of the rule used to refuse it."""
    x = simota_batch()
    flat = x._replace(obj_logits=x.obj_logits[..., 0])
    want = OPS.simota_assign(*x, *SEED.op_args())
    for backend in cpu_backends(simota.OP):
        got = SimOTAAssigner(3, backend=backend).assign(*flat)
        assert torch.equal(got.fg_mask, want[0]) and torch.equal(got.matched_gt, want[1]), backend


def test_class_id_out_of_range_same_error_from_the_assigner_on_every_backend():
    """A value check: the C++ op reads the ids it needs anyway; the assigner checks them for the other backends."""
    x = simota_batch()
    x = x._replace(gt_classes=torch.where(x.gt_mask, torch.full_like(x.gt_classes, 3), x.gt_classes))
    want = error_of(lambda: OPS.simota_assign(*x, *SEED.op_args()))
    assert want[0] is ValueError and "is outside [0, 3)" in want[1]
    for backend in cpu_backends(simota.OP):
        assert error_of(lambda backend=backend: SimOTAAssigner(3, backend=backend).assign(*x)) == want, backend
