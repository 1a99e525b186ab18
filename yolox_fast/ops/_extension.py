"""Loading the compiled operator library ``yolox_fast._C``.

Importing ``_C`` registers the ``torch.ops.yolox_fast.*`` operators with their CPU (and, when built,
CUDA) kernels. When the extension is missing, yolox_fast still works on its pure-PyTorch paths and
says so once.
"""

from __future__ import annotations

import warnings

import torch

try:
    from yolox_fast import _C  # noqa: F401  (registers the operators; built next to the package root)

    _LOAD_ERROR: Exception | None = None
except ImportError as exc:  # not built, or built against another torch
    _C = None
    _LOAD_ERROR = exc

_warned = False


def extension_loaded() -> bool:
    """Whether ``yolox_fast._C`` was imported; warns once (per process) when it was not."""
    global _warned
    if _C is None and not _warned:
        _warned = True
        warnings.warn(
            f"yolox_fast._C is not available ({_LOAD_ERROR}); using the pure-PyTorch paths. "
            "Build it with `pip install -e . --no-build-isolation`.",
            RuntimeWarning,
            stacklevel=3,
        )
    return _C is not None


def cuda_built() -> bool:
    """Whether the CUDA kernels were compiled into ``_C``."""
    return _C is not None and bool(_C.cuda_built())


def cpu_op_unavailable(device: torch.device) -> str | None:
    """``None`` when the C++ CPU ops can run on ``device``, else the reason (for the backend registry)."""
    if device.type != "cpu":
        return f"the C++ CPU op takes CPU tensors, got {device}"
    if not extension_loaded():
        return f"yolox_fast._C is not built ({_LOAD_ERROR})"
    return None


def cuda_op_unavailable(device: torch.device) -> str | None:
    """``None`` when the CUDA ops can run on ``device``, else the reason."""
    if device.type != "cuda":
        return f"the CUDA op takes CUDA tensors, got {device}"
    if not extension_loaded():
        return f"yolox_fast._C is not built ({_LOAD_ERROR})"
    if not cuda_built():
        return "yolox_fast._C was built without CUDA (CPU-only torch or no nvcc at build time)"
    return None
