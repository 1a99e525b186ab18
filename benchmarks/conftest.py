"""Shared benchmark helpers: what machine a figure was measured on."""

from __future__ import annotations

import platform

import pytest
import torch


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


@pytest.fixture
def record_env(benchmark):
    """Call ``record_env(device)`` to put device name and thread count into the result's extra_info."""

    def record(device: str = "cpu", **extra) -> None:
        benchmark.extra_info.update(device=device_name(device), threads=torch.get_num_threads(), **extra)

    return record
