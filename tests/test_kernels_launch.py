"""The Triton launchers' device guard (kernels/_launch.py): Triton launches on the *current* CUDA device, so
every launcher makes its tensors' device current, as the CUDA ops do with CUDAGuard."""

from __future__ import annotations

import contextlib

import pytest
import torch

from yolox_fast.kernels._launch import device_guard


def test_guard_selects_the_tensors_cuda_device():
    # Constructing the guard needs no GPU; entering it switches the current device.
    for index in (0, 1, 3):
        guard = device_guard(torch.device("cuda", index))
        assert isinstance(guard, torch.cuda.device) and guard.idx == index


def test_no_guard_for_cpu_tensors():
    # CPU tensors only reach the kernels under TRITON_INTERPRET=1: nothing to guard, and no CUDA call.
    assert isinstance(device_guard(torch.device("cpu")), contextlib.nullcontext)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_triton_ops_run_on_the_tensors_device():
    """Tensors on cuda:1 while cuda:0 is current: every Triton op computes on cuda:1 and agrees with the CPU."""
    pytest.importorskip("triton")
    from simota_inputs import random_simota_batch

    from tests.test_ops_postprocess import make_prediction
    from yolox_fast.ops import nms, postprocess_padded, reference, simota
    from yolox_fast.ops.iou import pairwise_iou

    torch.cuda.set_device(0)
    dev = torch.device("cuda", 1)
    b1, b2 = torch.rand(30, 4) * 50 + 1, torch.rand(200, 4) * 50 + 1
    assert torch.equal(pairwise_iou(b1.to(dev), b2.to(dev), backend="triton").cpu(), reference.pairwise_iou(b1, b2))
    pred = make_prediction(batch=2, size=320, seed=3)
    dets, counts = postprocess_padded(pred.to(dev), 80, 0.25, 0.45, max_det=50, backend="triton")
    ref_dets, ref_counts = postprocess_padded(pred, 80, 0.25, 0.45, max_det=50, backend="torch")
    assert dets.device == dev and torch.equal(counts.cpu(), ref_counts) and torch.equal(dets.cpu(), ref_dets)
    boxes = torch.cat([b1[:, :2], b1[:, :2] + b1[:, 2:]], 1)
    scores = torch.rand(30)
    kept = nms(boxes.to(dev), scores.to(dev), 0.5, backend="triton")
    assert torch.equal(kept.cpu(), reference.nms(boxes, scores, 0.5))
    batch = random_simota_batch(2, 10, 80, 8400, seed=0, device=dev)
    got = simota.simota_assign(*batch, reference.SEED, backend="triton")
    cpu_batch = random_simota_batch(2, 10, 80, 8400, seed=0, device="cpu")
    want = simota.simota_assign(*cpu_batch, reference.SEED, backend="cpu")
    for g, w in zip(got, want, strict=True):
        assert g.device == dev and torch.equal(g.cpu(), w)
    assert torch.cuda.current_device() == 0
