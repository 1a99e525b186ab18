"""Triton postprocess and NMS against the reference.

On a CPU these run under the Triton interpreter, which must be switched on before triton is imported,
so in their own process: ``TRITON_INTERPRET=1 python -m pytest tests/triton_ops``. Shapes stay small there.
With a CUDA GPU they run compiled, on the GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 (set before triton is imported: run "
                "`TRITON_INTERPRET=1 python -m pytest tests/triton_ops` in its own process)", allow_module_level=True)
pytest.importorskip("triton")

from tests.test_ops_postprocess import assert_same_detections, make_prediction  # noqa: E402
from yolox_fast.ops import batched_nms, nms, postprocess, postprocess_padded, reference  # noqa: E402
from yolox_fast.ops.postprocess import _postprocess_image_spec  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
# numpy warns about 0 * inf and 0 / 0 in masked-off lanes under the interpreter
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def small_prediction(**kw):
    kw = {"batch": 2, "size": 64, "num_classes": 8, "hot": 12, "seed": 0, **kw}
    out = make_prediction(**kw)
    if kw.get("raw"):
        return tuple(t.to(DEVICE) for t in out)
    return out.to(DEVICE)


def cpu(outputs):
    return [None if o is None else o.cpu() for o in outputs]


BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="the Triton interpreter truncates float32 -> bfloat16 instead of rounding to nearest"))


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


def test_postprocess_thresholds_inclusive_and_strict():
    pred = torch.zeros(1, 3, 6)
    pred[0, :, :4] = torch.tensor([[1.5, 0.5, 3.0, 1.0], [2.5, 0.5, 3.0, 1.0], [10.5, 0.5, 3.0, 1.0]])
    pred[0, :, 4] = torch.tensor([1.0, 0.5, 0.25])
    pred[0, :, 5] = torch.tensor([0.75, 1.0, 1.0])
    (det,) = postprocess(pred.to(DEVICE), 1, 0.25, 0.5, backend="triton")
    assert det[:, 4].tolist() == [1.0, 0.5, 0.25]
    (det,) = postprocess(pred.to(DEVICE), 1, 0.25, 0.49, backend="triton")
    assert det[:, 4].tolist() == [1.0, 0.25]


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


@pytest.mark.parametrize("n", [0, 1, 70, 200])
def test_nms_matches_reference(n):
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 1], 1)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 3, (n,), generator=g)
    assert torch.equal(nms(boxes.to(DEVICE), scores.to(DEVICE), 0.5, backend="triton").cpu(),
                       reference.nms(boxes, scores, 0.5))
    assert torch.equal(batched_nms(boxes.to(DEVICE), scores.to(DEVICE), idxs.to(DEVICE), 0.5, backend="triton").cpu(),
                       reference.batched_nms(boxes, scores, idxs, 0.5))


def test_nms_edge_cases():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0]]).repeat(5, 1).to(DEVICE)
    assert nms(boxes, torch.full((5,), 0.5, device=DEVICE), 0.5, backend="triton").tolist() == [0]
    pts = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]], device=DEVICE)
    assert nms(pts, torch.tensor([0.9, 0.8], device=DEVICE), 0.1, backend="triton").tolist() == [0, 1]
    at = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]], device=DEVICE)  # IoU exactly 0.5
    assert nms(at, torch.tensor([0.9, 0.8], device=DEVICE), 0.5, backend="triton").tolist() == [0, 1]
    with pytest.raises(ValueError, match="NaN"):
        nms(at, torch.tensor([0.9, float("nan")], device=DEVICE), 0.5, backend="triton")


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

    from yolox_fast.kernels.nms import postprocess_triton

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
    from yolox_fast.kernels.nms import float_bits, threshold_as

    expected = torch.tensor(value, dtype=dtype).item()
    got = threshold_as(value, dtype)
    assert float_bits(got) == float_bits(expected), (value, dtype, got, expected)


def test_mask_kernel_visits_only_tiles_within_the_count():
    """The NMS mask grid is sized by the capacity but each problem's work by its count (read on the device):
    tiles past the count and below the diagonal are never touched, the others hold the suppression bits."""
    import triton

    from yolox_fast.kernels import nms as k

    cap, n = 400, [70, 0, 130]
    words = triton.cdiv(cap, k.TILE)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, cap, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(3, cap, 2, generator=g) * 40 + 1], 2).contiguous()
    sentinel = 0x5A5A5A5A
    mask = torch.full((3, cap, words), sentinel, dtype=torch.int64)
    keep, count = k.launch_nms(boxes, None, torch.tensor(n), cap, 0.3, 1000, mask=mask)
    for p, m in enumerate(n):
        iou = reference.pairwise_iou(boxes[p, :m], boxes[p, :m], "xyxy")
        nb = triton.cdiv(m, k.TILE)
        assert (mask[p, m:] == sentinel).all()
        for i in range(m):
            for w in range(words):
                word = int(mask[p, i, w])
                if w < i // k.TILE or w >= nb:
                    assert word == sentinel, (p, i, w)  # below the diagonal or past the count: not touched
                    continue
                bits = [j for j in range(k.TILE) if (word >> j) & 1]
                expected = [j - w * k.TILE for j in range(w * k.TILE, min(m, (w + 1) * k.TILE))
                            if j > i and iou[i, j] > 0.3]
                assert bits == expected, (p, i, w)
        by_rank = -torch.arange(m, dtype=torch.float32)  # scores in priority order
        assert torch.equal(keep[p, : int(count[p])].long(), reference.nms(boxes[p, :m], by_rank, 0.3))
