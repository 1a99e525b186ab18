"""Fixtures shared by the test files: the real test data folder and the official YOLOX-Nano model."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``../shared/data`` relative to the repository root (README of that folder lists its contents).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (expected at ../shared/data from the repo root)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nano_model(shared_data):
    """The official YOLOX-Nano (80 COCO classes, ``weights/yolox_nano.pth``) in eval mode on the CPU.

    Loaded once per session and shared: a test that changes its mode or weights must restore them.
    """
    from yolox_fast.models import build_yolox, load_official_weights

    weights = shared_data / "weights" / "yolox_nano.pth"
    if not weights.is_file():
        pytest.skip(f"official YOLOX-Nano weights not found at {weights}")
    model = build_yolox("yolox-nano", num_classes=80)
    load_official_weights(model, weights, strict=True)
    return model.eval()
