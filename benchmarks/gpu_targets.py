"""The GPU targets of the benchmarks: where they apply, and the short GPU-only run of scripts/gpu_check.sh."""

from __future__ import annotations

import os

#: The GPU targets of the SimOTA and postprocess issues are set for Hopper (H100, H200: compute capability
#: 9.0) and apply there and on newer GPUs; keyed on the capability, not on a device name.
TARGET_CAPABILITY = (9, 0)

#: ``YOLOX_FAST_BENCH_GPU_ONLY=1`` (scripts/gpu_check.sh): GPU providers only, and the reference on the GPU
#: only where a target's ratio needs it, so that one GPU run stays short.
GPU_ONLY = os.environ.get("YOLOX_FAST_BENCH_GPU_ONLY") == "1"

#: SimOTA target (issue 3): B=16, A=8400, G=50 under 1 ms on the GPU, no host sync, >= 50x the reference.
SIMOTA_TARGET_SHAPE = (16, 8400, 50)
SIMOTA_TARGET_MS = 1.0
SIMOTA_TARGET_RATIO = 50.0


def gpu_target_applies(capability: tuple[int, int]) -> bool:
    """Whether the GPU targets are checked on a GPU of this compute capability ``(major, minor)``."""
    return tuple(capability) >= TARGET_CAPABILITY
