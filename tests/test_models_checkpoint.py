"""The one checkpoint reader (yolox_fast.models.checkpoint): safe loading, clear errors, what it infers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolox_fast.models import build_yolox
from yolox_fast.models.checkpoint import (
    CheckpointError,
    infer_preset,
    load_checkpoint_file,
    load_model,
    read_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs ``os.system(touch <marker>)``: what a hostile checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A real ``torch.save`` file whose unpickling would create ``marker``; returns (file, marker)."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "hostile.pt"
    torch.save({"model": build_yolox("yolox-nano", num_classes=2).state_dict(), "extra": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_hostile_checkpoint_is_refused_and_never_runs(tmp_path):
    path, marker = hostile_checkpoint(tmp_path)
    for read in (load_checkpoint_file, read_checkpoint, load_model):
        with pytest.raises(CheckpointError, match="refusing to load .*other than weights"):
            read(path)
    assert not marker.exists()
    # The unsafe loader would have run it: proof that the file really is hostile.
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["eval", "detect"])
def test_hostile_checkpoint_is_refused_by_every_command(tmp_path, command, shared_data):
    path, marker = hostile_checkpoint(tmp_path)
    image = shared_data / "images" / "dog.jpg"
    args = {
        "eval": ["--ckpt", str(path), "--images", str(tmp_path), "--ann", str(tmp_path / "a.json")],
        "detect": ["--ckpt", str(path), str(image), "--project", str(tmp_path / "out")],
    }[command]
    proc = subprocess.run([sys.executable, "-m", f"yolox_fast.{command}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "refusing to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_bad_files_are_named(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    js = tmp_path / "config.pt"
    js.write_text('{"model": 1}')
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    good = tmp_path / "good.pt"
    torch.save({"model": build_yolox("yolox-nano", num_classes=2).state_dict()}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.ones(3)}}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-40])
    cases = {text: "not a PyTorch checkpoint (text)", js: "not a PyTorch checkpoint (text)",
             empty: "not a PyTorch checkpoint (an empty file)", truncated: "truncated or corrupt",
             legacy: "truncated or corrupt", tmp_path: "is a folder"}
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        torch.save([1, 2], tmp_path / "list.pt")
        read_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no model weights"):
        torch.save({"epoch": 3}, tmp_path / "noweights.pt")
        read_checkpoint(tmp_path / "noweights.pt")


def test_numpy_scalars_of_official_training_checkpoints_are_allowed(tmp_path):
    """Official training checkpoints store ``best_ap`` as a NumPy float: plain data, read safely."""
    path = tmp_path / "official_train.pth"
    sd = build_yolox("yolox-nano", num_classes=2).state_dict()
    torch.save({"start_epoch": 3, "model": sd, "optimizer": {}, "best_ap": np.float64(0.25)}, path)
    ckpt = load_checkpoint_file(path)
    assert ckpt["best_ap"] == 0.25 and ckpt["start_epoch"] == 3


@pytest.mark.parametrize("name", ["yolox-nano", "yolox-tiny", "yolox-s", "yolox-m"])
def test_preset_class_count_and_names_are_inferred(name, tmp_path):
    sd = build_yolox(name, num_classes=5).state_dict()
    assert infer_preset(sd) == name
    path = tmp_path / "ours.pt"
    torch.save({"model": sd, "ema": None, "class_names": list("abcde")}, path)
    info = read_checkpoint(path)
    assert (info.model_name, info.num_classes, info.class_names, info.which) == (name, 5, list("abcde"), "model")
    assert read_checkpoint({"model": sd}).class_names == ["0", "1", "2", "3", "4"]


def test_load_model_checks_the_requested_model(tmp_path):
    sd = build_yolox("yolox-tiny", num_classes=3).state_dict()
    with pytest.raises(CheckpointError, match="holds yolox-tiny weights, not yolox-s"):
        load_model({"model": sd}, model_name="s")
    with pytest.raises(CheckpointError, match="has 3 classes, not 80"):
        load_model({"model": sd}, num_classes=80)
    model, info = load_model({"model": sd})
    assert info.model_name == "yolox-tiny" and not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    with pytest.raises(CheckpointError, match="no class head"):
        load_model({"model": {"w": torch.zeros(1)}})


def test_official_weights_read_safely(shared_data):
    info = read_checkpoint(shared_data / "weights" / "yolox_nano.pth")
    assert (info.model_name, info.num_classes, info.which) == ("yolox-nano", 80, "model")
    assert info.class_names[16] == "dog"
