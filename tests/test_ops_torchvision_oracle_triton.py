"""The Triton nms, batched_nms and pairwise IoU judged by the definition, on small cases of every kind.

The small variant of ``tests/test_ops_torchvision_oracle.py`` (same generators and oracle, from
``tests/torchvision_oracle.py``). Marked ``triton``: natively on a GPU; on a CPU under the Triton interpreter, in its own process
(``TRITON_INTERPRET=1 python -m pytest tests -m triton``, as scripts/test.sh runs it).
"""

from __future__ import annotations

import pytest
import torch

from torchvision_oracle import iou_cases, iou_expected, iou_violation, nms_cases, nms_decisions, nms_violation  # noqa: E402

import op_testing  # noqa: E402
from op_testing import triton_device  # noqa: E402

from yolox_fast.ops import batched_nms, nms  # noqa: E402
from yolox_fast.ops.iou import pairwise_iou  # noqa: E402

DEVICE = triton_device()
DTYPES = [torch.float16, torch.float32, torch.float64]
_WHY_NOT = op_testing._why_not("nms", "triton") or op_testing._why_not("pairwise_iou", "triton")
pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT)),
    # numpy warns about 0 * inf and 0 / 0 in masked-off lanes under the interpreter
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_triton_nms_every_kind_of_case(dtype):
    for case in nms_cases(dtype, small=True):
        decisions = nms_decisions(case.boxes, case.threshold, case.exact)
        boxes, scores, idxs = case.boxes.to(DEVICE), case.scores.to(DEVICE), case.idxs.to(DEVICE)
        keep = nms(boxes, scores, case.threshold, backend="triton").cpu()
        why = nms_violation(keep, case.scores, None, decisions)
        assert why is None, f"nms on {case.name}: {why}"
        keep = batched_nms(boxes, scores, idxs, case.threshold, backend="triton").cpu()
        why = nms_violation(keep, case.scores, case.idxs, decisions)
        assert why is None, f"batched_nms on {case.name}: {why}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_triton_iou_every_kind_of_case(dtype):
    for case in iou_cases(dtype, small=True):
        got = pairwise_iou(case.boxes1.to(DEVICE), case.boxes2.to(DEVICE), case.fmt, backend="triton").cpu()
        why = iou_violation(got, case, iou_expected(case.boxes1, case.boxes2, case.fmt))
        assert why is None, f"pairwise_iou on {case.name}: {why}"
