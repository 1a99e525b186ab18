"""The one checkpoint reader, and the one way to get a model from a checkpoint file.

* :func:`read_checkpoint_file` -- the only ``torch.load`` in the package: a file -> its top-level dict;
* :func:`read_checkpoint` -- what a checkpoint holds (:class:`CheckpointWeights`: the weights to use, the
  model, the class names and count, the input size it was trained for);
* :func:`load_official_weights` -- official-layout weights into a model you built (fine-tuning starts here);
* :func:`load_model` -- file -> the model it describes, weights loaded, plus its :class:`CheckpointWeights`
  (prediction, evaluation, export).

Resuming training reads the trainer's own state with :func:`yolox_fast.engine.train_state.read_train_state`,
which goes through :func:`read_checkpoint_file` too.

Checkpoints come from strangers, so every file is read with ``torch.load(..., weights_only=True)``:
unpickling is restricted to tensors and plain containers (plus NumPy scalars, which official training
checkpoints hold as ``best_ap``), and a file that asks for anything else is refused before any of its
code can run. Errors say what the file is instead (missing, a folder, not a PyTorch file, truncated,
unsafe, no weights inside).

Layouts understood:

* official release ``{"model": state_dict, ...}``;
* yolox_fast training checkpoint ``{"model": raw, "ema": averaged or None, "class_names": [...],
  "model_name": "yolox-s", "config": {"img_size": ..., "test_size": ...}, ...}`` (see
  :mod:`yolox_fast.engine.train_state`);
* a bare ``state_dict``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.coco_classes import COCO_CLASSES
from ..ops.anchors import check_input_size
from .yolox import PRESETS, YOLOX, build_yolox, canonical_name

#: The first class-prediction convolution: its output channels are the class count.
CLASS_HEAD_KEY = "head.cls_preds.0.weight"
#: The stem convolution: its output channels (``int(64 * width)``) tell the model size.
STEM_KEY = "backbone.backbone.stem.conv.conv.weight"
#: Every key of the class-prediction layers (the part a new label set replaces).
CLASS_HEAD_PREFIX = "head.cls_preds."

# Plain data that official training checkpoints pickle besides tensors (``best_ap`` as a NumPy float).
_SAFE_NUMPY_GLOBALS = [np._core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in ("f4", "f8", "i4", "i8"))]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


def read_checkpoint_file(path: str | os.PathLike, map_location="cpu") -> dict:
    """``torch.load`` a checkpoint safely (``weights_only=True``) and return its top-level dict.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a folder, not a PyTorch file, a truncated file, a file holding objects other
            than tensors and plain containers (refused unexecuted), or a top level that is not a dict.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):  # neither torch.save's zip nor its legacy pickle
        raise CheckpointError(_not_a_checkpoint(path, head))
    try:
        with torch.serialization.safe_globals(_SAFE_NUMPY_GLOBALS):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line),
                          "")
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects other than weights ({detail}); "
                "such a file can run code when loaded, so it is not read. Re-save its state_dict from a trusted "
                "environment if you need it") from None
        raise CheckpointError(_not_a_checkpoint(path, head, exc)) from None
    except Exception as exc:  # zip, EOF and decoding errors: several types for a truncated file
        raise CheckpointError(_not_a_checkpoint(path, head, exc)) from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return dict(ckpt)


def _not_a_checkpoint(path: str, head: bytes, exc: Exception | None = None) -> str:
    """The message for a file torch cannot read: truncated PyTorch file, or not one at all."""
    size = os.path.getsize(path)
    if head.startswith(b"PK"):  # the zip container of torch.save
        if not zipfile.is_zipfile(path):
            return f"checkpoint {path} is truncated or corrupt ({size} bytes; the zip directory at its end is missing)"
        first = str(exc).splitlines()[0] if exc is not None and str(exc) else ""
        return f"checkpoint {path} is corrupt ({type(exc).__name__}: {first})"
    if head[:1] == b"\x80":  # a legacy (pre-1.6) pickle-based torch.save
        return f"checkpoint {path} is truncated or corrupt (legacy PyTorch format, {size} bytes)"
    kind = "an empty file" if size == 0 else "text" if _looks_like_text(head) else "an unknown binary format"
    return f"{path} is not a PyTorch checkpoint ({kind})"


def _looks_like_text(head: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _state_dict_or_none(value) -> dict[str, torch.Tensor] | None:
    """``value`` as a state dict when it is a non-empty mapping of names to tensors, else None."""
    if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        return dict(value)
    return None


def _ema_state_dict(ema) -> dict[str, torch.Tensor] | None:
    """The weights of a checkpoint's ``"ema"`` entry (flat, or nested under ``state_dict``/``model``)."""
    if isinstance(ema, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(ema.get(key), Mapping):
                return _state_dict_or_none(ema[key])
    return _state_dict_or_none(ema)


def infer_preset(state: Mapping[str, torch.Tensor]) -> str:
    """The preset whose stem width matches ``state`` (the stem has ``int(64 * width)`` output channels).

    Raises:
        CheckpointError: no stem in ``state``, or a width no preset has.
    """
    stem = state.get(STEM_KEY)
    if stem is None:
        raise CheckpointError(f"cannot tell the model size: no {STEM_KEY} in the checkpoint (is it a YOLOX model?)")
    matches = [name for name, cfg in PRESETS.items() if int(64 * cfg["width"]) == stem.shape[0]]
    if len(matches) != 1:
        raise CheckpointError(f"cannot tell the model size from a stem of {stem.shape[0]} channels")
    return matches[0]


def default_class_names(num_classes: int) -> list[str]:
    """COCO's names for an 80-class head, else ``"0"``, ``"1"``, ..."""
    return list(COCO_CLASSES) if num_classes == len(COCO_CLASSES) else [str(i) for i in range(num_classes)]


@dataclass
class CheckpointWeights:
    """What a checkpoint holds, as :func:`read_checkpoint` found it.

    Attributes:
        state_dict: the weights to use (official key names): the EMA when present and preferred.
        which: ``"ema"`` or ``"model"`` (the raw weights, or the only ones an official file has).
        model_name: the preset (``"yolox-s"``), from the checkpoint's record or inferred from the stem;
            None when neither tells (not a YOLOX state dict).
        num_classes: the class head's size (``head.cls_preds.0.weight``'s output channels); None when the
            weights have no YOLOX class head.
        class_names: stored names (our checkpoints), else COCO's for 80 classes, else ``"0"``, ``"1"``...
        input_size: ``(h, w)`` the model was made for: the training config's evaluation size (``test_size``,
            which defaults to the training ``img_size``) for our checkpoints, else the preset's (416 for
            nano and tiny, 640 for the others); None when the model is unknown. Prediction, evaluation
            and export use it unless they are given a size.
        path: the file read, or None for a dict given directly.
        checkpoint: the whole top-level dict (training state for resuming), as loaded.
    """

    state_dict: dict[str, torch.Tensor]
    which: str
    model_name: str | None
    num_classes: int | None
    class_names: list[str]
    input_size: tuple[int, int] | None = None
    path: str | None = None
    checkpoint: dict = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        """One line for logs: ``yolox-nano, 80 classes, EMA weights of runs/x/best.pt``."""
        where = f" of {self.path}" if self.path else ""
        return f"{self.model_name or 'unknown model'}, {self.num_classes or 'no'} classes, {self.which} weights{where}"


def read_checkpoint(source: str | os.PathLike | Mapping, prefer_ema: bool = True) -> CheckpointWeights:
    """Read any supported checkpoint (path or already-loaded dict) safely.

    Args:
        source: a file path, or a dict as loaded (an official/our checkpoint, or a bare state dict).
        prefer_ema: take the EMA weights of a training checkpoint when it has them (evaluation,
            prediction, export, fine-tuning); False takes the raw weights (resuming training).

    Raises:
        FileNotFoundError, CheckpointError: see :func:`read_checkpoint_file`; also no weights inside, or
            weights without a class head.
    """
    path = None
    if isinstance(source, Mapping):
        ckpt = dict(source)
    else:
        path = os.fspath(source)
        ckpt = read_checkpoint_file(path)
    where = path or "the checkpoint"
    ema = _ema_state_dict(ckpt.get("ema"))
    model = _state_dict_or_none(ckpt.get("model"))
    if prefer_ema and ema is not None:
        state, which = ema, "ema"
    elif model is not None:
        state, which = model, "model"
    elif ema is not None:  # an EMA-only checkpoint
        state, which = ema, "ema"
    elif (bare := _state_dict_or_none(ckpt)) is not None:
        state, which = bare, "model"
    else:
        raise CheckpointError(f"no model weights in {where} (top-level keys: {', '.join(sorted(map(str, ckpt))[:8])})")

    head = state.get(CLASS_HEAD_KEY)
    num_classes = int(head.shape[0]) if head is not None else None
    model_name = ckpt.get("model_name") if isinstance(ckpt.get("model_name"), str) else None
    if model_name is None:
        try:
            model_name = infer_preset(state)
        except CheckpointError:
            model_name = None
    names = ckpt.get("class_names")
    if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        class_names = list(names)
    else:
        class_names = default_class_names(num_classes) if num_classes is not None else []
    input_size = _trained_input_size(ckpt, where)
    if input_size is None and model_name in PRESETS:
        input_size = (PRESETS[model_name]["input_size"],) * 2
    return CheckpointWeights(state, which, model_name, num_classes, class_names, input_size, path, ckpt)


def _trained_input_size(ckpt: Mapping, where: str) -> tuple[int, int] | None:
    """The input size recorded in a training checkpoint's config (``test_size``, else ``img_size``), or None."""
    config = ckpt.get("config")
    if not isinstance(config, Mapping):
        return None
    size = config.get("test_size") or config.get("img_size")
    if size is None:
        return None
    try:
        return check_input_size(size, "the input size")
    except ValueError as exc:
        raise CheckpointError(f"{where} records an unusable training size ({exc})") from None


def load_official_weights(model: nn.Module, source, strict: bool = True, new_class_head: bool = False) -> list[str]:
    """Load official-layout weights into ``model``.

    Args:
        model: a :class:`yolox_fast.models.YOLOX`.
        source: checkpoint path, checkpoint dict or state dict (raw weights of a training checkpoint;
            pass ``read_checkpoint(path).state_dict`` for its EMA).
        strict: require every key to match (the official release loads with ``strict=True``).
        new_class_head: when the checkpoint's class count differs from the model's, skip the class
            prediction layers (fine-tuning on a new label set) instead of raising.

    Returns:
        The names of the tensors that were not loaded (empty for a full load).
    """
    state = _state_dict_or_none(source)  # a state dict as given, else a checkpoint path or dict to read
    if state is None:
        state = read_checkpoint(source, prefer_ema=False).state_dict
    own = model.state_dict()
    skipped = []
    ckpt_head, own_head = state.get(CLASS_HEAD_KEY), own.get(CLASS_HEAD_KEY)
    if ckpt_head is not None and own_head is not None and ckpt_head.shape[0] != own_head.shape[0]:
        ckpt_classes, model_classes = ckpt_head.shape[0], own_head.shape[0]
        if not new_class_head:
            raise CheckpointError(
                f"the checkpoint has {ckpt_classes} classes but the model has {model_classes}; to fine-tune on a "
                f"new label set, start training from it with --weights (the class head starts fresh)")
        skipped = [k for k in state if k.startswith(CLASS_HEAD_PREFIX)]
        state = {k: v for k, v in state.items() if k not in skipped}
        strict = False
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(f"shape mismatch for {k}: checkpoint {tuple(state[k].shape)}, model "
                              f"{tuple(own[k].shape)} (is this the right model size?)")
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:  # missing/unexpected keys: another architecture
        raise CheckpointError(f"the checkpoint does not fit the model: {str(exc).splitlines()[0]} "
                              f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else ''}") from None
    return skipped + [k for k in result.missing_keys if k not in skipped]


def load_model(source: str | os.PathLike | Mapping | CheckpointWeights, model_name: str | None = None,
               num_classes: int | None = None, prefer_ema: bool = True) -> tuple[YOLOX, CheckpointWeights]:
    """Build the YOLOX a checkpoint describes and load its weights (strict), in eval mode on the CPU.

    The one way from a checkpoint file to a model. The returned :class:`CheckpointWeights` says what
    else the checkpoint knows: ``class_names``, ``num_classes`` and ``input_size`` (the size it was
    trained for), which prediction, evaluation and export use unless they are given others.

    Args:
        source: checkpoint path or dict, or an already-read :class:`CheckpointWeights`.
        model_name: the preset to build; default the checkpoint's. Given and different from what the
            checkpoint holds -> :class:`CheckpointError` naming both.
        num_classes: default the checkpoint's; a different count is an error (use training with
            ``--weights`` to fine-tune on a new label set).
        prefer_ema: see :func:`read_checkpoint`.
    """
    info = source if isinstance(source, CheckpointWeights) else read_checkpoint(source, prefer_ema=prefer_ema)
    where = info.path or "the checkpoint"
    if info.num_classes is None:
        raise CheckpointError(f"{where} has no class head ({CLASS_HEAD_KEY}); it is not a YOLOX checkpoint")
    if model_name is not None:
        name = canonical_name(model_name)
        if info.model_name is not None and info.model_name != name:
            raise CheckpointError(f"{where} holds {info.model_name} weights, not {name}; "
                                  "fix the model name or leave it out to use the checkpoint's")
    elif info.model_name is None:
        raise CheckpointError(f"cannot tell the model size of {where}; name the model")
    else:
        name = info.model_name
    if num_classes is not None and num_classes != info.num_classes:
        raise CheckpointError(f"{where} has {info.num_classes} classes, not {num_classes}")
    model = build_yolox(name, num_classes=info.num_classes)
    load_official_weights(model, info.state_dict, strict=True)
    if info.input_size is None:  # a bare state dict of a model the caller named
        info = dataclasses.replace(info, model_name=name, input_size=(PRESETS[name]["input_size"],) * 2)
    return model.eval(), info
