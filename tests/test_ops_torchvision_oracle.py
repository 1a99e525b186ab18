"""torchvision as the second oracle for nms, batched_nms and pairwise_iou, with the definition as the judge.

Generated cases of every kind (``tests/torchvision_oracle.py``: ties within and across categories,
duplicates, zero-area and negative-width boxes, negative, huge and float32-overflowing coordinates, NaN and
infinite coordinates, +-inf scores, empty input, thresholds 0 and 1, float16/float32/float64, N up to 2,000)
run on every CPU backend, on CUDA where there is a GPU (Triton:
``tests/test_ops_torchvision_oracle_triton.py``) and on torchvision. Every result, the reference's
included, is judged by the definition itself, order and all: the older tests compared the backends with the
reference as sets where scores tie, and never ran the reference on half boxes, which is how the reference's
cross-category tie order and its float16 overflow went unnoticed. Where torchvision disagrees, the definition
decides, and in the exact cases (one right answer) torchvision must then be the one it rejects. The deliberate
differences from torchvision are listed in docs/backends.md and checked at the end of this file.
"""

from __future__ import annotations

import pytest
import torch
from torchvision_oracle import iou_cases, iou_expected, iou_violation, nms_cases, nms_decisions, nms_violation

from yolox_fast.ops import _extension, backends, batched_nms, nms
from yolox_fast.ops.iou import pairwise_iou
from yolox_fast.ops.nms import MAX_FLOAT64_COORDINATE

torchvision = pytest.importorskip("torchvision", reason="torchvision (a development dependency) is the oracle here")

needs_ext = pytest.mark.skipif(not _extension.extension_loaded(), reason="yolox_fast._C is not built")
DTYPES = [torch.float16, torch.float32, torch.float64]


def cpu_backends(op: str) -> list[str]:
    """Every backend of ``op`` that runs on CPU tensors in this process (Triton has its own test file)."""
    return [b for b in backends.available_backends(op, "cpu") if b != "triton"]


# --------------------------------------------------------------------------------------------------
# The two bugs torchvision's cases found (issue 20)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", cpu_backends("pairwise_iou"))
def test_half_iou_is_computed_in_float32(backend, dtype):
    # the area 90,000 overflows float16 (max 65,504): computed in half, the IoU of a box with itself came out 0
    big = torch.tensor([[0.0, 0.0, 300.0, 300.0], [100.0, 0.0, 400.0, 300.0]], dtype=dtype)
    got = pairwise_iou(big, big, "xyxy", backend=backend)
    assert got.dtype == dtype
    assert got.float().tolist() == [[1.0, 0.5], [0.5, 1.0]]
    as_cxcywh = torch.tensor([[150.0, 150.0, 300.0, 300.0]], dtype=dtype)
    assert pairwise_iou(as_cxcywh, as_cxcywh, "cxcywh", backend=backend).item() == 1.0


@pytest.mark.parametrize("backend", cpu_backends("batched_nms"))
def test_batched_nms_orders_equal_scores_by_index_across_categories(backend):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.5, 0.5])
    assert batched_nms(boxes, scores, torch.tensor([1, 0]), 0.5, backend=backend).tolist() == [0, 1]
    three = torch.tensor([[0.0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]])
    keep = batched_nms(three, torch.tensor([0.5, 0.7, 0.5]), torch.tensor([2, 1, 0]), 0.5, backend=backend)
    assert keep.tolist() == [1, 0, 2]


# --------------------------------------------------------------------------------------------------
# Differential: every backend and torchvision, judged by the definition
# --------------------------------------------------------------------------------------------------


def _torchvision_nms(case, batched: bool) -> torch.Tensor:
    # torchvision's CPU nms has no float16 kernel: give it the float32 numbers yolox_fast computes with
    boxes, scores = case.boxes, case.scores
    if boxes.dtype == torch.float16:
        boxes, scores = boxes.float(), scores.float()
    if batched:
        return torchvision.ops.batched_nms(boxes, scores, case.idxs, case.threshold)
    return torchvision.ops.nms(boxes, scores, case.threshold)


def _check_nms_case(case):
    decisions = nms_decisions(case.boxes, case.threshold, case.exact)
    for batched in (False, True):
        op, idxs = ("batched_nms", case.idxs) if batched else ("nms", None)
        for backend in cpu_backends(op):
            if batched:
                keep = batched_nms(case.boxes, case.scores, case.idxs, case.threshold, backend=backend)
            else:
                keep = nms(case.boxes, case.scores, case.threshold, backend=backend)
            why = nms_violation(keep, case.scores, idxs, decisions)
            assert why is None, f"{op} backend={backend} on {case.name}: {why}"
        theirs = _torchvision_nms(case, batched)
        if case.exact and not torch.equal(theirs, keep):  # one right answer, and ours is it
            assert nms_violation(theirs, case.scores, idxs, decisions) is not None, (
                f"{op} on {case.name}: torchvision differs from us yet the definition accepts both")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_nms_every_kind_of_case(dtype):
    for case in nms_cases(dtype):
        _check_nms_case(case)


def test_nms_agrees_with_torchvision_where_it_is_right():
    """Float32, finite, distinct scores, coordinates >= 0: torchvision runs the same definition, so the
    answers are identical, including the random cases that the definition alone cannot always decide."""
    for case in nms_cases(torch.float32):
        if not (case.name.startswith(("random", "degenerate")) and case.boxes.numel()):
            continue
        if case.scores.unique().numel() != case.scores.numel() or bool((case.boxes < 0).any()):
            continue
        assert torch.equal(nms(case.boxes, case.scores, case.threshold), _torchvision_nms(case, False)), case.name
        if case.boxes.shape[0] > 1000:  # torchvision's per-category path (its offset trick shifts the rounding)
            assert torch.equal(batched_nms(case.boxes, case.scores, case.idxs, case.threshold),
                               _torchvision_nms(case, True)), case.name


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_iou_every_kind_of_case(dtype):
    for case in iou_cases(dtype):
        expected = iou_expected(case.boxes1, case.boxes2, case.fmt)
        for backend in cpu_backends("pairwise_iou"):
            got = pairwise_iou(case.boxes1, case.boxes2, case.fmt, backend=backend)
            why = iou_violation(got, case, expected)
            assert why is None, f"pairwise_iou backend={backend} on {case.name}: {why}"
        if dtype == torch.float16:
            continue  # torchvision subtracts float16 corners in float16: a different (rounded) definition
        theirs = torchvision.ops.box_iou(case.boxes1, case.boxes2, fmt=case.fmt)
        # The same operations in the same dtype: identical wherever torchvision's union is a positive
        # number; where it is 0 or NaN (empty boxes, non-finite or overflowing coordinates) torchvision gives
        # NaN and we 0, the official rule, as the definition checked above says.
        defined = ~theirs.isnan()
        assert torch.equal(got[defined], theirs[defined]), case.name
        assert not got[~defined].any(), case.name


needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and _extension.cuda_built()),
                                reason="needs a CUDA GPU and the CUDA build of yolox_fast._C")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_cuda_every_kind_of_case(dtype):
    for case in nms_cases(dtype):
        decisions = nms_decisions(case.boxes, case.threshold, case.exact)
        boxes, scores, idxs = case.boxes.cuda(), case.scores.cuda(), case.idxs.cuda()
        for op, keep, cats in (("nms", nms(boxes, scores, case.threshold, backend="cuda"), None),
                               ("batched_nms", batched_nms(boxes, scores, idxs, case.threshold, backend="cuda"),
                                case.idxs)):
            why = nms_violation(keep.cpu(), case.scores, cats, decisions)
            assert why is None, f"{op} backend=cuda on {case.name}: {why}"
    for case in iou_cases(dtype):
        got = pairwise_iou(case.boxes1.cuda(), case.boxes2.cuda(), case.fmt, backend="cuda").cpu()
        why = iou_violation(got, case, iou_expected(case.boxes1, case.boxes2, case.fmt))
        assert why is None, f"pairwise_iou backend=cuda on {case.name}: {why}"


# --------------------------------------------------------------------------------------------------
# Where yolox_fast deliberately differs from torchvision (docs/backends.md)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", cpu_backends("nms"))
def test_float64_beyond_float32_range_is_refused(backend):
    # NMS computes in float32: at 2**62 every area and union still fits, beyond it they may not
    edge = torch.tensor([[0.0, 0.0, 2.0**62, 2.0**62], [-(2.0**62), 0.0, 2.0**62, 2.0**62]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    # IoU 2**124 / 2**125 = 1/2 exactly
    assert nms(edge, scores, 0.5, backend=backend).tolist() == [0, 1] == torchvision.ops.nms(edge, scores, 0.5).tolist()
    assert nms(edge, scores, 0.49, backend=backend).tolist() == [0] == torchvision.ops.nms(edge, scores, 0.49).tolist()
    far = edge * 16  # torchvision computes these in float64; in float32 the areas overflow and nothing suppresses
    assert torchvision.ops.nms(far, scores, 0.49).tolist() == [0]
    with pytest.raises(ValueError, match=r"nms: boxes\[0, 2\] = 7.3787e\+19 is beyond \+-2\*\*62"):
        nms(far, scores, 0.49, backend=backend)
    one_far = edge.clone()
    one_far[1, 0] = -(2.0**66)
    with pytest.raises(ValueError, match=r"batched_nms: boxes\[1, 0\] = -7.3787e\+19 is beyond"):
        batched_nms(one_far, scores, torch.zeros(2, dtype=torch.long), 0.5, backend=backend)
    assert MAX_FLOAT64_COORDINATE == 2.0**62
    # non-finite coordinates are not out of range: they never suppress, in every dtype
    inf = torch.tensor([[0.0, 0.0, float("inf"), 1.0], [0.0, 0.0, float("inf"), 1.0]], dtype=torch.float64)
    assert nms(inf, scores, 0.5, backend=backend).tolist() == [0, 1]


@needs_ext
def test_documented_differences_from_torchvision():
    boxes = torch.tensor([[0, 0, 3, 3], [1, 1, 4, 4]])
    # integer boxes: torchvision's box_iou returns float IoUs, ours refuses (the result has the input's dtype)
    assert torchvision.ops.box_iou(boxes, boxes).dtype == torch.float32
    with pytest.raises(ValueError, match="floating point"):
        pairwise_iou(boxes, boxes, "xyxy")
    # empty 1-D boxes: torchvision's batched_nms returns early on any empty input; ours wants [0, 4]
    empty = torch.zeros(0)
    assert torchvision.ops.batched_nms(empty, empty, empty.long(), 0.5).tolist() == []
    with pytest.raises(ValueError, match=r"boxes must be \[N, 4\], got \[0\]"):
        batched_nms(empty, empty, empty.long(), 0.5)
    # malformed arguments: ValueError (torchvision: RuntimeError)
    with pytest.raises(RuntimeError):
        torchvision.ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"boxes must be \[N, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    # NaN scores: torchvision places them somewhere, we refuse
    nan_scores = torch.tensor([0.5, float("nan")])
    torchvision.ops.nms(boxes.float(), nan_scores, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        nms(boxes.float(), nan_scores, 0.5)
    # an empty box with itself: torchvision's box_iou 0/0 = NaN, ours 0 (the official bboxes_iou)
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    assert torchvision.ops.box_iou(point, point).isnan().all() and pairwise_iou(point, point, "xyxy").item() == 0.0
    # float16 IoU: torchvision returns float32, ours the input dtype (computed in float32, rounded once)
    half = boxes.half()
    assert torchvision.ops.box_iou(half, half).dtype == torch.float32
    assert pairwise_iou(half, half, "xyxy").dtype == torch.float16
