"""What every Triton launcher shares: the device guard and the compile options of bit-exact kernels."""

from __future__ import annotations

import contextlib

import torch

#: Launch option of the kernels that must equal the reference bit for bit: no contraction of ``a * b + c``
#: into an FMA (one rounding where PyTorch rounds twice). Passed with every launch of those kernels and
#: used by kernels/compile_specs.py, so that the sm_90 compile test checks what really runs.
NO_FP_FUSION = {"enable_fp_fusion": False}


def device_guard(device: torch.device):
    """Make ``device`` the current CUDA device for the launches inside the ``with`` block.

    Triton launches on the *current* device and its current stream, whatever device the tensors are on;
    like the CUDA ops' ``CUDAGuard``, every launcher enters this guard with its tensors' device. CPU
    tensors (``TRITON_INTERPRET=1``) need no guard: a null context.
    """
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()
