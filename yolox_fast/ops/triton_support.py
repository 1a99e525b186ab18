"""Whether the Triton kernels can run here, and why not."""

from __future__ import annotations

import os

import torch


def triton_unavailable(device: torch.device) -> str | None:
    """``None`` when the Triton kernels can run on ``device``, else the reason.

    Triton compiles for CUDA GPUs; on the CPU it runs only in interpreter mode
    (``TRITON_INTERPRET=1`` set before triton is imported), which the tests use.
    """
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc})"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"Triton needs a CUDA device (or TRITON_INTERPRET=1 for CPU tensors), got {device}"
