"""Arithmetic that every kernel shares, written so that it rounds as PyTorch does on any launch path.

``torch.compile`` (Inductor) launches user kernels with Triton's default options, in which LLVM contracts
``a * b + c`` into one FMA and ptxas fuses a plain ``mul.f32`` into a following ``add.f32``: one rounding
where PyTorch rounds twice. A launch option cannot reach that path, so the kernels themselves say it:

* :func:`mul_rn`: a product that feeds an addition or subtraction, rounded on its own (``mul.rn`` as inline
  PTX, which neither LLVM nor ptxas contracts), exact halvings too (:func:`half`);
* :func:`add_rn`: an addition that takes a libdevice result (whose last step may be a product);
* :func:`div_rn`: IEEE division (a float32 ``/`` lowers to the approximate ``div.full.f32``);
* :func:`exp`, :func:`log`, :func:`log1p`, :func:`sigmoid`: libdevice on the GPU.

``GPU`` (a constexpr, :data:`GPU_MATH` at launch) is False under ``TRITON_INTERPRET=1``: the interpreter has no
libdevice and computes with NumPy, which never fuses; NumPy's exp / log stand in (log1p from log).
kernels/compile_specs.py compiles every bit-exact kernel with the default options and checks the PTX.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

try:
    from triton.language.extra import libdevice
except ImportError:  # older triton
    libdevice = None

#: libdevice math on a GPU; plain tl math (NumPy) in the interpreter, which has no libdevice.
GPU_MATH = os.environ.get("TRITON_INTERPRET") != "1" and libdevice is not None


@triton.jit
def mul_rn(a, b, GPU: tl.constexpr):
    """``a * b`` rounded on its own (IEEE, no flush of subnormals), never contracted into an FMA with the
    addition it feeds: PTX ``mul.rn`` as inline assembly, which neither LLVM nor ptxas fuses."""
    if GPU:
        if a.dtype == tl.float64:
            return tl.inline_asm_elementwise("mul.rn.f64 $0, $1, $2;", "=d,d,d", [a, b], dtype=tl.float64,
                                             is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise("mul.rn.f32 $0, $1, $2;", "=f,f,f", [a, b], dtype=tl.float32,
                                             is_pure=True, pack=1)
    else:
        return a * b


@triton.jit
def add_rn(a, b, GPU: tl.constexpr):
    """``a + b`` that no product is contracted into: where ``a`` or ``b`` is the result of a libdevice function,
    whose last operation may be a multiplication."""
    if GPU:
        if a.dtype == tl.float64:
            return tl.inline_asm_elementwise("add.rn.f64 $0, $1, $2;", "=d,d,d", [a, b], dtype=tl.float64,
                                             is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise("add.rn.f32 $0, $1, $2;", "=f,f,f", [a, b], dtype=tl.float32,
                                             is_pure=True, pack=1)
    else:
        return a + b


@triton.jit
def div_rn(a, b):
    """IEEE round-to-nearest ``a / b`` (float64 division is always IEEE; ``div_rn`` is float32-only)."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def exp(x, GPU: tl.constexpr):
    if GPU:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def log(x, GPU: tl.constexpr):
    if GPU:
        return libdevice.log(x)
    else:
        return tl.log(x)


@triton.jit
def log1p(x, GPU: tl.constexpr):
    if GPU:
        return libdevice.log1p(x)
    else:
        # log1p from log (the interpreter has no log1p): u = 1 + x, log(u) * x / (u - 1).
        u = 1.0 + x
        return tl.where(u == 1.0, x, tl.log(u) * tl.math.div_rn(x, tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def sigmoid(x, GPU: tl.constexpr):
    """PyTorch's ``1 / (1 + exp(-x))`` in the dtype of ``x``, with an IEEE division."""
    one = tl.zeros_like(x) + 1.0
    return div_rn(one, add_rn(one, exp(-x, GPU), GPU))


@triton.jit
def half(x, GPU: tl.constexpr):
    """``x / 2`` (exact: ``x * 0.5``), as an explicit product so that it is not contracted either."""
    return mul_rn(x, tl.zeros_like(x) + 0.5, GPU)

