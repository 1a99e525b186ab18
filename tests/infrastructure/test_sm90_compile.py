"""Every Triton kernel compiles for Hopper (sm_90) with its real launch configurations, on a machine without
a GPU, and the generated code keeps the reference's arithmetic (kernels/compile_specs.py does the work).

The Triton interpreter that runs the kernels in the CPU tests accepts code that compiled Triton refuses and
computes divisions and products that the GPU rounds differently; this catches both classes of failure before
a GPU ever sees the code. Compiled once per session in a subprocess (``TRITON_INTERPRET=1`` replaces
``triton.jit`` in a process that set it); Triton's on-disk cache makes later sessions fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from yolox_fast.kernels import compile_specs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.sm90_compile


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("sm90") / "kernels.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "yolox_fast.kernels.compile_specs", "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    if not out.is_file():
        pytest.fail(f"compile_specs crashed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out.read_text())
    return {k["label"]: k for k in result["kernels"]}, result


def test_every_kernel_is_in_the_compile_list(compiled):
    _, result = compiled
    assert result["uncovered"] == [], f"@triton.jit functions that no spec compiles: {result['uncovered']}"
    assert len(compiled[0]) == len(compile_specs.SPECS)


@pytest.mark.parametrize("label", [s.label for s in compile_specs.SPECS])
def test_kernel_compiles_for_sm90(compiled, label):
    """Compiles; bit-exact kernels: no approximate division or FMA contraction in the PTX; 64-bit offsets
    where 32-bit index products would overflow; no register spills."""
    k = compiled[0][label]
    assert k["problems"] == [], f"{label}: {k['problems']}"
    assert k["spills"] in (0, None), f"{label} spills {k['spills']} bytes per thread to local memory"


def test_checks_catch_what_they_look_for():
    """The PTX / TTIR checks flag the code they are meant to: an approximate division, a contracted FMA and
    a 32-bit offset (so a clean result above means something)."""
    assert compile_specs.APPROX_DIV.search("div.full.f32 %f1, %f2, %f3;")
    assert compile_specs.APPROX_DIV.search("div.approx.ftz.f32 %f1, %f2, %f3;")
    assert not compile_specs.APPROX_DIV.search("div.rn.f32 %f1, %f2, %f3;")
    assert compile_specs.PTX_FMA.search("fma.rn.f32 %f4, %f1, %f2, %f3;")
    # a plain product read by a plain sum: ptxas (--fmad=true, Inductor's launch) may fuse them; mul.rn it may not
    assert compile_specs.fusable_pairs("\tmul.f32 \t%r5, %r1, %r2;\n\tadd.f32 \t%r6, %r4, %r5;\n") == ["%r5"]
    assert compile_specs.fusable_pairs("\tmul.rn.f32 \t%r5, %r1, %r2;\n\tadd.f32 \t%r6, %r4, %r5;\n") == []
    assert compile_specs.fusable_pairs("\tmul.f32 \t%r5, %r1, %r2;\n\tsqrt.rn.f32 \t%r6, %r5;\n") == []
    assert compile_specs.LLIR_EXPLICIT_FMA.search("%5 = call float @llvm.fma.f32(float %1, float %2, float %3)")
    ttir = ("%0 = arith.muli %b, %stride_b : i32\n"
            "%1 = tt.addptr %cls_ptr, %0 : !tt.ptr<f16>, i32 loc(#loc3)\n"
            "%2 = tt.splat %out_ptr : !tt.ptr<f32> -> tensor<128x!tt.ptr<f32>>\n"
            "%3 = tt.addptr %2, %9 : tensor<128x!tt.ptr<f32>>, tensor<128xi64> loc(#loc4)\n")
    assert compile_specs._first_offset_types(ttir, "cls_ptr") == ["i32"]
    assert compile_specs._first_offset_types(ttir, "out_ptr") == ["tensor<128xi64>"]


def test_exact_kernels_compile_as_torch_compile_launches_them():
    """Inductor launches user kernels with Triton's default options (FP fusion on) whatever the eager launch
    passes; the specs compile every kernel that way, so the checks above hold for torch.compile too."""
    assert all(spec.options.get("enable_fp_fusion", True) for spec in compile_specs.SPECS)


def test_coverage_check_names_what_is_missing():
    from yolox_fast.kernels import iou, nms

    specs = compile_specs.SPECS
    assert compile_specs.uncovered(specs) == []
    assert compile_specs.uncovered([s for s in specs if s.fn is not nms._nms_reduce_kernel]) == [
        "nms._nms_reduce_kernel"]
    # a kernel's helpers count as compiled only through a compiled kernel
    assert compile_specs.uncovered([s for s in specs if s.fn is not iou._pairwise_iou_kernel]) == [
        "iou._corners", "iou._pairwise_iou_kernel"]
