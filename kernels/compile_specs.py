"""Compile every Triton kernel for a GPU without a GPU, and check what the compiler made of it.

The Triton interpreter (``TRITON_INTERPRET=1``, the CPU tests) runs kernels with NumPy: it accepts code
that compiled Triton refuses (plain module globals, dtype rules) and computes divisions and products
that the GPU code rounds differently. This module compiles each kernel for sm_90 (``triton.compile`` of an
``ASTSource`` with a ``GPUTarget``: no driver needed) with the constexprs, dtypes and options the
launchers use, and checks:

* every ``@triton.jit`` kernel of the package is in :data:`SPECS` and every helper is reached from one;
* bit-exact kernels, compiled with Triton's default options (FP fusion on: what torch.compile's Inductor
  launches, and what the launchers launch): no approximate division in the PTX (``div.full``,
  ``div.approx``), no FMA contraction by LLVM (no more ``fma`` instructions than the explicit ones libdevice
  brings in, in the LLVM IR) and none left to ptxas (no plain ``mul`` whose result a plain ``add`` / ``sub``
  takes: kernels/_math.py's ``mul_rn`` makes such products explicit);
* 64-bit offsets where 32-bit index products overflow (the first ``tt.addptr`` off a listed pointer);
* resource use per kernel (registers, local memory = spills, shared memory) from the cubin.

Run ``python -m yolox_fast.kernels.compile_specs [--json FILE]`` (not under ``TRITON_INTERPRET=1``) for the
table; tests/infrastructure/test_sm90_compile.py runs the same in a subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import triton
import triton.language as tl

from . import iou, nms, postprocess, simota

TARGET_ARCH = 90
#: the package's kernel modules (one per op, as csrc/cpu and csrc/cuda), all searched for @triton.jit functions
MODULES = ("iou", "nms", "postprocess", "simota")
#: compile options of every launch: Triton's defaults (FP fusion on), as eager launches and Inductor use
LAUNCH_OPTIONS: dict = {}


@dataclass(frozen=True)
class Spec:
    """One launch configuration of one kernel: ``types`` of the runtime arguments (Triton signature
    strings), ``constexprs``, compile ``options`` as the launcher passes them."""

    label: str
    fn: object
    types: dict
    constexprs: dict
    options: dict = field(default_factory=dict)
    exact: bool = False  # must equal the reference bit for bit: PTX checks apply
    int64_ptrs: tuple = ()  # pointer arguments whose first offset must be 64-bit


def _dt(torch_name: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}[torch_name]


def _iou_specs():
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        for xyxy in (False, True):
            p = "*" + _dt(dtype)
            acc = tl.float64 if dtype == "float64" else tl.float32
            yield Spec(f"iou {dtype} {'xyxy' if xyxy else 'cxcywh'}", iou._pairwise_iou_kernel,
                       dict(b1_ptr=p, b2_ptr=p, out_ptr=p, M="i32"),
                       dict(XYXY=xyxy, ACC=acc, GPU=True, BLOCK=iou.BLOCK_M), LAUNCH_OPTIONS, exact=True,
                       int64_ptrs=("out_ptr",))


def _simota_specs():
    f, i32 = "*fp32", "i32"
    for center_only in (False, True):
        yield Spec(f"simota candidates center_only={center_only}", simota._simota_candidates_kernel,
                   dict(grids_ptr=f, strides_ptr=f, gt_ptr=f, gt_mask_ptr="*i8", cand_ptr="*i8", A=i32, G=i32,
                        radius_scale="fp32"),
                   dict(CENTER_ONLY=center_only, GPU=True, BLOCK=simota.BLOCK_CAND), LAUNCH_OPTIONS, exact=True)
    for cls_dtype in ("float32", "float16", "bfloat16"):
        c = "*" + _dt(cls_dtype)
        yield Spec(f"simota bce_sum cls={cls_dtype}", simota._simota_bce_sum_kernel,
                   dict(cls_ptr=c, stride_b=i32, stride_a=i32, stride_c=i32, obj_ptr=f, cand_ptr="*i8", s_ptr=f,
                        A=i32, C=i32),
                   dict(GPU=True, BLOCK_A=simota.BLOCK_S_A, BLOCK_C=simota.BLOCK_S_C), LAUNCH_OPTIONS, exact=True,
                   int64_ptrs=("cls_ptr",))
        for center_only in (False, True) if cls_dtype == "float32" else (False,):
            common = dict(pred_ptr=f, cls_ptr=c, stride_b=i32, stride_a=i32, stride_c=i32, obj_ptr=f, grids_ptr=f,
                          strides_ptr=f, gt_ptr=f, gt_cls_ptr="*i32", gt_mask_ptr="*i8")
            scalars = dict(A=i32, G=i32, radius_scale="fp32", penalty="fp32")
            yield Spec(f"simota select cls={cls_dtype} center_only={center_only}", simota._simota_select_kernel,
                       dict(**common, cand_ptr="*i8", s_ptr=f, count_ptr="*i32", owner_ptr="*i32", **scalars),
                       dict(CENTER_ONLY=center_only, GPU=True, BLOCK=simota.BLOCK_SCAN, SLOTS=simota.SLOTS),
                       LAUNCH_OPTIONS, exact=True, int64_ptrs=("cls_ptr",))
            yield Spec(f"simota resolve cls={cls_dtype} center_only={center_only}", simota._simota_resolve_kernel,
                       dict(**common, s_ptr=f, count_ptr="*i32", owner_ptr="*i32", fg_ptr="*i1", matched_ptr="*i64",
                            miou_ptr=f, **scalars),
                       dict(CENTER_ONLY=center_only, GPU=True, BLOCK=simota.BLOCK_CAND), LAUNCH_OPTIONS, exact=True,
                       int64_ptrs=("cls_ptr",))


#: (prediction dtype, raw, multi_label, agnostic) of the postprocess variants compiled: every flag value with
#: float32, every dtype on the default path, and float64 / float16 on the other paths.
_POSTPROCESS_VARIANTS = [
    ("float32", False, False, False), ("float32", False, False, True), ("float32", False, True, False),
    ("float32", False, True, True), ("float32", True, False, False), ("float32", True, True, True),
    ("float16", False, False, False), ("float16", True, True, False), ("bfloat16", False, False, False),
    ("float64", False, False, False), ("float64", True, True, True),
]


def _postprocess_specs(num_classes: int = 80):
    f, i32 = "*fp32", "i32"
    block_r, block_c = postprocess.score_blocks(num_classes)
    for dtype, raw, multi, agnostic in _POSTPROCESS_VARIANTS:
        p = "*" + _dt(dtype)
        acc = tl.float64 if dtype == "float64" else tl.float32
        tag = f"{dtype} raw={raw} multi={multi} agnostic={agnostic}"
        flags = dict(RAW=raw, MULTI=multi, AGNOSTIC=agnostic, ACC=acc, GPU=True)
        # conf_bits: int64 (do_not_specialize keeps it a runtime argument for any value)
        yield Spec(f"postprocess score {tag}", postprocess._score_kernel,
                   dict(pred_ptr=p, conf_bits="i64", keys_ptr="*i64", label_ptr="*i32", A=i32, S=i32, C=i32, L=i32),
                   dict(**flags, BLOCK_R=block_r, BLOCK_C=block_c), LAUNCH_OPTIONS, exact=True,
                   int64_ptrs=("pred_ptr", "keys_ptr"))
        yield Spec(f"postprocess gather {tag}", postprocess._gather_kernel,
                   dict(pred_ptr=p, grids_ptr=f, strides_ptr=f, order_ptr="*i32", label_ptr="*i32", n_ptr="*i64",
                        boxes_ptr=f, cls_ptr="*i64", anchor_ptr="*i32", A=i32, S=i32, C=i32, L=i32, cap=i32),
                   dict(**flags, BLOCK=postprocess.GATHER_BLOCK), LAUNCH_OPTIONS, exact=True,
                   int64_ptrs=("pred_ptr", "order_ptr", "boxes_ptr"))
        if not multi and not agnostic:
            yield Spec(f"postprocess rows {dtype} raw={raw}", postprocess._rows_kernel,
                       dict(pred_ptr=p, grids_ptr=f, strides_ptr=f, keep_ptr="*i32", count_ptr="*i64", cls_ptr="*i64",
                            anchor_ptr="*i32", out_ptr=p, A=i32, S=i32, cap=i32, limit=i32, M=i32),
                       dict(RAW=raw, ACC=acc, GPU=True, BLOCK=postprocess.ROWS_BLOCK), LAUNCH_OPTIONS, exact=True,
                       int64_ptrs=("pred_ptr", "out_ptr"))
    for has_cls in (True, False):
        yield Spec(f"nms mask has_cls={has_cls}", nms._nms_mask_kernel,
                   dict(boxes_ptr=f, cls_ptr="*i64", n_ptr="*i64", mask_ptr="*i64", cap=i32, words=i32, programs=i32,
                        thr="fp32"),
                   dict(HAS_CLS=has_cls, TILE_=nms.TILE, GPU=True), LAUNCH_OPTIONS, exact=True,
                   int64_ptrs=("boxes_ptr", "mask_ptr"))
    # BLOCK_W = next power of 2 of the mask words: 2 for max_det-sized problems, 256 for A = 8400 candidates
    for cap in (100, 8400):
        words = triton.cdiv(cap, nms.TILE)
        yield Spec(f"nms reduce cap={cap}", nms._nms_reduce_kernel,
                   dict(mask_ptr="*i64", n_ptr="*i64", keep_ptr="*i32", count_ptr="*i64", cap=i32, words=i32,
                        limit=i32),
                   dict(BLOCK_W=triton.next_power_of_2(words), TILE_=nms.TILE), int64_ptrs=("mask_ptr",))


def specs() -> list[Spec]:
    return [*_iou_specs(), *_simota_specs(), *_postprocess_specs()]


SPECS = specs()


# --------------------------------------------------------------------------------------------------
# Coverage: every @triton.jit function of the package is compiled
# --------------------------------------------------------------------------------------------------


def jit_functions() -> dict[str, object]:
    """``{"module.name": JITFunction}`` of every ``@triton.jit`` function in the kernels package."""
    package = importlib.import_module(__package__)
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, triton.runtime.JITFunction) and obj.__module__ == module.__name__:
                found[f"{info.name}.{name}"] = obj
    return found


def uncovered(spec_list: list[Spec]) -> list[str]:
    """Kernels (``*_kernel``) without a spec, and helpers that no compiled kernel reaches (by name)."""
    found = jit_functions()
    compiled = {s.fn for s in spec_list}
    missing = [name for name, fn in found.items() if name.endswith("_kernel") and fn not in compiled]
    reached, frontier = set(), [fn for fn in found.values() if fn in compiled]
    while frontier:
        src = frontier.pop().src
        for name, fn in found.items():
            if fn not in reached and re.search(rf"\b{re.escape(name.split('.', 1)[1])}\(", src):
                reached.add(fn)
                frontier.append(fn)
    missing += [name for name, fn in found.items() if not name.endswith("_kernel") and fn not in reached]
    return sorted(missing)


# --------------------------------------------------------------------------------------------------
# Compile and inspect
# --------------------------------------------------------------------------------------------------

APPROX_DIV = re.compile(r"\b(div\.full\.f32|div\.approx\.\w+|div\.approx\.ftz\.\w+)")
PTX_FMA = re.compile(r"\bfma\.rn(\.ftz)?\.f(32|64)\b")
#: a product or a sum / difference without a rounding modifier: ptxas may fuse the pair into an FMA (--fmad=true)
PTX_PLAIN_MUL = re.compile(r"^\s*mul(?:\.ftz)?\.f(?:32|64)\s+(%\w+),", re.M)
PTX_PLAIN_ADD = re.compile(r"^\s*(?:add|sub)(?:\.ftz)?\.f(?:32|64)\s+%\w+,\s*([^;]+);", re.M)
LLIR_EXPLICIT_FMA = re.compile(r"call [^@\n]*@(llvm\.fma\.f(32|64)|llvm\.nvvm\.fma\.rn\.\w+|__nv_fmaf?)\(")


def fusable_pairs(ptx: str) -> list[str]:
    """Registers that a plain ``mul`` writes and a plain ``add`` / ``sub`` reads: what ptxas may contract."""
    products = set(PTX_PLAIN_MUL.findall(ptx))
    found = []
    for operands in PTX_PLAIN_ADD.findall(ptx):
        found += [r for r in re.findall(r"%\w+", operands) if r in products]
    return sorted(set(found))


def compile_spec(spec: Spec, arch: int = TARGET_ARCH):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    missing = [a for a in spec.fn.arg_names if a not in spec.types and a not in spec.constexprs]
    if missing:
        raise ValueError(f"{spec.label}: no type for argument(s) {missing}")
    signature = {a: ("constexpr" if a in spec.constexprs else spec.types[a]) for a in spec.fn.arg_names}
    src = ASTSource(fn=spec.fn, signature=signature, constexprs=dict(spec.constexprs))
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(spec.options))


def _first_offset_types(ttir: str, arg: str) -> list[str]:
    """Types of the offsets of every ``tt.addptr`` applied directly to pointer argument ``arg`` (or its
    splat / broadcast), in the kernel's TTIR."""
    roots = {f"%{arg}"}
    types = []
    for line in ttir.splitlines():
        m = re.match(r"\s*(%[\w.]+) = (tt\.splat|tt\.broadcast|tt\.expand_dims|tt\.addptr) (%[\w.]+)(?:, (%[\w.]+))?"
                     r"(.*)$", line)
        if not m or m.group(3) not in roots:
            continue
        if m.group(2) == "tt.addptr":
            types.append(re.sub(r"\s+loc\(.*$", "", m.group(5)).rsplit(",", 1)[-1].strip())
        else:
            roots.add(m.group(1))
    return types


def _cubin_resources(cubin: bytes) -> dict:
    """Registers, local memory (bytes per thread: spills and local arrays) and static shared memory of the
    cubin's kernel, from ``cuobjdump -res-usage`` (Triton ships one)."""
    from triton.backends.nvidia import compiler as nv

    tool = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    if not os.path.isfile(tool):
        return dict(regs=None, stack=None, static_shared=None, local=None)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot read cuobjdump -res-usage output:\n{out}")
    return dict(regs=int(m.group(1)), stack=int(m.group(2)), static_shared=int(m.group(3)), local=int(m.group(4)))


def check_spec(spec: Spec, arch: int = TARGET_ARCH) -> dict:
    """Compile ``spec`` and return its figures and the list of ``problems`` (empty: fine)."""
    t0 = time.perf_counter()
    try:
        kernel = compile_spec(spec, arch)
    except Exception as exc:  # noqa: BLE001 - any compile failure is the finding
        msg = str(exc).strip().splitlines()
        return dict(label=spec.label, kernel=spec.fn.__name__, problems=[f"does not compile: {' | '.join(msg[-6:])}"])
    ptx, llir, ttir = kernel.asm["ptx"], kernel.asm["llir"], kernel.asm["ttir"]
    problems = []
    if spec.exact:
        divs = sorted(set(APPROX_DIV.findall(ptx)))
        if divs:
            problems.append(f"approximate division in the PTX: {[d[0] if isinstance(d, tuple) else d for d in divs]}")
        fma, explicit = len(PTX_FMA.findall(ptx)), len(LLIR_EXPLICIT_FMA.findall(llir))
        if fma > explicit:
            problems.append(f"FMA contraction: {fma} fma in the PTX, {explicit} explicit in the LLVM IR")
        pairs = fusable_pairs(ptx)
        if pairs:
            problems.append(f"products that ptxas may fuse into the sum they feed: {pairs[:5]}")
    for arg in spec.int64_ptrs:
        narrow = [t for t in _first_offset_types(ttir, arg) if not re.search(r"i64>?$", t)]
        if narrow:
            problems.append(f"32-bit offsets off {arg}: {narrow}")
    figures = _cubin_resources(kernel.asm["cubin"])
    return dict(label=spec.label, kernel=spec.fn.__name__, problems=problems, regs=figures["regs"],
                spills=figures["local"], shared=kernel.metadata.shared, num_warps=kernel.metadata.num_warps,
                compile_s=round(time.perf_counter() - t0, 2))


def _check_index(args: tuple[int, int]) -> dict:
    return check_spec(SPECS[args[0]], args[1])


def run_all(arch: int = TARGET_ARCH, jobs: int = 1) -> dict:
    """Compile every spec (``jobs`` processes) and return the figures and problems."""
    work = [(i, arch) for i in range(len(SPECS))]
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers inherit the imported kernels (no GPU driver is ever initialised here)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            kernels = list(pool.map(_check_index, work))
    else:
        kernels = [_check_index(w) for w in work]
    return dict(arch=f"sm_{arch}", triton=triton.__version__, uncovered=uncovered(SPECS), kernels=kernels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results to this file (must not exist)")
    parser.add_argument("--arch", type=int, default=TARGET_ARCH, help="compute capability x 10 (default 90)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="compile processes")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile_specs: unset TRITON_INTERPRET (the interpreter replaces triton.jit)", file=sys.stderr)
        return 2
    result = run_all(args.arch, args.jobs)
    if args.json:
        with open(args.json, "x") as f:
            json.dump(result, f, indent=1)
    print(f"{'kernel / variant':60s} {'regs':>5s} {'spill B':>7s} {'smem B':>7s}  problems")
    for k in result["kernels"]:
        print(f"{k['label']:60s} {k.get('regs', '-'):>5} {k.get('spills', '-'):>7} {k.get('shared', '-'):>7}  "
              f"{'; '.join(k['problems']) or 'ok'}")
    if result["uncovered"]:
        print("not compiled by any spec:", ", ".join(result["uncovered"]))
    bad = result["uncovered"] or any(k["problems"] for k in result["kernels"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
