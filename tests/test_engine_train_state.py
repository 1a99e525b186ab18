"""Atomic checkpoint writes, clear errors on bad files, RNG state round trip."""

import random

import numpy as np
import pytest
import torch

from yolox_fast.engine import train_state as ckpt_mod
from yolox_fast.engine.train_state import (
    capture_rng_state,
    copy_checkpoint,
    find_latest_run,
    read_train_state,
    resolve_resume_path,
    restore_rng_state,
    save_train_state,
)


def minimal_state(**extra):
    state = {"model": {"w": torch.ones(2)}, "optimizer": {}, "epoch": 1, "iteration": 10, "config": {"a": [1, 2]},
             "class_names": ["cat"]}
    state.update(extra)
    return state


def test_round_trip_and_weights_only_loadable(tmp_path):
    path = tmp_path / "run" / "latest.pt"
    save_train_state(minimal_state(rng=[capture_rng_state()]), path)
    loaded = read_train_state(path)
    assert torch.equal(loaded["model"]["w"], torch.ones(2)) and loaded["config"] == {"a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]  # no temporary file left


def test_failed_write_leaves_old_file_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_train_state(minimal_state(epoch=1), path)

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_train_state(minimal_state(epoch=2), path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]
    assert read_train_state(path)["epoch"] == 1


def test_interrupted_write_is_cleaned_up(tmp_path, monkeypatch):
    def interrupted(obj, f):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_train_state(minimal_state(), tmp_path / "latest.pt")
    assert list(tmp_path.iterdir()) == []


def test_copy_is_atomic_and_identical(tmp_path):
    save_train_state(minimal_state(), tmp_path / "latest.pt")
    copy_checkpoint(tmp_path / "latest.pt", tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "latest.pt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "latest.pt"]


def test_missing_truncated_and_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_train_state(tmp_path / "nope.pt")
    good = tmp_path / "epoch_10.pt"
    save_train_state(minimal_state(), good)
    truncated = tmp_path / "latest.pt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"truncated or corrupt.*epoch_10\.pt"):
        read_train_state(truncated)
    official = tmp_path / "official.pth"
    torch.save({"model": {"w": torch.ones(1)}}, official)
    with pytest.raises(ValueError, match="not a yolox_fast training checkpoint.*--weights"):
        read_train_state(official)


def test_resume_path_resolution(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        resolve_resume_path(tmp_path)
    with pytest.raises(FileNotFoundError, match="found none"):
        find_latest_run(tmp_path)
    save_train_state(minimal_state(), tmp_path / "a" / "latest.pt")
    save_train_state(minimal_state(), tmp_path / "b" / "latest.pt")
    assert resolve_resume_path(tmp_path / "a") == tmp_path / "a" / "latest.pt"
    assert find_latest_run(tmp_path) == tmp_path / "b" / "latest.pt"


def test_rng_states_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's legacy state
    path = tmp_path / "rng.pt"
    save_train_state(minimal_state(rng=[capture_rng_state()]), path)
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(read_train_state(path)["rng"][0])
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected
