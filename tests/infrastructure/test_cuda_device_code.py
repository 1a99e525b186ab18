"""Issue 8's CUDA-only fixes (defects 7, 8, 9) checked on the CPU, in the device code compiled into
yolox_fast._C (read with cuobjdump; no GPU needed). tests/test_cuda_readiness.py runs the same fixes on a GPU.

* 8: nms / batched_nms / postprocess with B = 1 sort their one segment with cub's device-wide radix sort;
  cub::DeviceSegmentedSort alone sorts one segment in one thread block.
* 7: float64 postprocess ties go by (class, anchor): the candidates are pre-sorted by a tie key
  (tie_order_kernel), sorting the int64 score keys along as values, then mapped back to their anchors.
* 9: pairwise_iou strides its rows over gridDim.y (capped at 65535): every kernel reads %nctaid.y.

These are checks of what was compiled, not of results: the GPU tests check results. Each check takes the
path of a compiled file (the .so, or an object from nvcc -c), so that it can be run on an old build too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from yolox_fast.ops import _extension


def _cuobjdump() -> str | None:
    """The toolkit's cuobjdump, else the one Triton ships (pip's triton has one; minimal toolkits may not)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(home, "bin", "cuobjdump")] if home else []
    candidates.append(shutil.which("cuobjdump") or "")
    try:
        import triton

        candidates.append(str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


CUOBJDUMP = _cuobjdump()
CXXFILT = shutil.which("c++filt")

pytestmark = [
    pytest.mark.skipif(not _extension.cuda_built(), reason="yolox_fast._C was built without CUDA kernels"),
    pytest.mark.skipif(CUOBJDUMP is None, reason="no cuobjdump (CUDA toolkit or triton's copy) found"),
    pytest.mark.skipif(CXXFILT is None, reason="no c++filt (binutils) to read kernel names"),
]


def _library() -> str:
    return _extension._C.__file__


def _run(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, check=True, timeout=120).stdout


@cache
def kernels_by_arch(path: str) -> dict[str, list[str]]:
    """{"sm_80": [demangled kernel signature, ...], ...} of the SASS in a compiled file."""
    out = _run(CUOBJDUMP, "--dump-resource-usage", path)
    found: dict[str, list[str]] = {}
    arch = None
    in_elf = False
    mangled: list[tuple[str, str]] = []
    for line in out.splitlines():
        if line.startswith("Fatbin "):  # "Fatbin elf code:" (SASS, listed by function) or "Fatbin ptx code:"
            in_elf, arch = line.startswith("Fatbin elf"), None
        m = re.match(r"arch = (sm_\d+)", line)
        if m and in_elf:
            arch = m.group(1)
            found.setdefault(arch, [])
        m = re.match(r"\s*Function (\S+):", line)
        if m and arch:
            mangled.append((arch, m.group(1)))
    names = _run(CXXFILT, stdin="".join(name + "\n" for _, name in mangled)).splitlines()
    for (arch, _), name in zip(mangled, names, strict=True):
        found[arch].append(name)
    return found


@cache
def ptx_entries(path: str) -> dict[str, str]:
    """{mangled entry name: its PTX body} of every PTX entry in a compiled file."""
    out = _run(CUOBJDUMP, "-ptx", path)
    parts = re.split(r"(?:\.(?:visible|weak)\s+)?\.entry\s+", out)[1:]
    return {part.split("(", 1)[0].strip(): part for part in parts}


def template_args(signature: str) -> list[str]:
    """Top-level template arguments of a demangled kernel: 'void f<A, B<C, D>, (E)1>(...)' -> [A, B<C, D>, (E)1]."""
    args, depth, current = [], 0, ""
    for ch in signature[signature.index("<") + 1:]:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            if depth == 0:
                return args + [current.strip()]
            depth -= 1
        elif ch == "," and depth == 0:
            args, current = args + [current.strip()], ""
            continue
        current += ch
    raise ValueError(f"unbalanced template arguments in {signature!r}")


def sort_types(path: str, arch: str, kernels: tuple[str, ...]) -> set[tuple[str, str]]:
    """(key type, value type) of the cub sort kernels named `kernels` in the SASS of `arch`. Their template
    arguments hold a policy and the sort order (an enum, or a bool in older CUB), then the key and value types:
    the first two arguments that are neither qualified names, casts nor literals."""
    found = set()
    for signature in kernels_by_arch(path)[arch]:
        if any(f"::{kernel}<" in signature for kernel in kernels):
            plain = [a for a in template_args(signature)
                     if "::" not in a and not a.startswith("(") and a not in ("true", "false") and not a.isdigit()]
            found.add((plain[0], plain[1]))
    return found


RADIX_SORT = ("DeviceRadixSortOnesweepKernel", "DeviceRadixSortSingleTileKernel")
SEGMENTED_SORT = ("DeviceSegmentedSortKernelSmall", "DeviceSegmentedSortKernelLarge")


def check_one_segment_radix_sort(path: str) -> None:
    """Defect 8: int64 keys with int32 values (anchor slots / box indices) sorted device-wide; several
    images still go through the segmented sort."""
    for arch in kernels_by_arch(path):
        assert ("long", "int") in sort_types(path, arch, RADIX_SORT), (
            f"{arch}: no cub device-wide radix sort of int64 keys with int32 values; one segment would be "
            "sorted by DeviceSegmentedSort in one thread block")
        assert ("long", "int") in sort_types(path, arch, SEGMENTED_SORT), f"{arch}: no segmented sort"


def check_float64_tie_pre_sort(path: str) -> None:
    """Defect 7: the tie-order kernels, and sorts (one image and several) of int64 tie keys that carry the
    int64 score keys as values (the pre-sort)."""
    for arch, names in kernels_by_arch(path).items():
        for kernel in ("tie_order_kernel", "slots_from_tie_keys_kernel"):
            assert any(f"::{kernel}(" in name for name in names), f"{arch}: no {kernel}"
        for kind in (RADIX_SORT, SEGMENTED_SORT):
            assert ("long", "long") in sort_types(path, arch, kind), (
                f"{arch}: no {kind[0]} of int64 tie keys carrying int64 score keys")


def check_iou_rows_strided(path: str) -> None:
    """Defect 9: every pairwise_iou kernel reads gridDim.y (its row stride), not only blockIdx.y."""
    iou = {name: body for name, body in ptx_entries(path).items() if "pairwise_iou_kernel" in name}
    assert iou, "no pairwise_iou_kernel in the PTX"
    for name, body in iou.items():
        assert "%ctaid.y" in body and "%nctaid.y" in body, (
            f"{name} does not stride its rows over gridDim.y: at most 65535 rows per launch")


def test_one_segment_sort_is_device_wide_radix_sort():
    check_one_segment_radix_sort(_library())


def test_float64_ties_are_pre_sorted_by_class_then_anchor():
    check_float64_tie_pre_sort(_library())


def test_pairwise_iou_rows_are_strided_over_grid_y():
    if not ptx_entries(_library()):
        pytest.skip("yolox_fast._C carries no PTX (TORCH_CUDA_ARCH_LIST without +PTX)")
    check_iou_rows_strided(_library())


def test_the_library_has_device_code_for_each_built_arch():
    """The checks above loop over the archs found: an empty listing must not pass them vacuously."""
    archs = kernels_by_arch(_library())
    assert archs and all(archs.values()), archs
