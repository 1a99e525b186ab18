"""The Triton postprocess and NMS kernels (kernels/postprocess.py, kernels/nms.py) against the reference.

Marked ``triton``: natively on a GPU, on the CPU in the interpreter in its own process (``TRITON_INTERPRET=1
python -m pytest tests -m triton``, tests/op_testing.py); shapes stay small. Every tensor goes to
:func:`op_testing.triton_device`, and every launch is checked to be there (conftest.py).
"""

from __future__ import annotations

import pytest
import torch
from op_testing import INTERPRET, triton_device, triton_only

from tests.test_ops_postprocess import assert_same_detections, make_prediction
from yolox_fast.ops import postprocess, postprocess_padded, reference
from yolox_fast.ops.postprocess import _postprocess_image_spec

DEVICE = triton_device()
# numpy warns about 0 * inf and 0 / 0 in masked-off lanes under the interpreter
pytestmark = [*triton_only, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def small_prediction(**kw):
    kw = {"batch": 2, "size": 64, "num_classes": 8, "hot": 12, "seed": 0, **kw}
    out = make_prediction(**kw)
    if kw.get("raw"):
        return tuple(t.to(DEVICE) for t in out)
    return out.to(DEVICE)


def cpu(outputs):
    return [None if o is None else o.cpu() for o in outputs]


BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    INTERPRET, reason="the Triton interpreter truncates float32 -> bfloat16 instead of rounding to nearest"))


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, BF16, torch.float64])
def test_postprocess_matches_reference(agnostic, dtype):
    pred = small_prediction(seed=1, dtype=dtype)
    before = pred.clone()
    ref = reference.postprocess(pred.cpu(), 8, 0.01, 0.45, agnostic)
    out = postprocess(pred, 8, 0.01, 0.45, agnostic, backend="triton")
    assert_same_detections(cpu(out), ref)
    assert torch.equal(pred, before)


def test_postprocess_edge_cases():
    pred = small_prediction(seed=2)
    assert postprocess(pred, 8, 1.01, backend="triton") == [None, None]
    assert postprocess(pred[:, :0], 8, backend="triton") == [None, None]
    p = pred.clone()
    p[0, :, 2:4] = 0.0  # zero-area boxes never suppress
    p[1, :, :4] *= 1e6  # huge coordinates
    top = (p[0, :, 4] * p[0, :, 5:].max(1).values).argsort(descending=True)
    p[0, top[0], 4] = float("nan")  # NaN score: dropped (the reference's rule)
    p[0, top[1], 4] = float("inf")  # +inf: kept, first
    assert_same_detections(cpu(postprocess(p, 8, 0.01, 0.3, backend="triton")),
                           reference.postprocess(p.cpu(), 8, 0.01, 0.3))


@pytest.mark.parametrize("agnostic", [False, True])
def test_raw_input(agnostic):
    raw, grids, strides = small_prediction(seed=3, raw=True)
    ref = reference.postprocess(reference.decode_outputs(raw.cpu(), grids.cpu(), strides.cpu()), 8, 0.01, 0.45,
                                agnostic)
    out = postprocess(raw, 8, 0.01, 0.45, agnostic, grids=grids, strides=strides, backend="triton")
    assert_same_detections(cpu(out), ref, exact=False)


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("multi_label,topk,max_det", [(True, 0, 0), (False, 6, 0), (True, 20, 5)])
def test_options_and_padded(agnostic, multi_label, topk, max_det):
    pred = small_prediction(seed=4)
    expected = []
    for p in pred.cpu():
        d = _postprocess_image_spec(p, 8, 0.02, 0.45, agnostic, multi_label, topk, max_det)
        expected.append(d if d.shape[0] else None)
    out = postprocess(pred, 8, 0.02, 0.45, agnostic, backend="triton", multi_label=multi_label,
                      pre_nms_topk=topk or None, max_det=max_det or None)
    assert_same_detections(cpu(out), expected)
    dets, counts = postprocess_padded(pred, 8, 0.02, 0.45, agnostic, multi_label=multi_label,
                                      pre_nms_topk=topk or None, max_det=max_det or 30, backend="triton")
    assert dets.shape == (2, max_det or 30, 7)
    for b in range(2):
        n = int(counts[b])
        assert not dets[b, n:].any()
        if expected[b] is not None:
            assert torch.equal(dets[b, :n].cpu(), expected[b][: max_det or 30])


# --------------------------------------------------------------------------------------------------
# GPU readiness (issue 8): what the interpreter can show of the compiled path's contract
# --------------------------------------------------------------------------------------------------


def test_float64_ties_go_by_class_then_anchor():
    """float64 sort keys hold the score only; equal scores must still come out by class, then anchor (the
    reference's order), so that max_det keeps the same rows. Anchor 0 has class 5, anchor 1 class 2."""
    pred = torch.zeros(1, 4, 5 + 8, dtype=torch.float64)
    pred[0, :, :4] = torch.tensor([[10.0, 10, 4, 4], [50, 50, 4, 4], [90, 90, 4, 4], [130, 130, 4, 4]])
    pred[0, :, 4] = 1.0
    pred[0, 0, 5 + 5] = pred[0, 1, 5 + 2] = pred[0, 3, 5 + 2] = 0.5
    pred[0, 2, 5 + 1] = 0.25
    expected = _postprocess_image_spec(pred[0], 8, 0.1, 0.45, False, False, 0, 2)
    assert expected[:, 6].tolist() == [2.0, 2.0]  # the class-2 anchors 1 and 3 before anchor 0 (class 5)
    dets, counts = postprocess_padded(pred.to(DEVICE), 8, 0.1, 0.45, max_det=2, backend="triton")
    assert int(counts[0]) == 2 and torch.equal(dets[0].cpu(), expected)
    (det,) = postprocess(pred.to(DEVICE), 8, 0.1, 0.45, backend="triton")
    assert det[:, 6].tolist() == [2.0, 2.0, 5.0, 1.0]


def test_fixed_size_postprocess_makes_no_host_tensor():
    """The padded path never synchronises: no tensor built from host data (on a GPU, a host-to-device copy
    and a stream sync: the old `torch.tensor([conf_thre], device=...)`) and no scalar read back."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from yolox_fast.kernels.postprocess import postprocess_triton

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    pred = small_prediction(seed=5)
    for dtype in (torch.float32, torch.float64):
        with Record() as rec:
            # the op's own Python body (the custom op is opaque to a dispatch mode)
            postprocess_triton._init_fn(pred.to(dtype), 8, 0.25, 0.45, False, False, 0, 10, None, None)
        assert rec.ops, "nothing recorded"
        bad = [op for op in rec.ops if op.startswith(("aten.lift_fresh", "aten._local_scalar_dense", "aten.item"))]
        assert bad == [], f"host round trips in the fixed-size path: {bad}"


@pytest.mark.parametrize("value", [0.25, 0.3, 0.001, 1.01, 0.0, -0.0, 1e-8, 7e4, 1e39, float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_threshold_rounding_on_the_host_matches_torch(value, dtype):
    from yolox_fast.kernels.postprocess import float_bits, threshold_as

    expected = torch.tensor(value, dtype=dtype).item()
    got = threshold_as(value, dtype)
    assert float_bits(got) == float_bits(expected), (value, dtype, got, expected)
