"""Pairwise IoU: reference (broadcast PyTorch), C++ CPU, CUDA and Triton side by side.

Shapes: G x A with A = 8400 (640 input) and 33600 (1280), G = 120 and 500 GTs.
"""

import pytest
import torch

from benchmarks.gpu_targets import GPU_ONLY
from yolox_fast.ops import _extension
from yolox_fast.ops.iou import pairwise_iou
from yolox_fast.ops.triton_support import triton_unavailable

SHAPES = [(120, 8400), (500, 8400), (120, 33600)]


def boxes(n, device):
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 640
    wh = torch.rand(n, 2, generator=g) * 200 + 1
    return torch.cat([xy, wh], 1).to(device)


def providers():
    if not GPU_ONLY:
        yield "reference", "cpu"
        yield "cpu", "cpu"
    if torch.cuda.is_available():
        yield "reference", "cuda"
        yield "cuda", "cuda"
        yield "triton", "cuda"


@pytest.mark.parametrize("g,a", SHAPES, ids=[f"G{g}-A{a}" for g, a in SHAPES])
@pytest.mark.parametrize("backend,device", list(providers()), ids=lambda v: str(v))
def test_pairwise_iou(benchmark, record_env, backend, device, g, a):
    if backend == "cpu" and not _extension.extension_loaded():
        pytest.skip("yolox_fast._C is not built")
    if backend == "triton" and triton_unavailable(torch.device(device)):
        pytest.skip(triton_unavailable(torch.device(device)))
    benchmark.group = f"pairwise_iou G={g} A={a}"
    b1, b2 = boxes(g, device), boxes(a, device)
    record_env(device, backend=backend)

    def run():
        out = pairwise_iou(b1, b2, backend=backend)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark(run)
