"""Pairwise IoU: every backend against the reference, edge cases, dispatcher checks."""

import pytest
import torch

from yolox_fast.ops import _extension
from yolox_fast.ops import backends, reference
from yolox_fast.ops.iou import pairwise_iou

needs_ext = pytest.mark.skipif(not _extension.extension_loaded(), reason="yolox_fast._C is not built")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and _extension.cuda_built()), reason="needs a CUDA GPU and the CUDA build of _C"
)


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


@pytest.mark.parametrize("fmt", ["cxcywh", "xyxy"])
@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (1, 1), (7, 300), (120, 2000)])
def test_matches_reference_exactly(backend, fmt, n, m):
    if backend == "cpu" and not _extension.extension_loaded():
        pytest.skip("yolox_fast._C is not built")
    g = torch.Generator().manual_seed(n * 1000 + m)
    a, b = random_boxes(n, fmt, g), random_boxes(m, fmt, g)
    got = pairwise_iou(a, b, fmt, backend=backend)
    want = reference.pairwise_iou(a, b, fmt)
    assert got.shape == (n, m) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@needs_ext
@pytest.mark.parametrize("fmt", ["cxcywh", "xyxy"])
def test_edge_cases(fmt):
    boxes = edge_boxes(fmt)
    got = pairwise_iou(boxes, boxes, fmt, backend="cpu")
    want = reference.pairwise_iou(boxes, boxes, fmt)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.isnan(got).any(), "two empty boxes must give IoU 0, not NaN"
    assert got[2, 3] == 1.0 and got[3, 4] == 0.0 and got[0, 0] == 0.0


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(20, "cxcywh", g), random_boxes(30, "cxcywh", g)
    got = pairwise_iou(a.to(dtype), b.to(dtype), backend="cpu")
    assert got.dtype == dtype
    # Half inputs: float32 math on the rounded inputs, one rounding at the end; float64 stays float64.
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    want = reference.pairwise_iou(a.to(dtype).to(compute), b.to(dtype).to(compute)).to(dtype)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@needs_ext
def test_non_contiguous():
    g = torch.Generator().manual_seed(1)
    a = random_boxes(40, "cxcywh", g).t().contiguous().t()  # column-major
    b = random_boxes(64, "cxcywh", g)[::2]
    assert not a.is_contiguous() and not b.is_contiguous()
    torch.testing.assert_close(pairwise_iou(a, b, backend="cpu"), reference.pairwise_iou(a, b), rtol=0, atol=0)


@needs_ext
def test_opcheck():
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(6, "cxcywh", g), random_boxes(9, "cxcywh", g)
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


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["cxcywh", "xyxy"])
def test_cuda_matches_reference(fmt):
    g = torch.Generator().manual_seed(4)
    a, b = random_boxes(100, fmt, g), random_boxes(3000, fmt, g)
    a = torch.cat([a, edge_boxes(fmt)])
    got = pairwise_iou(a.cuda(), b.cuda(), fmt, backend="cuda").cpu()
    torch.testing.assert_close(got, reference.pairwise_iou(a, b, fmt), rtol=0, atol=0)
    torch.library.opcheck(torch.ops.yolox_fast.pairwise_iou.default, (a.cuda(), b.cuda(), fmt == "xyxy"))
