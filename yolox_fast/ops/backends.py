"""Which implementation of a hot path runs: the backend registry and the choice rule.

Backends, in order of preference for each device:

* ``cuda``: the CUDA op of ``yolox_fast._C`` (CUDA tensors, when built with CUDA);
* ``cpu``: the C++ op of ``yolox_fast._C`` (CPU tensors);
* ``triton``: the Triton kernels in ``yolox_fast.kernels`` (CUDA tensors; on the CPU only under
  ``TRITON_INTERPRET=1``, for testing);
* ``torch``: batched pure PyTorch, runs anywhere and compiles with ``torch.compile``;
* ``reference``: :mod:`yolox_fast.ops.reference`, image by image (the specification).

``backend=`` on an op or the ``YOLOX_FAST_BACKEND`` environment variable forces one; forcing one that
is not available for the op and device raises ``RuntimeError`` saying why.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

BACKENDS = ("cuda", "cpu", "triton", "torch", "reference")
ENV_VAR = "YOLOX_FAST_BACKEND"

# op name -> backend name -> (implementation, availability check(device) -> reason or None)
_REGISTRY: dict[str, dict[str, tuple[Callable, Callable[[torch.device], str | None]]]] = {}


def register(op: str, backend: str, available: Callable[[torch.device], str | None]):
    """Decorator: register ``fn`` as ``backend`` of ``op``; ``available(device)`` returns None or why not."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {BACKENDS}")

    def deco(fn: Callable) -> Callable:
        _REGISTRY.setdefault(op, {})[backend] = (fn, available)
        return fn

    return deco


def always(device: torch.device) -> str | None:
    return None


def available_backends(op: str, device: torch.device | str) -> list[str]:
    """Backends of ``op`` usable for tensors on ``device``, best first."""
    device = torch.device(device)
    impls = _REGISTRY.get(op, {})
    return [b for b in BACKENDS if b in impls and impls[b][1](device) is None]


def choose(op: str, device: torch.device | str, requested: str | None = None) -> tuple[str, Callable]:
    """The backend name and implementation of ``op`` for ``device``.

    ``requested`` (else ``$YOLOX_FAST_BACKEND``) forces a backend; ``"auto"`` or nothing picks the
    first available in :data:`BACKENDS` order, except that Triton is never picked automatically on
    the CPU (it only runs there in interpreter mode, for tests).
    """
    device = torch.device(device)
    impls = _REGISTRY.get(op)
    if not impls:
        raise KeyError(f"no implementation registered for op {op!r}")
    requested = requested or os.environ.get(ENV_VAR) or "auto"
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"unknown backend {requested!r} for {op}; choose from {', '.join(BACKENDS)} or 'auto'")
        if requested not in impls:
            raise RuntimeError(f"{op} has no {requested!r} backend; it has {', '.join(impls)}")
        why_not = impls[requested][1](device)
        if why_not is not None:
            raise RuntimeError(f"backend {requested!r} of {op} is not available on {device}: {why_not}")
        return requested, impls[requested][0]
    for name in BACKENDS:
        if name not in impls or (name == "triton" and device.type == "cpu"):
            continue
        if impls[name][1](device) is None:
            return name, impls[name][0]
    raise RuntimeError(f"no backend of {op} is available on {device}")
