"""nms / batched_nms (yolox_fast/ops/nms.py): every backend against the reference and torchvision
(backends and devices: tests/op_testing.py).

Kept sets must match exactly; the order must be by decreasing score (the order among exactly equal scores
may differ from torchvision's, as torchvision itself allows). Against the reference, whose tie rule we
follow, the result is compared exactly unless several categories share a score.
"""

from __future__ import annotations

import pytest
import torch
from op_testing import backend_params, big_case, needs_cuda, needs_ext, on_device

from yolox_fast.ops import _extension, backends, batched_nms, nms, reference

try:
    import torchvision
except ImportError:  # a dev/test dependency only
    torchvision = None

needs_tv = pytest.mark.skipif(torchvision is None, reason="torchvision is not installed")

OP = "batched_nms"
#: every backend (the case table below runs on each)
ALL_BACKENDS = backend_params(OP)
#: the fast ones, for cases too big for the reference's Python loop and for the Triton interpreter
FAST_BACKENDS = backend_params(OP, ("cpu", "torch", "cuda", "triton"))


def run_nms(boxes, scores, thr, backend):
    """``nms`` of ``backend`` on its device; kept indices back on the CPU."""
    return nms(on_device(boxes, backend), on_device(scores, backend), thr, backend=backend).cpu()


def run_batched_nms(boxes, scores, idxs, thr, backend):
    return batched_nms(on_device(boxes, backend), on_device(scores, backend), on_device(idxs, backend), thr,
                       backend=backend).cpu()


def random_boxes(n: int, scale: float = 640.0, max_size: float = 160.0, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * max_size + 1.0
    return torch.cat([xy, xy + wh], 1).to(dtype)


def random_scores(n: int, seed: int = 0, dtype=torch.float32):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)


def assert_same_keep(keep: torch.Tensor, expected: torch.Tensor, scores: torch.Tensor):
    """Same kept set, int64, sorted by decreasing score."""
    assert keep.dtype == torch.long
    assert sorted(keep.tolist()) == sorted(expected.tolist())
    s = scores[keep].float()
    assert bool((s[1:] <= s[:-1]).all()), "keep is not sorted by decreasing score"


# --------------------------------------------------------------------------------------------------
# Random inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("n", [0, 1, 2, 57, 70, 200, 600])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_reference(backend, n, thr):
    boxes, scores = random_boxes(n, seed=n), random_scores(n, seed=n)
    expected = reference.nms(boxes, scores, thr)
    keep = run_nms(boxes, scores, thr, backend)
    assert torch.equal(keep, expected)  # no ties: exactly the reference's order
    if torchvision is not None:
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("n,num_cat", [(0, 1), (1, 3), (300, 5), (800, 80)])
def test_batched_nms_matches_reference(backend, n, num_cat):
    boxes, scores = random_boxes(n, seed=n), random_scores(n, seed=n)
    idxs = torch.randint(0, num_cat, (n,), generator=torch.Generator().manual_seed(3))
    expected = reference.batched_nms(boxes, scores, idxs, 0.5)
    keep = run_batched_nms(boxes, scores, idxs, 0.5, backend)
    assert torch.equal(keep, expected)
    if torchvision is not None:
        assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@needs_tv
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_many_boxes_and_many_classes(backend):
    big_case(backend)
    # 30,000 boxes, class ids up to 1000 (the reference's Python loop is too slow here: torchvision judges)
    n = 30_000
    boxes, scores = random_boxes(n, scale=2000, seed=5), random_scores(n, seed=5)
    idxs = torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(5))
    # 30,000 float32 uniform scores hold a few exact ties: compare as sets plus order
    keep = run_batched_nms(boxes, scores, idxs, 0.5, backend)
    assert_same_keep(keep, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5), scores)
    if backend != "torch":  # the torch backend's agnostic path is O(N^2) in memory traffic: keep it small
        assert_same_keep(run_nms(boxes, scores, 0.5, backend), torchvision.ops.nms(boxes, scores, 0.5), scores)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_sparse_category_values(backend):
    # category values far apart (the CPU kernel switches from counting sort to a comparison sort)
    n = 400
    boxes, scores = random_boxes(n, scale=200, seed=7), random_scores(n, seed=7)
    idxs = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(7)) * (1 << 40) - (1 << 41)
    assert torch.equal(run_batched_nms(boxes, scores, idxs, 0.4, backend),
                       reference.batched_nms(boxes, scores, idxs, 0.4))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_float_category_ids(backend):
    # the official postprocess passes class ids as floats
    n = 200
    boxes, scores = random_boxes(n, scale=200, seed=8), random_scores(n, seed=8)
    idxs = torch.randint(0, 6, (n,), generator=torch.Generator().manual_seed(8)).float()
    assert torch.equal(run_batched_nms(boxes, scores, idxs, 0.5, backend),
                       reference.batched_nms(boxes, scores, idxs.long(), 0.5))


# --------------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_all_boxes_identical(backend):
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0]]).repeat(7, 1)
    scores = torch.full((7,), 0.5)
    assert run_nms(boxes, scores, 0.5, backend).tolist() == [0]  # equal scores: lowest index first
    idxs = torch.tensor([0, 1, 0, 1, 2, 2, 0])
    keep = run_batched_nms(boxes, scores, idxs, 0.5, backend)
    assert sorted(keep.tolist()) == [0, 1, 4]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_zero_area_boxes_never_suppress(backend):
    # IoU of empty boxes is 0/0 = NaN, never > threshold (torchvision's behaviour)
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 0.0], [1.0, 1.0, 1.0, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert run_nms(boxes, scores, 0.1, backend).tolist() == [0, 1, 2, 3]
    if torchvision is not None:
        assert torchvision.ops.nms(boxes, scores, 0.1).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_exactly_at_threshold_is_kept(backend):
    # IoU = 2 / (3 + 3 - 2) = 0.5 exactly: kept at threshold 0.5, suppressed just below
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert run_nms(boxes, scores, 0.5, backend).tolist() == [0, 1]
    assert run_nms(boxes, scores, 0.4999, backend).tolist() == [0]
    if torchvision is not None:
        assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("scale", [1e6, 1e12])
def test_huge_coordinates(backend, scale):
    boxes = random_boxes(300, scale=scale, max_size=scale / 4, seed=11)
    scores = random_scores(300, seed=11)
    idxs = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(11))
    assert torch.equal(run_nms(boxes, scores, 0.5, backend), reference.nms(boxes, scores, 0.5))
    assert torch.equal(run_batched_nms(boxes, scores, idxs, 0.5, backend),
                       reference.batched_nms(boxes, scores, idxs, 0.5))
    if torchvision is not None:
        assert torch.equal(run_nms(boxes, scores, 0.5, backend), torchvision.ops.nms(boxes, scores, 0.5))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_finite_coordinates(backend):
    # NaN or infinite corners make an area NaN or inf: such IoUs are NaN or 0 and never suppress
    boxes = random_boxes(120, scale=100, seed=37)
    boxes[5, 0] = float("nan")
    boxes[17, 2] = float("inf")
    boxes[30] = torch.tensor([float("-inf"), 0.0, float("inf"), 50.0])
    boxes[41, 1] = float("-inf")
    boxes[52] = torch.tensor([float("inf"), 0.0, float("inf"), 10.0])
    scores = random_scores(120, seed=37)
    idxs = torch.randint(0, 2, (120,), generator=torch.Generator().manual_seed(37))
    assert torch.equal(run_nms(boxes, scores, 0.3, backend), reference.nms(boxes, scores, 0.3))
    assert torch.equal(run_batched_nms(boxes, scores, idxs, 0.3, backend),
                       reference.batched_nms(boxes, scores, idxs, 0.3))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(backend, dtype):
    boxes = random_boxes(300, scale=300, seed=13, dtype=dtype)
    scores = random_scores(300, seed=13, dtype=dtype)  # fp16/bf16 scores have ties: compare as sets
    idxs = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(13))
    assert_same_keep(run_nms(boxes, scores, 0.5, backend), reference.nms(boxes, scores, 0.5), scores)
    assert_same_keep(run_batched_nms(boxes, scores, idxs, 0.5, backend),
                     reference.batched_nms(boxes, scores, idxs, 0.5), scores)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_ties_across_categories_are_sorted(backend):
    boxes = random_boxes(200, scale=100, seed=17)
    scores = (random_scores(200, seed=17) * 8).round() / 8  # many equal scores
    idxs = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(17))
    expected = reference.batched_nms(boxes, scores, idxs, 0.45)
    assert_same_keep(run_batched_nms(boxes, scores, idxs, 0.45, backend), expected, scores)
    if torchvision is not None:
        assert_same_keep(torchvision.ops.batched_nms(boxes, scores, idxs, 0.45), expected, scores)
    # within one category, equal scores go by index: exactly the reference
    assert torch.equal(run_nms(boxes, scores, 0.45, backend), reference.nms(boxes, scores, 0.45))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_nan_scores_raise_and_inf_scores_rank(backend):
    boxes = random_boxes(4, scale=1000, max_size=10, seed=19)  # far apart: nothing suppressed
    scores = torch.tensor([0.5, float("nan"), 0.2, 0.1])
    with pytest.raises(ValueError, match="NaN"):
        run_nms(boxes, scores, 0.5, backend)
    with pytest.raises(ValueError, match="NaN"):
        run_batched_nms(boxes, scores, torch.zeros(4, dtype=torch.long), 0.5, backend)
    scores = torch.tensor([0.5, float("inf"), float("-inf"), 0.1])
    assert run_nms(boxes, scores, 0.5, backend).tolist() == [1, 0, 3, 2]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs_are_not_modified(backend):
    base = random_boxes(100, scale=200, seed=23)
    boxes = base.t().contiguous().t()  # column-major: same values, not contiguous
    scores = torch.rand(200, generator=torch.Generator().manual_seed(23))[::2]
    assert not boxes.is_contiguous() and not scores.is_contiguous()
    before = boxes.clone(), scores.clone()
    keep = run_nms(boxes, scores, 0.5, backend)
    assert torch.equal(keep, reference.nms(boxes.contiguous(), scores.contiguous(), 0.5))
    assert torch.equal(boxes, before[0]) and torch.equal(scores, before[1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="boxes must be"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores must be"):
        nms(torch.zeros(3, 4), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="same floating-point dtype"):
        nms(torch.zeros(3, 4), torch.zeros(3, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="idxs must be"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5)


def test_backend_choice():
    assert backends.available_backends("nms", "cpu")[-2:] == ["torch", "reference"]
    name, _ = backends.choose("batched_nms", "cpu")
    assert name == ("cpu" if _extension.extension_loaded() else "torch")


# --------------------------------------------------------------------------------------------------
# Operator registration: opcheck and torch.compile
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=needs_ext),
                                    pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])])
def test_opcheck(device):
    boxes, scores = random_boxes(64, scale=200, seed=29).to(device), random_scores(64, seed=29).to(device)
    idxs = torch.randint(0, 3, (64,)).to(device)
    torch.library.opcheck(torch.ops.yolox_fast.nms.default, (boxes, scores, 0.5))
    torch.library.opcheck(torch.ops.yolox_fast.batched_nms.default, (boxes, scores, idxs, 0.5))


@needs_ext
def test_torch_compile():
    torch._dynamo.reset()

    def f(boxes, scores, idxs):
        return torch.ops.yolox_fast.batched_nms(boxes, scores, idxs, 0.5)

    boxes, scores = random_boxes(128, scale=200, seed=31), random_scores(128, seed=31)
    idxs = torch.randint(0, 3, (128,))
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        assert torch.equal(compiled(boxes, scores, idxs), f(boxes, scores, idxs))
