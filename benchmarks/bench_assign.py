"""SimOTA assignment: every provider side by side, one benchmark group per shape.

    pytest benchmarks/bench_assign.py --benchmark-only                # default shapes (a few minutes on 2 cores)
    YOLOX_FAST_BENCH_ALL=1 pytest benchmarks/bench_assign.py --benchmark-only   # the full grid
    YOLOX_FAST_BENCH_GPU_ONLY=1 pytest benchmarks/bench_assign.py --benchmark-only   # GPU providers only

Providers: ``reference`` (the official per-image algorithm, yolox_fast/ops/reference.py), ``torch``
(batched PyTorch), ``cpu`` (the C++ op), and on a GPU ``reference-cuda``, ``torch-cuda``, ``cuda`` (the
CUDA op) and ``triton``. Shapes: B 1/8/16, A 8400 (640 input) and 33600 (1280), C 80, G 10/50/120/500,
seed variant (``center`` too in the full grid), inputs from :func:`yolox_fast.ops.simota_inputs.random_simota_batch`.

Recorded in ``extra_info``: device, threads, ``peak_extra_mb`` and for GPU providers ``cuda_event_ms``
(mean of CUDA-event timings, no Python sync in the loop) and ``host_syncs`` (0 when a call passes
``torch.cuda.set_sync_debug_mode("error")``).

Peak memory, CPU: the growth of the process's resident set during one call. Before the call, freed
heap memory goes back to the OS (``malloc_trim``) and the kernel's high-water mark is reset
(``echo 5 > /proc/self/clear_refs``); after it, ``VmHWM - VmRSS(before)`` from ``/proc/self/status``.
This sees every allocation (PyTorch tensors, the C++ op's own buffers), unlike tracemalloc. GPU:
``torch.cuda.max_memory_allocated()`` minus the memory allocated before the call.

The reference is slow (about 11 s for B=8, G=120, A=8400 on a 2-core CPU): it runs once per shape
(``pedantic``, 1 round), and is skipped where its [G, U, C] tensors would not fit in memory.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import re
import time

import pytest
import torch
from simota_inputs import random_simota_batch

from benchmarks.gpu_targets import GPU_ONLY, SIMOTA_TARGET_SHAPE
from yolox_fast.ops import backends, simota
from yolox_fast.ops.simota_variant import DEFAULT_VARIANT, get_variant
from yolox_fast.ops.simota_variant import VARIANTS as SIMOTA_VARIANTS

ALL = os.environ.get("YOLOX_FAST_BENCH_ALL") == "1"
HAS_CUDA = torch.cuda.is_available()
C = 80

# (B, A, G): the default set holds the targets of issue 3 and one of each A; ALL adds the full grid.
DEFAULT_SHAPES = [(8, 8400, 10), (8, 8400, 120), (16, 8400, 120), (16, 8400, 50), (1, 8400, 50), (1, 33600, 50),
                  (8, 33600, 120)]
FULL_SHAPES = [(b, a, g) for b in (1, 8, 16) for a in (8400, 33600) for g in (10, 50, 120, 500)]
SHAPES = FULL_SHAPES if ALL else DEFAULT_SHAPES
VARIANTS = list(SIMOTA_VARIANTS) if ALL else [DEFAULT_VARIANT]

CPU_PROVIDERS = ["reference", "torch", "cpu"]
GPU_PROVIDERS = ["reference-cuda", "torch-cuda", "cuda", "triton"]
PROVIDERS = CPU_PROVIDERS + GPU_PROVIDERS

# CPU providers left out of the default run at some shapes (slow or memory-hungry on 2 cores).
DEFAULT_SKIP = {("reference", (16, 8400, 120)), ("reference", (16, 8400, 50)), ("reference", (8, 33600, 120)),
                ("torch", (8, 33600, 120))}
#: time budget per provider and shape for the timed rounds (after one measured call)
ROUND_BUDGET_S = 4.0


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"model name\s*:\s*(.*)", f.read())
        return match.group(1).strip() if match else platform.processor()
    except OSError:
        return platform.processor() or platform.machine()


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1))


class _CpuPeak:
    """Resident-set growth over one call (Linux): ``start()`` trims the heap and resets the kernel's
    high-water mark, ``extra_mb()`` reads it back after the call."""

    def __init__(self):
        self.before = None

    def start(self) -> None:
        try:
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            self.before = _status_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except (OSError, AttributeError):
            self.before = None

    def extra_mb(self) -> float | None:
        if self.before is None:
            return None
        return round(max(_status_kb("VmHWM") - self.before, 0) / 1024.0, 1)


def _gpu_peak_extra_mb(fn) -> float:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def _estimated_gb(provider: str, b: int, a: int, g: int) -> float:
    """Rough peak memory: the reference holds [G, U, C] float32 per image, torch ~12 [B, G, A] tensors."""
    if provider.startswith("reference"):
        return g * a * C * 4 * 3 / 1e9
    if provider.startswith("torch"):
        return b * g * a * 4 * 12 / 1e9 + b * a * C * 4 * 3 / 1e9
    return 0.0


def _memory_limit_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory / 1e9 * 0.8
    try:
        with open("/proc/meminfo") as f:
            return int(re.search(r"MemAvailable:\s+(\d+) kB", f.read()).group(1)) / 1e6 * 0.7
    except OSError:
        return 8.0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-A{}-G{}".format(*s))
def test_simota_assign(benchmark, shape, provider, variant):
    b, a, g = shape
    device = "cuda" if provider in GPU_PROVIDERS else "cpu"
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("needs a CUDA GPU")
    if GPU_ONLY and (device == "cpu" or (provider == "reference-cuda" and shape != SIMOTA_TARGET_SHAPE)):
        pytest.skip("YOLOX_FAST_BENCH_GPU_ONLY=1: GPU providers, and the reference only at the target shape")
    if not ALL and (provider, shape) in DEFAULT_SKIP:
        pytest.skip("slow or memory-hungry for the default run; YOLOX_FAST_BENCH_ALL=1 runs it")
    need = _estimated_gb(provider, b, a, g)
    if need > _memory_limit_gb(device):
        pytest.skip(f"{provider} would need ~{need:.0f} GB at this shape")
    name = {"reference-cuda": "reference", "torch-cuda": "torch"}.get(provider, provider)
    if name not in backends.available_backends(simota.OP, device):
        pytest.skip(f"backend {name!r} is not available on {device}")

    var = get_variant(variant)
    batch = random_simota_batch(b, g, C, a, seed=b * 1000 + g, device=device)

    def call():
        return simota.simota_assign(*batch, var, backend=name)

    def call_synced():
        out = call()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"simota B={b} A={a} G={g} C={C} {variant}"
    benchmark.extra_info.update(
        device=_device_name(device), threads=torch.get_num_threads(), provider=provider, backend=name,
        shape=dict(B=b, A=a, G=g, C=C), real_gts=int(batch.gt_mask.sum()),
    )
    timer = time.perf_counter
    if device == "cuda":
        call_synced()  # warm up: kernel compilation, allocator
        t0 = timer()
        benchmark.extra_info["peak_extra_mb"] = round(_gpu_peak_extra_mb(call), 2)
        first = timer() - t0
        if name != "reference":  # the reference syncs by design (.tolist(), nonzero())
            torch.cuda.set_sync_debug_mode("error")
            try:
                call()
                benchmark.extra_info["host_syncs"] = 0
            except RuntimeError as exc:
                benchmark.extra_info["host_syncs"] = f"sync: {exc}"[:200]
            finally:
                torch.cuda.set_sync_debug_mode("default")
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(20):
                call()
            end.record()
            torch.cuda.synchronize()
            benchmark.extra_info["cuda_event_ms"] = round(start.elapsed_time(end) / 20, 4)
    elif name == "reference":
        first = float("inf")  # one timed round, whose memory is measured on the way
    else:
        peak = _CpuPeak()
        peak.start()
        t0 = timer()
        call()
        first = timer() - t0
        benchmark.extra_info["peak_extra_mb"] = peak.extra_mb()

    rounds = max(1, min(10, int(ROUND_BUDGET_S / max(first, 1e-6))))
    if name == "reference" and device == "cpu":
        peak = _CpuPeak()
        result = benchmark.pedantic(call, setup=peak.start, rounds=1, iterations=1)
        benchmark.extra_info["peak_extra_mb"] = peak.extra_mb()
    else:
        result = benchmark.pedantic(call_synced, rounds=rounds, iterations=1)
    benchmark.extra_info["num_fg"] = int(result[0].sum())
