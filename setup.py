"""Build yolox_fast and its operator library ``yolox_fast._C``.

* C++ CPU kernels (``csrc/*.cpp``, ``csrc/cpu``) are always built.
* CUDA kernels (``csrc/cuda``) are built when torch is a CUDA build and nvcc is found; no GPU is
  needed to compile them. ``YOLOX_FAST_CUDA=0`` skips them, ``=1`` makes their absence an error.
  ptxas reports registers, spills and static shared memory of every kernel into the build log
  (``-Xptxas=-v``, read by scripts/nvcc_resources.py); a kernel that spills or uses more than 48 KB of
  static shared memory fails the build.
* ``kernels/`` (Triton) is installed as ``yolox_fast.kernels``.

Build against the installed torch: ``pip install -e . --no-build-isolation``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _nvcc_toolkit_root() -> str | None:
    """The CUDA toolkit folder that the nvcc on PATH really uses.

    torch guesses CUDA_HOME as the parent of the nvcc on PATH, which is wrong when that nvcc is a
    wrapper script (as on our CI machines); ``nvcc --dryrun`` prints the real location as TOP.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
    return os.path.realpath(match.group(1)) if match else os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
    _root = _nvcc_toolkit_root()
    if _root:
        os.environ["CUDA_HOME"] = _root

import torch  # noqa: E402  (CUDA_HOME must be set before cpp_extension reads it)
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _nvidia_wheel_includes() -> list[str]:
    """Header folders of NVIDIA's pip wheels (cuSPARSE, cuBLAS... included by ATen/cuda/CUDAContext.h)."""
    found = []
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        found += sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))
        found += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    return [p for p in dict.fromkeys(found) if os.path.isdir(p)]


def _want_cuda() -> bool:
    flag = os.environ.get("YOLOX_FAST_CUDA", "auto").lower()
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if flag in ("0", "false", "no"):
        return False
    if flag in ("1", "true", "yes") and not possible:
        sys.exit(f"YOLOX_FAST_CUDA=1 but cannot build CUDA kernels: torch.version.cuda={torch.version.cuda}, "
                 f"CUDA_HOME={CUDA_HOME}")
    return possible


def _check_kernel_resources() -> None:
    """Compile the .cu files through scripts/nvcc_resources.py: it logs ptxas's figures per kernel and fails
    the compile of a kernel that spills or exceeds 48 KB of static shared memory. Wraps PYTORCH_NVCC when
    set (e.g. ccache), else the toolkit's nvcc."""
    nvcc = os.environ.get("PYTORCH_NVCC") or os.path.join(CUDA_HOME, "bin", "nvcc")
    if "nvcc_resources.py" not in nvcc:
        wrapper = os.path.join(ROOT, "scripts", "nvcc_resources.py")
        os.environ["PYTORCH_NVCC"] = f"{sys.executable} {wrapper} {nvcc}"


def extensions():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx = ["-O3", "-std=c++20", "-fopenmp"]
    # Keep a*b+c as two roundings, like PyTorch's own ops: the kernels must equal the reference bit for bit.
    cxx.append("-ffp-contract=off")
    with_cuda = _want_cuda()
    if with_cuda:
        cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        nvcc = ["-O3", "-std=c++20", "--fmad=false", "--expt-relaxed-constexpr", "-DYOLOX_FAST_WITH_CUDA",
                "-Xptxas=-v"]
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if not arch:
            # Without a GPU torch cannot detect one; build for Ampere, Hopper and any newer GPU (PTX).
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        _check_kernel_resources()
        ext = CUDAExtension(
            "yolox_fast._C",
            sources + cuda_sources,
            include_dirs=[os.path.join(ROOT, "csrc")] + _nvidia_wheel_includes(),
            define_macros=[("YOLOX_FAST_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "yolox_fast._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    print(f"yolox_fast: building the C++ CPU kernels{' and the CUDA kernels' if with_cuda else ''} "
          f"(torch {torch.__version__}, CUDA {torch.version.cuda}, CUDA_HOME={CUDA_HOME})", flush=True)
    return [ext]


# In the source tree yolox_fast/kernels is a symlink to kernels/, so a checkout runs without
# installing; an installed copy gets the real files through package_dir.
PACKAGES = sorted(set(find_packages(include=["yolox_fast", "yolox_fast.*"])) | {"yolox_fast.kernels"})

setup(
    packages=PACKAGES,
    package_dir={"yolox_fast.kernels": "kernels"},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
