"""The CUDA build's resource check (scripts/nvcc_resources.py, put in front of nvcc by setup.py): ptxas's
figures of every kernel reach the build log, and a kernel that spills fails its compile. Real nvcc, on a
small kernel built to spill (register cap 24); skipped where no nvcc is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "scripts" / "nvcc_resources.py"

KERNELS = r"""
__global__ void heavy(const float* x, float* y) {
  float acc[64];
  for (int k = 0; k < 64; ++k) acc[k] = x[threadIdx.x * 64 + k];
  for (int r = 0; r < 8; ++r)
    for (int k = 0; k < 64; ++k) acc[k] = acc[k] * acc[(k * 7 + r) & 63] + acc[(k + r) & 63];
  float s = 0;
  for (int k = 0; k < 64; ++k) s += acc[k];
  y[threadIdx.x] = s;
}
__global__ void light(float* y) {
  __shared__ float t[256];
  t[threadIdx.x] = threadIdx.x;
  __syncthreads();
  y[threadIdx.x] = t[255 - threadIdx.x];
}
"""


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME")
    found = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc")
    return found if found and os.path.exists(found) else None


@pytest.mark.skipif(_nvcc() is None, reason="nvcc is not installed")
@pytest.mark.parametrize("regs,spills", [(24, True), (255, False)])
def test_spilling_kernel_fails_the_compile(tmp_path, regs, spills):
    src = tmp_path / "k.cu"
    src.write_text(KERNELS)
    obj = tmp_path / "k.o"
    proc = subprocess.run([sys.executable, str(WRAPPER), _nvcc(), "-c", str(src), "-o", str(obj), "-arch=sm_90",
                           "-Xptxas=-v", f"-maxrregcount={regs}"], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ptxas ")]
    assert any(": light: " in ln and "1024 bytes static smem" in ln for ln in lines), proc.stdout
    assert any(": heavy: " in ln for ln in lines), proc.stdout
    if spills:
        assert proc.returncode == 1 and "heavy (sm_90) spills" in proc.stderr, proc.stderr
        assert not obj.exists()
    else:
        assert proc.returncode == 0 and obj.is_file(), proc.stderr


def _module():
    sys.path.insert(0, str(WRAPPER.parent))
    try:
        import nvcc_resources
    finally:
        sys.path.remove(str(WRAPPER.parent))
    return nvcc_resources


def test_kernel_names_in_the_log_are_short():
    short = _module().short
    assert short("void yolox_fast::(anonymous namespace)::score_kernel<float, true, false>(float const*, "
                 "yolox_fast::(anonymous namespace)::PostprocessShape, float, long*, int*, int*)") == (
        "score_kernel<float, true, false>")
    assert short("void cub::X::Kernel<(bool)1, long>(long*, int)") == "cub::X::Kernel<(bool)1, long>"


def test_parse_reads_every_figure():
    nvcc_resources = _module()
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z4big1Pf' for 'sm_80'
ptxas info    : Function properties for _Z4big1Pf
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 49408 bytes smem, 360 bytes cmem[0]
ptxas info    : Compiling entry function '_Z2okPf' for 'sm_90'
ptxas info    : Function properties for _Z2okPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers, 360 bytes cmem[0]
"""
    assert nvcc_resources.parse(log) == [
        dict(name="_Z4big1Pf", arch="sm_80", regs=40, spill_stores=4, spill_loads=12, stack=8, smem=49408),
        dict(name="_Z2okPf", arch="sm_90", regs=8, spill_stores=0, spill_loads=0, stack=0, smem=0),
    ]
