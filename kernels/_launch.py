"""What every Triton launcher shares: the device check and guard, and the kernel handle that torch.compile traces.

Every launcher enters :func:`launch_on` with the tensors it passes to its kernels: they must all be on one
device, and a CPU device only under ``TRITON_INTERPRET=1`` (compiled Triton cannot read CPU memory and says so
only as "Pointer argument cannot be accessed from Triton (cpu tensor?)"). Tests record each launch's device
through :data:`launch_hooks` and compare it with the device they claim (tests/op_testing.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch
from torch.library import wrap_triton

#: Called as ``hook(launcher_name, device)`` at every launch (tests append a recorder; empty in production).
launch_hooks: list[Callable[[str, torch.device], None]] = []


def interpreting() -> bool:
    """True under Triton's interpreter (``TRITON_INTERPRET=1``, read by triton when it is imported)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def launch_device(launcher: str, **tensors: torch.Tensor | None) -> torch.device:
    """The one device of ``tensors`` (None entries ignored); a ``ValueError`` naming the launcher and the
    arguments when they are on several devices, or on the CPU outside the interpreter."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    found = set(devices.values())
    if len(found) != 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"{launcher}: every tensor must be on one device, got {listing or 'no tensor'}")
    device = found.pop()
    if device.type == "cpu" and not interpreting():
        raise ValueError(f"{launcher}: Triton kernels need CUDA tensors (CPU tensors only under TRITON_INTERPRET=1), "
                         f"got {', '.join(devices)} on the CPU")
    for hook in launch_hooks:
        hook(launcher, device)
    return device


def device_guard(device: torch.device):
    """Make ``device`` the current CUDA device for the launches inside the ``with`` block.

    Triton launches on the *current* device and its current stream, whatever device the tensors are on;
    like the CUDA ops' ``CUDAGuard``, every launcher enters this guard with its tensors' device. CPU
    tensors (``TRITON_INTERPRET=1``) need no guard: a null context.
    """
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def launch_on(launcher: str, **tensors: torch.Tensor | None):
    """:func:`launch_device` then :func:`device_guard`: ``with launch_on("launch_x", a=a, out=out): ...``."""
    return device_guard(launch_device(launcher, **tensors))


def traceable(kernel):
    """``kernel`` as the launchers index it with a grid: ``wrap_triton(kernel)``, which torch.compile traces.

    Under the interpreter, Triton 3.6 and older make ``triton.jit`` return an ``InterpretedFunction``, which the
    ``wrap_triton`` of torch 2.11 refuses; it launches as it is (nothing to trace on the CPU)."""
    from triton.runtime.jit import JITFunction

    if not isinstance(kernel, JITFunction):
        return kernel
    return wrap_triton(kernel)
