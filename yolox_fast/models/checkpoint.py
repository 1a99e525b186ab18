"""Loading official YOLOX checkpoints (``{"model": state_dict}``) into this project's models."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn


def read_state_dict(source: str | os.PathLike | Mapping, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict inside an official or yolox_fast checkpoint file (or dict).

    Accepts ``{"model": sd}`` (official), ``{"ema": sd, ...}`` / ``{"model": sd, "ema": ...}``
    (yolox_fast training checkpoints) and a bare state dict. The raw model is taken unless
    ``prefer_ema`` is set and the checkpoint holds EMA weights (``"ema"``: a state dict, or a dict
    with it under ``"state_dict"``/``"model"``); evaluation wants the EMA, resuming training the raw model.
    """
    if isinstance(source, Mapping):
        ckpt = source
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises several types for a truncated or foreign file
            raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"checkpoint is a {type(ckpt).__name__}, not a dict holding a state dict")
    ema = _ema_state_dict(ckpt.get("ema"))
    if prefer_ema and ema is not None:
        return ema
    if "model" in ckpt and isinstance(ckpt["model"], Mapping):
        return dict(ckpt["model"])
    if ema is not None:  # an EMA-only checkpoint
        return ema
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise ValueError(f"no model state dict in checkpoint (keys: {sorted(ckpt)[:8]})")


def _ema_state_dict(ema) -> dict[str, torch.Tensor] | None:
    """The weights of a checkpoint's ``"ema"`` entry, or None when it holds none."""
    if not isinstance(ema, Mapping):
        return None
    # An EMA saved together with its update counter nests the weights one level down.
    for key in ("state_dict", "model"):
        if isinstance(ema.get(key), Mapping):
            ema = ema[key]
            break
    if ema and all(isinstance(v, torch.Tensor) for v in ema.values()):
        return dict(ema)
    return None


def load_official_weights(model: nn.Module, source, strict: bool = True, allow_new_head: bool = False) -> list[str]:
    """Load official-layout weights into ``model``.

    Args:
        model: a :class:`yolox_fast.models.YOLOX`.
        source: checkpoint path or dict (see :func:`read_state_dict`).
        strict: require every key to match (the official release loads with ``strict=True``).
        allow_new_head: when the checkpoint's class count differs from the model's, skip the class
            prediction layers (fine-tuning on a new label set) instead of raising.

    Returns:
        The names of the tensors that were not loaded (empty for a full load).
    """
    state = read_state_dict(source)
    own = model.state_dict()
    skipped = []
    cls_keys = [k for k in state if k.startswith("head.cls_preds.") and k.endswith(".weight")]
    # Only a different class count (first dim) is a new head; other shape differences mean another model size.
    if cls_keys and cls_keys[0] in own and state[cls_keys[0]].shape[0] != own[cls_keys[0]].shape[0]:
        ckpt_classes, model_classes = state[cls_keys[0]].shape[0], own[cls_keys[0]].shape[0]
        if not allow_new_head:
            raise ValueError(
                f"checkpoint has {ckpt_classes} classes but the model has {model_classes}; "
                "pass allow_new_head=True (or --allow-new-head) to fine-tune with a freshly initialised class head"
            )
        skipped = [k for k in state if k.startswith("head.cls_preds.")]
        state = {k: v for k, v in state.items() if k not in skipped}
        strict = False
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        k = mismatched[0]
        raise ValueError(f"shape mismatch for {k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)} "
                         f"(is this the right model size?)")
    result = model.load_state_dict(state, strict=strict)
    return skipped + [k for k in result.missing_keys if k not in skipped]
