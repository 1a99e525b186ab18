"""What every Triton launcher shares (kernels/_launch.py): the device check (one device; the CPU only under the
interpreter), the device guard (Triton launches on the *current* CUDA device, so every launcher makes its
tensors' device current, as the CUDA ops do with CUDAGuard), the launch hooks the tests record devices with,
and the kernel handle that works with the Triton of every supported torch."""

from __future__ import annotations

import contextlib

import pytest
import torch
from op_testing import LaunchRecorder

from yolox_fast.kernels import _launch
from yolox_fast.kernels._launch import device_guard, launch_device, traceable


def test_launch_device_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    """Compiled Triton cannot read CPU memory (issue 15: a test handed launch_nms CPU tensors on the GPU
    machine); the launcher says so by name instead of Triton's "cannot be accessed from Triton (cpu tensor?)"."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=r"launch_nms: Triton kernels need CUDA tensors .*boxes, n_valid"):
        launch_device("launch_nms", boxes=torch.zeros(1, 4, 4), cls=None, n_valid=torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert launch_device("launch_nms", boxes=torch.zeros(1, 4, 4), cls=None) == torch.device("cpu")


def test_launch_device_refuses_tensors_on_several_devices(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match=r"launch_x: every tensor must be on one device, got a on cpu, b on meta"):
        launch_device("launch_x", a=torch.zeros(2), b=torch.zeros(2, device="meta"))


def test_launch_hooks_see_every_launch_and_the_recorder_flags_other_devices(monkeypatch):
    """What conftest.py's autouse check relies on: each launch reports its device; launches off the device the
    test claims are named."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    recorder = LaunchRecorder()
    monkeypatch.setattr(_launch, "launch_hooks", [recorder])
    launch_device("launch_a", x=torch.zeros(1))
    assert recorder.launches == [("launch_a", torch.device("cpu"))]
    assert recorder.off_device(torch.device("cpu")) == []
    assert recorder.off_device(torch.device("cuda")) == ["launch_a on cpu"]


def test_traceable_wraps_jit_functions_and_passes_interpreted_ones_by():
    """torch <= 2.11's wrap_triton refuses the InterpretedFunction that triton.jit gives under TRITON_INTERPRET=1
    with Triton <= 3.6; such a kernel launches as it is."""
    triton = pytest.importorskip("triton")

    class NotAJITFunction:  # what triton 3.6's interpreter returns: a KernelInterface, not a JITFunction
        pass

    kernel = NotAJITFunction()
    assert traceable(kernel) is kernel

    @triton.jit
    def _k(x_ptr):
        pass

    if isinstance(_k, triton.runtime.JITFunction):
        assert traceable(_k) is not _k  # the traceable wrapper torch.compile sees


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
