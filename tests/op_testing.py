"""What every op's tester shares: which backends run here, on which device, and how a case reaches them.

Each op's test file holds one case table and one ``assert_matches_reference``, parametrised with
:func:`backend_params` over every backend of the op (torchvision's ``RoIOpTester`` habit), so that a case
added once runs on every backend:

* ``cpu`` (the C++ op), ``torch``, ``reference``: CPU tensors, in the main pytest process;
* ``cuda`` (the CUDA op): CUDA tensors, marked ``gpu``;
* ``triton``: marked ``triton``; natively on a GPU (CUDA tensors), and on the CPU only in Triton's
  interpreter, which must be switched on before triton is imported, so in a process of its own:
  ``TRITON_INTERPRET=1 python -m pytest tests -m triton`` (scripts/test.sh runs both processes).

Whether a backend can run comes from ``yolox_fast.ops.backends`` (the registry the ops dispatch with).
:func:`on_device` moves a case's CPU tensors to the backend's device; every Triton launch is checked to be
on the device the test claims (:func:`launches_on`, autouse in conftest.py).
"""

from __future__ import annotations

import os

import pytest
import torch

from yolox_fast.ops import _extension, backends

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()

needs_ext = pytest.mark.skipif(not _extension.extension_loaded(), reason="yolox_fast._C is not built")
needs_cuda = pytest.mark.skipif(not (CUDA and _extension.cuda_built()),
                                reason="needs a CUDA GPU and yolox_fast._C built with CUDA")
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def triton_device() -> torch.device:
    """Where the Triton kernels run in this process: the GPU if there is one (compiled), else the CPU (only
    under ``TRITON_INTERPRET=1``)."""
    return torch.device("cuda" if CUDA and not INTERPRET else "cpu")


def backend_device(backend: str) -> torch.device:
    """The device of the tensors ``backend`` takes."""
    if backend == "cuda":
        return torch.device("cuda")
    if backend == "triton":
        return triton_device()
    return torch.device("cpu")


def _why_not(op: str, backend: str) -> str | None:
    if backend == "triton" and not CUDA and not INTERPRET:
        return ("Triton needs a CUDA GPU, or the interpreter in its own process: "
                "TRITON_INTERPRET=1 python -m pytest tests -m triton")
    if backend == "cuda" and not CUDA:
        return "needs a CUDA GPU"
    if backend not in backends.available_backends(op, backend_device(backend)):
        if backend in ("cpu", "cuda"):
            return "yolox_fast._C is not built" + (" with CUDA" if backend == "cuda" else "")
        return f"backend {backend!r} of {op} is not available here"
    return None


def backend_params(op: str, names=("cpu", "torch", "reference", "cuda", "triton")) -> list:
    """``pytest.param`` per backend of ``op`` in ``names``: skipped (with the reason) where it cannot run, marked
    ``gpu`` (cuda) or ``triton``. In the interpreter process only the Triton params are meant to run (``-m
    triton``); the others are deselected there."""
    params = []
    for name in names:
        marks = []
        if name == "cuda":
            marks.append(pytest.mark.gpu)
        if name == "triton":
            marks.append(pytest.mark.triton)
        why = _why_not(op, name)
        if why:
            marks.append(pytest.mark.skip(reason=why))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


#: The Triton-only tests: kernel-level checks, marked and skipped like the ``triton`` backend param.
triton_only = [pytest.mark.triton,
               pytest.mark.skipif(not CUDA and not INTERPRET, reason="Triton needs a CUDA GPU or TRITON_INTERPRET=1 "
                                                                     "(its own process: pytest tests -m triton)")]


def big_case(backend: str, small_version: str = "") -> None:
    """Skip a case of realistic size for the Triton interpreter, which takes minutes over it (one Python
    call per program); it runs natively on a GPU. ``small_version``: where the interpreter runs it small."""
    if backend == "triton" and INTERPRET:
        where = f"; small version in {small_version}" if small_version else ""
        pytest.skip(f"too big for the Triton interpreter (runs natively on a GPU{where})")


def on_device(value, backend: str):
    """``value`` (a tensor, a tuple / list / NamedTuple of them, or None) on ``backend``'s device."""
    device = backend_device(backend)
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if hasattr(value, "_replace") and hasattr(value, "_fields"):  # NamedTuple (SimOTABatch has .to)
        return value.to(device) if hasattr(value, "to") else type(value)(*(on_device(v, backend) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(on_device(v, backend) for v in value)
    return value


def to_cpu(value):
    """Tensors (in tuples / lists, None kept) back on the CPU, to compare with the reference."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if hasattr(value, "_fields"):  # NamedTuple
        return type(value)(*(to_cpu(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_cpu(v) for v in value)
    return value


class LaunchRecorder:
    """Records the device of every Triton launch (``kernels._launch.launch_hooks``)."""

    def __init__(self):
        self.launches: list[tuple[str, torch.device]] = []

    def __call__(self, launcher: str, device: torch.device) -> None:
        self.launches.append((launcher, device))

    def off_device(self, expected: torch.device) -> list[str]:
        """Launches that did not run on ``expected`` (the device the test claims for Triton)."""
        return [f"{name} on {dev}" for name, dev in self.launches if dev.type != expected.type]
