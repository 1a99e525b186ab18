"""The trainer's resumable state: training checkpoints written atomically, read back to resume (clear errors),
and the RNG states for exact resumption.

This is the trainer's side of a checkpoint file; getting a model out of any checkpoint (official or ours) is
:mod:`yolox_fast.models.checkpoint`, which also holds the one file reader both use.

A training checkpoint is a dict that ``torch.load(..., weights_only=True)`` can read (tensors, numbers, strings,
lists, dicts): ``model`` (raw weights), ``ema`` (averaged weights, or None), ``ema_updates``,
``optimizer``, ``scaler``, ``epoch`` (epochs completed), ``epoch_batches_done`` (> 0: saved part-way through
the next epoch, by a stop between steps; resuming continues with its next batch), ``iteration`` (steps
completed), ``best_ap``, ``best_epoch``, ``evals_without_improvement`` (for ``patience``), ``ap``,
``input_size``, ``multiscale_rng``, ``config``, ``class_names``, ``model_name``, ``rng`` (one entry per
process) and ``format``.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..files.atomic import atomic_write
from ..models.checkpoint import CheckpointError, read_checkpoint_file

FORMAT = "yolox_fast.train/1"
REQUIRED_KEYS = ("model", "optimizer", "epoch", "iteration", "config", "class_names")


def save_train_state(state: dict, path: str | os.PathLike) -> None:
    """``torch.save(state)`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    atomic_write(Path(path), lambda f: torch.save(state, f))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Atomically copy a checkpoint file (``latest.pt`` -> ``best.pt``) without re-serialising it."""
    with open(src, "rb") as source:
        atomic_write(Path(dst), lambda f: shutil.copyfileobj(source, f, 1 << 20))


def read_train_state(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a training checkpoint written by :func:`save_train_state`, to resume from it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated/corrupt, or is not a yolox_fast training checkpoint (an
            official ``{"model": ...}`` file, say), with what to do instead.
    """
    path = Path(path)
    try:
        ckpt = read_checkpoint_file(path, map_location=map_location)
    except CheckpointError as exc:
        others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
        hint = f" Other checkpoints in that folder: {', '.join(others)}." if others else ""
        raise CheckpointError(f"{exc}.{hint}") from None
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a yolox_fast training checkpoint (missing {', '.join(missing)}), so "
                              "a run cannot resume from it; to start a new run from its weights use --weights")
    return ckpt


def resolve_resume_path(path: str | os.PathLike) -> Path:
    """``--resume`` argument -> checkpoint file: a file as is, a run folder -> its ``latest.pt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "latest.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    return path


def find_latest_run(runs_root: str | os.PathLike = "runs") -> Path:
    """The most recently written ``<runs_root>/*/latest.pt`` (what a bare ``--resume`` continues)."""
    candidates = sorted(Path(runs_root).glob("*/latest.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"--resume without a path looks for {runs_root}/*/latest.pt and found none; "
                                "pass the checkpoint or run folder to resume")
    return candidates[-1]


# -- random number generators ----------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as a ``weights_only``-loadable dict."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
