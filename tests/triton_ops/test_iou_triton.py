"""Triton pairwise IoU against the reference (CPU under TRITON_INTERPRET=1, or a GPU)."""

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1 (run: TRITON_INTERPRET=1 pytest tests/triton_ops)",
                allow_module_level=True)
pytest.importorskip("triton")

from yolox_fast.ops import reference  # noqa: E402
from yolox_fast.ops.iou import pairwise_iou  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def boxes(n, seed, fmt):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 30
    wh[::7] = 0  # some empty boxes
    return torch.cat([xy, wh], 1) if fmt == "cxcywh" else torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("fmt", ["cxcywh", "xyxy"])
@pytest.mark.parametrize("n,m", [(0, 3), (3, 0), (1, 1), (9, 300)])
def test_triton_matches_reference(fmt, n, m):
    a, b = boxes(n, 1, fmt), boxes(m, 2, fmt)
    got = pairwise_iou(a.to(DEVICE), b.to(DEVICE), fmt, backend="triton").cpu()
    torch.testing.assert_close(got, reference.pairwise_iou(a, b, fmt), rtol=0, atol=0)


def test_triton_half_inputs():
    a, b = boxes(5, 3, "cxcywh").half(), boxes(40, 4, "cxcywh").half()
    got = pairwise_iou(a.to(DEVICE), b.to(DEVICE), backend="triton").cpu()
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, reference.pairwise_iou(a.float(), b.float()).half(), rtol=0, atol=0)


def test_triton_float64_computed_in_float64():
    """float64 boxes are computed in float64, as the reference and the CUDA op (not in float32, rounded up)."""
    a, b = boxes(20, 5, "cxcywh").double() / 3, boxes(300, 6, "cxcywh").double() / 3
    got = pairwise_iou(a.to(DEVICE), b.to(DEVICE), backend="triton").cpu()
    assert got.dtype == torch.float64
    assert (got > 0).sum() > 20 and torch.equal(got, reference.pairwise_iou(a, b))
    a, b = boxes(20, 5, "xyxy").double() / 3, boxes(300, 6, "xyxy").double() / 3
    assert torch.equal(pairwise_iou(a.to(DEVICE), b.to(DEVICE), "xyxy", backend="triton").cpu(),
                       reference.pairwise_iou(a, b, "xyxy"))
