"""Pairwise IoU (yolox_fast/ops/iou.py): one case table, every backend against the reference, edge cases,
dispatcher checks. Backends and devices: tests/op_testing.py (Triton: natively on a GPU, else in
``TRITON_INTERPRET=1 python -m pytest tests -m triton``)."""

import pytest
import torch
from op_testing import INTERPRET, backend_params, big_case, needs_cuda, needs_ext, on_device

from yolox_fast.ops import _extension, backends, reference
from yolox_fast.ops.iou import pairwise_iou

OP = "pairwise_iou"
BACKENDS = backend_params(OP)


def assert_matches_reference(backend, boxes1, boxes2, fmt="cxcywh", dtype=None):
    """``pairwise_iou`` of ``backend`` on its device equals the reference bit for bit: computed in float32
    (float64 for float64 boxes) on the boxes rounded to ``dtype``, rounded once to ``dtype``."""
    if dtype is not None:
        boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    got = pairwise_iou(on_device(boxes1, backend), on_device(boxes2, backend), fmt, backend=backend).cpu()
    compute = torch.float64 if boxes1.dtype == torch.float64 else torch.float32
    want = reference.pairwise_iou(boxes1.to(compute), boxes2.to(compute), fmt).to(boxes1.dtype)
    assert got.shape == want.shape and got.dtype == boxes1.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    return got


def random_boxes(n, fmt, generator, scale=100.0):
    xy = torch.rand(n, 2, generator=generator) * scale
    wh = torch.rand(n, 2, generator=generator) * scale / 3
    if fmt == "cxcywh":
        return torch.cat([xy, wh], 1)
    return torch.cat([xy, xy + wh], 1)


def edge_boxes(fmt):
    """Zero-size, degenerate (negative size), identical, touching, far outside the image."""
    cxcywh = torch.tensor(
        [
            [10.0, 10.0, 0.0, 0.0],  # empty
            [10.0, 10.0, 4.0, 0.0],  # zero height
            [10.0, 10.0, 4.0, 4.0],
            [10.0, 10.0, 4.0, 4.0],  # identical
            [14.0, 10.0, 4.0, 4.0],  # touches the previous one at x = 12
            [-500.0, -500.0, 3.0, 3.0],  # outside the image
            [10.0, 10.0, -2.0, 3.0],  # negative width
            [1e6, 1e6, 1e5, 1e5],  # huge
        ]
    )
    return cxcywh if fmt == "cxcywh" else reference.box_cxcywh_to_xyxy(cxcywh)


#: (N, M) of the random cases: empty sides, one box, a few rows, many columns
SHAPES = [(0, 5), (5, 0), (0, 3), (3, 0), (1, 1), (9, 300), (7, 300), (120, 2000)]


@pytest.mark.parametrize("fmt", ["cxcywh", "xyxy"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m", SHAPES)
def test_matches_reference_exactly(backend, fmt, n, m):
    if n * m > 10_000:
        big_case(backend)
    g = torch.Generator().manual_seed(n * 1000 + m)
    got = assert_matches_reference(backend, random_boxes(n, fmt, g), random_boxes(m, fmt, g), fmt)
    assert got.shape == (n, m)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["cxcywh", "xyxy"])
def test_edge_cases(backend, fmt):
    boxes = edge_boxes(fmt)
    got = assert_matches_reference(backend, boxes, boxes, fmt)
    assert not torch.isnan(got).any(), "two empty boxes must give IoU 0, not NaN"
    assert got[2, 3] == 1.0 and got[3, 4] == 0.0 and got[0, 0] == 0.0
    # many rows against the edge boxes (the CUDA op strides its rows over the grid)
    big_case(backend)
    g = torch.Generator().manual_seed(4)
    assert_matches_reference(backend, torch.cat([random_boxes(100, fmt, g), boxes]), random_boxes(3000, fmt, g), fmt)


@pytest.mark.parametrize("backend", backend_params(OP, ("cpu", "cuda", "triton")))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(backend, dtype):
    """Half inputs: float32 math on the rounded inputs, one rounding at the end; float64 stays float64 (not
    computed in float32 and rounded up). The compiled backends; the torch and reference backends compute in
    the input dtype."""
    if backend == "triton" and dtype == torch.bfloat16 and INTERPRET:
        pytest.skip("the Triton interpreter truncates float32 -> bfloat16 instead of rounding to nearest")
    for seed, n, m, scale in [(0, 20, 30, 1.0), (5, 20, 300, 1 / 3)]:
        g = torch.Generator().manual_seed(seed)
        for fmt in ("cxcywh", "xyxy"):
            a, b = random_boxes(n, fmt, g) * scale, random_boxes(m, fmt, g) * scale
            got = assert_matches_reference(backend, a, b, fmt, dtype)
            assert (got > 0).sum() > 20


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous(backend):
    g = torch.Generator().manual_seed(1)
    a = random_boxes(40, "cxcywh", g).t().contiguous().t()  # column-major
    b = random_boxes(64, "cxcywh", g)[::2]
    assert not a.is_contiguous() and not b.is_contiguous()
    assert_matches_reference(backend, a, b)


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=needs_ext),
                                    pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])])
def test_opcheck(device):
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(6, "cxcywh", g).to(device), random_boxes(9, "cxcywh", g).to(device)
    for xyxy in (False, True):
        torch.library.opcheck(torch.ops.yolox_fast.pairwise_iou.default, (a, b, xyxy))


@needs_ext
def test_torch_compile_fullgraph():
    g = torch.Generator().manual_seed(3)
    a, b = random_boxes(6, "cxcywh", g), random_boxes(9, "cxcywh", g)

    @torch.compile(fullgraph=True, backend="eager")
    def f(x, y):
        return torch.ops.yolox_fast.pairwise_iou(x, y, False) * 2

    torch.testing.assert_close(f(a, b), reference.pairwise_iou(a, b) * 2)


@pytest.mark.parametrize(
    "a,b,match",
    [
        (torch.zeros(3, 5), torch.zeros(2, 4), "boxes1 must be \\[N, 4\\]"),
        (torch.zeros(3, 4), torch.zeros(2), "boxes2 must be \\[N, 4\\]"),
        (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64), "floating point"),
        (torch.zeros(3, 4), torch.zeros(2, 4, dtype=torch.float64), "same dtype"),
    ],
)
def test_bad_input_names_the_problem(a, b, match):
    with pytest.raises(ValueError, match=match):
        pairwise_iou(a, b)


@needs_ext
def test_cpp_op_checks_shapes():
    with pytest.raises(ValueError, match=r"boxes1 must be \[N, 4\]"):
        torch.ops.yolox_fast.pairwise_iou(torch.zeros(3, 3), torch.zeros(2, 4), False)


def test_forcing_unavailable_backend_is_a_clear_error(monkeypatch):
    with pytest.raises(RuntimeError, match="backend 'cuda' of pairwise_iou is not available on cpu"):
        pairwise_iou(torch.zeros(1, 4), torch.zeros(1, 4), backend="cuda")
    monkeypatch.setenv(backends.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        pairwise_iou(torch.zeros(1, 4), torch.zeros(1, 4))


def test_env_var_forces_backend(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert backends.choose("pairwise_iou", "cpu")[0] == "reference"
    monkeypatch.delenv(backends.ENV_VAR)
    expected = "cpu" if _extension.extension_loaded() else "torch"
    assert backends.choose("pairwise_iou", "cpu")[0] == expected
