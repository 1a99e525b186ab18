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
    load_model,
    read_checkpoint,
    read_checkpoint_file,
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
    for read in (read_checkpoint_file, read_checkpoint, load_model):
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
    ckpt = read_checkpoint_file(path)
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


def test_read_checkpoint_prefers_ema_when_asked():
    raw, ema = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    ckpt = {"model": raw, "ema": {"state_dict": ema, "updates": 7}, "epoch": 3}
    assert read_checkpoint(ckpt, prefer_ema=False).state_dict["w"].item() == 0.0
    assert read_checkpoint(ckpt).state_dict["w"].item() == 1.0
    assert read_checkpoint({"model": raw, "ema": ema}).state_dict["w"].item() == 1.0
    ema_only = {"ema": ema, "epoch": 3}
    assert read_checkpoint(ema_only, prefer_ema=False).state_dict["w"].item() == 1.0
    assert read_checkpoint({"model": raw}).state_dict["w"].item() == 0.0  # official: no EMA to prefer


def test_reads_the_ema_of_a_training_checkpoint(shared_data, tmp_path):
    official = read_checkpoint(shared_data / "weights" / "yolox_nano.pth").state_dict
    raw = {k: torch.zeros_like(v) for k, v in official.items()}
    path = tmp_path / "last.pth"
    torch.save({"model": raw, "ema": {"state_dict": official, "updates": 100}, "epoch": 5}, path)
    info = read_checkpoint(str(path))
    assert info.which == "ema" and all(torch.equal(info.state_dict[k], official[k]) for k in official)
    assert info.model_name == "yolox-nano" and info.num_classes == 80 and info.class_names[0] == "person"
    info = read_checkpoint(str(path), prefer_ema=False)
    assert info.which == "model"
    assert torch.equal(info.state_dict["head.cls_preds.0.weight"], raw["head.cls_preds.0.weight"])


def _ours(sd, **config) -> dict:
    """A yolox_fast training checkpoint's model part (the trainer writes these keys, see engine/train_state)."""
    return {"model": sd, "ema": None, "class_names": ["a", "b"], "model_name": "yolox-nano", "config": config}


def test_the_trained_input_size_is_remembered():
    """Issue 17.6: the size a model was trained (and evaluated) at comes back from the checkpoint."""
    sd = build_yolox("yolox-nano", num_classes=2).state_dict()
    assert read_checkpoint(_ours(sd, img_size=256, test_size=256)).input_size == (256, 256)
    assert read_checkpoint(_ours(sd, img_size=256, test_size=None)).input_size == (256, 256)
    assert read_checkpoint(_ours(sd, img_size=256, test_size=320)).input_size == (320, 320)  # the evaluation size
    assert read_checkpoint(_ours(sd)).input_size == (416, 416)  # no size recorded: the preset's
    assert read_checkpoint({"model": build_yolox("yolox-s", num_classes=2).state_dict()}).input_size == (640, 640)
    with pytest.raises(CheckpointError, match="unusable training size.*multiple of 32, got 100"):
        read_checkpoint(_ours(sd, img_size=100))
    model, info = load_model(_ours(sd, img_size=224))
    assert info.input_size == (224, 224) and info.class_names == ["a", "b"] and info.num_classes == 2


def test_one_reader_and_one_way_to_a_model():
    """Only the two checkpoint modules read files; only the model loader and the trainer (which builds its
    own model to fine-tune) put weights into a model: every command goes through load_model."""
    import re

    callers = {}
    for path in (REPO / "yolox_fast").rglob("*.py"):
        text = path.read_text()
        for name in ("read_checkpoint_file", "load_official_weights"):
            if re.search(rf"\b{name}\(", text):
                callers.setdefault(name, set()).add(path.relative_to(REPO / "yolox_fast").as_posix())
    assert callers["read_checkpoint_file"] == {"models/checkpoint.py", "engine/train_state.py"}
    assert callers["load_official_weights"] == {"models/checkpoint.py", "engine/trainer.py"}
