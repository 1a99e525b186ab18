"""Every training hyperparameter in one dataclass, loadable from YAML/JSON and overridable from the CLI.

Precedence, lowest first: the dataclass defaults (the official recipe) < :data:`DEMO_DEFAULTS` (only when
no dataset is given) < the config file < the command line. Fields left ``None`` are then filled from the
model preset by :meth:`TrainConfig.resolved` (input size, mixup, mosaic scale, ... as the official
experiment files set them per model).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import PRESETS, canonical_name
from ..models.layout import LAYOUT_MODES
from ..ops.anchors import check_input_size
from ..ops.simota_variant import DEFAULT_VARIANT, VARIANTS

#: Training settings that the official experiment files of the small models change from the defaults
#: (exps/default/yolox_nano.py, yolox_tiny.py): sizes 320-640 for multiscale, a milder mosaic scale, and
#: mosaic on half of the images for nano. Input size and mixup come from ``models.PRESETS``. The
#: multiscale ``random_size`` belongs to the preset's own input size: at another ``img_size`` the sizes
#: follow the official rule ``img_size +- multiscale_range * 32`` (see :meth:`TrainConfig.multiscale_sizes`).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "yolox-nano": {"random_size": (10, 20), "mosaic_scale": (0.5, 1.5), "mosaic_prob": 0.5},
    "yolox-tiny": {"random_size": (10, 20), "mosaic_scale": (0.5, 1.5)},
}

#: What ``python -m yolox_fast.train`` with no dataset uses: yolox-nano on the built-in synthetic set, sized
#: to finish in a few minutes on a 2-core CPU. The learning rate is 10x the official one: with ~400 steps
#: instead of the ~550k of a COCO run, the official rate barely moves a network trained from scratch.
DEMO_DEFAULTS: dict[str, Any] = {
    "model": "yolox-nano",
    "img_size": 256,
    "epochs": 12,
    "batch_size": 16,
    "warmup_epochs": 1,
    "no_aug_epochs": 2,
    "eval_interval": 1,
    "lr_per_image": 0.1 / 64,
    "multiscale": False,
    "mosaic_prob": 1.0,
    "mosaic_scale": (0.5, 1.5),
    "save_interval": 0,
    "workers": 0,  # on 2 cores a loader process would compete with the training threads for a core
}

# Field kinds for parsing values from files and the command line.
_INT, _FLOAT, _STR, _BOOL, _INT_PAIR, _FLOAT_PAIR, _STR_LIST = "int", "float", "str", "bool", "int2", "float2", "strs"


def _opt(default, kind: str, help: str, flag: str | None = None):
    """A config field with its parse kind and help text. Its CLI flag is ``--`` + the name with dashes, unless
    ``flag`` names another one (the name every command uses for that setting); the field's own then stays an
    alias."""
    return field(default=default, metadata={"kind": kind, "help": help, "flag": flag})


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults are the official YOLOX recipe.

    ``batch_size`` is the total over all processes; the learning rate is ``lr_per_image * batch_size``.
    Fields set to ``None`` are filled from the model preset by :meth:`resolved`.
    """

    # -- data ------------------------------------------------------------------------------------------
    coco_images: str | None = _opt(None, _STR, "training images folder (COCO format)")
    coco_ann: str | None = _opt(None, _STR, "training instances json (COCO format)")
    val_images: str | None = _opt(None, _STR, "validation images folder (COCO format)")
    val_ann: str | None = _opt(None, _STR, "validation instances json (COCO format)")
    data: str | None = _opt(None, _STR, "dataset YAML in the ultralytics layout (path, train, val, names); labels "
                                        "in labels/ beside images/")
    yolo_dir: str | None = _opt(None, _STR, "YOLO-format dataset folder: images/{train,val} + labels/{train,val}, or "
                                            "flat images/ + labels/ (training only)")
    class_names: list[str] | None = _opt(
        None,
        _STR_LIST,
        "class names of YOLO data, or a names file (default: classes.txt, obj.names or data.yaml beside the images)",
    )
    data_cache: str = _opt("~/.cache/yolox_fast/synthetic", _STR, "where the built-in synthetic dataset is generated")
    synthetic_train: int = _opt(512, _INT, "training images of the built-in synthetic dataset")
    synthetic_val: int = _opt(128, _INT, "validation images of the built-in synthetic dataset")
    synthetic_size: int = _opt(320, _INT, "image side of the built-in synthetic dataset")
    cache_images: bool = _opt(False, _BOOL, "keep decoded training images in RAM")
    skip_bad_images: bool = _opt(False, _BOOL, "skip and count empty or truncated training images (default: stop)")

    # -- model -----------------------------------------------------------------------------------------
    model: str = _opt("yolox-s", _STR, "yolox-nano, -tiny, -s, -m, -l or -x")
    weights: str | None = _opt(None, _STR, "start from these weights (official {'model': ...} or ours)")
    freeze: list[str] | None = _opt(
        None, _STR_LIST, "keep the parameters whose names start with these fixed (e.g. backbone.backbone.stem)"
    )
    simota: str = _opt(DEFAULT_VARIANT, _STR, f"SimOTA variant: {' or '.join(VARIANTS)} (see ops.simota_variant)")
    assigner_backend: str | None = _opt(
        None, _STR, "force an assigner backend: cuda, cpu, triton, torch or reference (default: the best available)"
    )

    # -- schedule and optimiser ----------------------------------------------------------------------------
    epochs: int = _opt(300, _INT, "total epochs")
    batch_size: int = _opt(64, _INT, "images per step, summed over all processes")
    lr_per_image: float = _opt(0.01 / 64, _FLOAT, "learning rate per image of the batch")
    warmup_epochs: float = _opt(5.0, _FLOAT, "quadratic warm-up epochs")
    warmup_lr: float = _opt(0.0, _FLOAT, "learning rate at the start of the warm-up")
    min_lr_ratio: float = _opt(0.05, _FLOAT, "cosine ends at this fraction of the base lr")
    no_aug_epochs: int = _opt(15, _INT, "last epochs without mosaic/mixup, with the L1 loss")
    momentum: float = _opt(0.9, _FLOAT, "SGD momentum (Nesterov)")
    weight_decay: float = _opt(5e-4, _FLOAT, "weight decay on conv/linear weights (not norms, not biases)")
    ema: bool = _opt(True, _BOOL, "keep an exponential moving average of the weights (evaluated and saved)")
    ema_decay: float = _opt(0.9998, _FLOAT, "EMA decay; ramped as decay * (1 - exp(-updates / 2000))")
    amp: bool = _opt(True, _BOOL, "mixed precision on CUDA (on the CPU only with --amp-dtype bf16)")
    amp_dtype: str = _opt("auto", _STR, "AMP precision: auto (CUDA: bf16 where the GPU has it, else fp16; CPU: "
                                        "none), bf16 (also on CPUs with bf16 instructions) or fp16")
    channels_last: str = _opt("auto", _STR, "memory layout of model and batches: auto (the faster one for the "
                                            "device, models/layout.py), on or off")
    cpu_fusions: bool = _opt(True, _BOOL, "on the CPU, BatchNorm + SiLU as one op in float32 channels_last training "
                                          "and the Focus stem as one strided conv (same weights and values within "
                                          "float32 rounding; YOLOX.set_cpu_fusions)")
    compile: bool = _opt(False, _BOOL, "torch.compile the model with its loss (no gain measured on the CPU)")

    # -- input size ---------------------------------------------------------------------------------
    img_size: int | None = _opt(None, _INT, "training input size (default: the model's, 416 or 640)")
    test_size: int | None = _opt(None, _INT, "evaluation input size (default: img_size)")
    multiscale: bool = _opt(True, _BOOL, "redraw the input size every multiscale_interval iterations")
    multiscale_range: int = _opt(5, _INT, "sizes drawn from img_size +- range * 32 (at least 32)")
    random_size: tuple[int, int] | None = _opt(
        None,
        _INT_PAIR,
        "explicit size range in units of 32, overriding the range (default: the official 10 20 for nano and "
        "tiny at their own input size 416, else from --multiscale-range)",
    )
    multiscale_interval: int = _opt(10, _INT, "iterations between input-size draws")

    # -- augmentation -----------------------------------------------------------------------------------
    mosaic_prob: float | None = _opt(None, _FLOAT, "probability of mosaic (default 1.0, 0.5 for nano)")
    mixup_prob: float | None = _opt(None, _FLOAT, "probability of mixup (default 1.0, 0 for nano/tiny)")
    hsv_prob: float = _opt(1.0, _FLOAT, "probability of HSV jitter")
    flip_prob: float = _opt(0.5, _FLOAT, "probability of a horizontal flip")
    degrees: float = _opt(10.0, _FLOAT, "random rotation range")
    translate: float = _opt(0.1, _FLOAT, "random translation fraction")
    shear: float = _opt(2.0, _FLOAT, "random shear range")
    mosaic_scale: tuple[float, float] | None = _opt(None, _FLOAT_PAIR, "mosaic scale range (default 0.1 2.0)")
    mixup_scale: tuple[float, float] = _opt((0.5, 1.5), _FLOAT_PAIR, "mixup scale range")
    max_labels: int = _opt(120, _INT, "labels per image after augmentation")

    # -- evaluation -------------------------------------------------------------------------------------
    eval_interval: int = _opt(10, _INT, "evaluate every N epochs (every epoch in the no-aug phase)")
    test_conf: float = _opt(0.01, _FLOAT, "evaluation score threshold")
    nms: float = _opt(0.65, _FLOAT, "evaluation NMS IoU threshold (--nms is its old name)", flag="--iou")
    eval_batch_size: int = _opt(8, _INT, "evaluation batch size")
    patience: int = _opt(0, _INT, "stop when the AP has not improved for N evaluations (0: never); best.pt is kept")

    # -- run --------------------------------------------------------------------------------------------
    output_dir: str | None = _opt(None, _STR, "run folder (default runs/train/<model>, or <model>2 ... when taken)")
    device: str | None = _opt(None, _STR, "cuda, cuda:1 or cpu (default: cuda when available)")
    workers: int = _opt(4, _INT, "data loader processes per training process")
    seed: int = _opt(0, _INT, "random seed (each process adds its rank)")
    deterministic: bool = _opt(False, _BOOL, "deterministic kernels (slower on GPUs)")
    save_interval: int = _opt(10, _INT, "also keep epoch_N.pt every N epochs (0: off)")
    log_interval: int = _opt(10, _INT, "iterations between log lines / progress updates")
    progress: bool = _opt(True, _BOOL, "tqdm progress bar; --no-progress prints plain log lines")
    tensorboard: bool = _opt(True, _BOOL, "write TensorBoard scalars")

    # ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def updated(self, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """A copy with ``values`` applied; keys may use dashes; unknown keys and bad values raise ``ValueError``."""
        kinds = {f.name: f.metadata["kind"] for f in dataclasses.fields(self)}
        changes = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in kinds:
                close = difflib.get_close_matches(name, list(kinds), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{source}: unknown setting {key!r}{hint}")
            changes[name] = _coerce(value, kinds[name], f"{source}: {key}")
        return dataclasses.replace(self, **changes)

    def has_data(self) -> bool:
        """Whether a training set is named (otherwise the built-in synthetic one is used)."""
        return bool(self.coco_images or self.coco_ann or self.yolo_dir or self.data)

    def resolved(self) -> TrainConfig:
        """A copy with the preset-dependent ``None`` fields filled in and every value checked."""
        name = canonical_name(self.model)
        preset = {**PRESETS[name], **TRAIN_PRESETS.get(name, {})}
        cfg = dataclasses.replace(self, model=name)
        fill = {
            "img_size": preset["input_size"],
            "mixup_prob": 1.0 if preset["mixup"] else 0.0,
            "mosaic_prob": preset.get("mosaic_prob", 1.0),
            "mosaic_scale": preset.get("mosaic_scale", (0.1, 2.0)),
        }
        if cfg.img_size in (None, preset["input_size"]):  # the preset's range goes with the preset's size only
            fill["random_size"] = preset.get("random_size")
        cfg = dataclasses.replace(cfg, **{k: v for k, v in fill.items() if getattr(cfg, k) is None})
        if cfg.test_size is None:
            cfg = dataclasses.replace(cfg, test_size=cfg.img_size)
        cfg.check()
        return cfg

    def multiscale_sizes(self) -> tuple[int, int]:
        """``(smallest, largest)`` training input side in pixels that multiscale draws (both multiples of 32).

        ``random_size`` when set, else the official rule: ``img_size +- multiscale_range * 32``, at least 32.
        """
        if self.random_size is not None:
            low, high = self.random_size
        else:
            base = self.img_size // 32
            low, high = max(base - self.multiscale_range, 1), base + self.multiscale_range
        return 32 * low, 32 * high

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        positive = (
            "epochs",
            "batch_size",
            "multiscale_interval",
            "eval_interval",
            "eval_batch_size",
            "log_interval",
            "max_labels",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("img_size", "test_size"):
            size = getattr(self, name)
            if size is not None:
                check_input_size(size, name)
        for name in ("mosaic_prob", "mixup_prob", "hsv_prob", "flip_prob", "min_lr_ratio", "test_conf", "nms"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.no_aug_epochs < 0:  # more than epochs is clamped by the trainer (and logged)
            raise ValueError(f"no_aug_epochs must be >= 0, got {self.no_aug_epochs}")
        if self.multiscale_range < 0:
            raise ValueError(f"multiscale_range must be >= 0, got {self.multiscale_range}")
        if self.warmup_epochs < 0 or self.workers < 0 or self.save_interval < 0 or self.lr_per_image < 0:
            raise ValueError("warmup_epochs, workers, save_interval and lr_per_image must be >= 0")
        if self.random_size is not None and not 1 <= self.random_size[0] <= self.random_size[1]:
            raise ValueError(f"random_size must be (low, high) with 1 <= low <= high, got {self.random_size}")
        if self.simota not in VARIANTS:
            raise ValueError(f"simota must be one of {', '.join(VARIANTS)}, got {self.simota!r}")
        if self.amp_dtype not in ("auto", "bf16", "fp16"):
            raise ValueError(f"amp_dtype must be auto, bf16 or fp16, got {self.amp_dtype!r}")
        if self.channels_last not in LAYOUT_MODES:
            raise ValueError(f"channels_last must be one of {', '.join(LAYOUT_MODES)}, got {self.channels_last!r}")
        if bool(self.coco_images) != bool(self.coco_ann):
            raise ValueError("COCO data needs both coco_images and coco_ann")
        if bool(self.val_images) != bool(self.val_ann):
            raise ValueError("validation data needs both val_images and val_ann")
        if sum(map(bool, (self.coco_images, self.yolo_dir, self.data))) > 1:
            raise ValueError("give one dataset: COCO data (coco_images/coco_ann), yolo_dir or data, not several")
        if self.data and self.class_names:
            raise ValueError("class_names: the classes of a data YAML are its 'names'")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")


# Values come as strings from the command line and as YAML/JSON types from files; each kind takes its own
# type or a string spelling it, and nothing else: a boolean is not an epoch count, a number is not a path.
def _parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.lower()
        if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(value)
        return low in ("1", "true", "yes", "on")
    raise TypeError(value)


def _parse_int(value) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, str):
        return int(value)
    raise TypeError(value)


def _parse_float(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _parse_str(value) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _parse_pair(cast):
    def parse(value) -> tuple:
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or len(items) != 2:
            raise ValueError(value)
        return (cast(items[0]), cast(items[1]))

    return parse


def _parse_names(value) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(value)
    if any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in items):  # YAML may read 0, 1 as names
        raise TypeError(value)
    return [str(v).strip() for v in items if str(v).strip()]


_PARSERS = {
    _BOOL: _parse_bool,
    _INT: _parse_int,
    _FLOAT: _parse_float,
    _STR: _parse_str,
    _INT_PAIR: _parse_pair(_parse_int),
    _FLOAT_PAIR: _parse_pair(_parse_float),
    _STR_LIST: _parse_names,
}
_KIND_WORDS = {
    _INT: "an integer",
    _FLOAT: "a finite number",
    _STR: "a string",
    _BOOL: "true/false",
    _INT_PAIR: "two integers",
    _FLOAT_PAIR: "two numbers",
    _STR_LIST: "a list of names",
}


def _coerce(value, kind: str, where: str):
    """Parse ``value`` (from YAML/JSON or a CLI string) as ``kind``; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        return _PARSERS[kind](value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: cannot read {value!r} as {_KIND_WORDS[kind]}") from None


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a YAML (``.yaml``/``.yml``) or JSON file, as a plain dict (validated when applied)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as exc:
        raise ValueError(f"cannot parse config file {path}: {exc}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of setting: value, got {type(values).__name__}")
    return values


def save_config_file(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (or JSON for a ``.json`` path); the file loads back with ``--config``."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    else:
        import yaml

        path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# -- command line --------------------------------------------------------------------------------------
def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`TrainConfig` field (``--img-size``, ``--no-progress``, ``--mosaic-scale 0.5 1.5``).

    Every flag defaults to ``argparse.SUPPRESS`` so that :func:`cli_overrides` returns only what was typed.
    """
    group = parser.add_argument_group("training settings (also settable in --config files)")
    for f in dataclasses.fields(TrainConfig):
        own = "--" + f.name.replace("_", "-")
        flags = [f.metadata["flag"], own] if f.metadata.get("flag") else [own]
        kind, default = f.metadata["kind"], f.default
        help_text = f.metadata["help"]
        if "(default" not in help_text:  # fields whose help explains their default themselves keep it
            help_text += f" (default: {'none' if default is None else _show(default)})"
        if kind == _BOOL:
            group.add_argument(
                *flags, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        elif kind in (_INT_PAIR, _FLOAT_PAIR):
            group.add_argument(
                *flags, dest=f.name, nargs=2, metavar=("LOW", "HIGH"), default=argparse.SUPPRESS, help=help_text
            )
        elif kind == _STR_LIST:
            group.add_argument(*flags, dest=f.name, nargs="+", metavar="NAME", default=argparse.SUPPRESS,
                               help=help_text)
        else:
            metavar = flags[0].lstrip("-").replace("-", "_").upper()
            group.add_argument(*flags, dest=f.name, metavar=metavar, default=argparse.SUPPRESS, help=help_text)


def _show(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields typed on the command line, as a dict."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def _derived_on_resume(saved: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Which of a saved run's settings were derived (not chosen): ``{setting: the settings it follows}``."""
    derived = {}
    if saved.get("test_size") is not None and saved.get("test_size") == saved.get("img_size"):
        derived["test_size"] = ("img_size",)
    try:
        name = canonical_name(saved.get("model", TrainConfig.model))
    except ValueError:
        return derived
    preset_range = TRAIN_PRESETS.get(name, {}).get("random_size")
    saved_range = saved.get("random_size")
    if (preset_range is not None and saved_range is not None and tuple(saved_range) == tuple(preset_range)
            and saved.get("img_size") == PRESETS[name]["input_size"]):
        derived["random_size"] = ("img_size", "model")
    return derived


def resume_settings(saved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A stopped run's saved settings to resume with, before the ``given`` ones (file, command line) override them.

    Settings the run derived from one that ``given`` now changes are left out so they are derived again
    (``--img-size 320`` on resume also moves the evaluation size and the multiscale range, unless those were
    chosen explicitly).
    """
    given = {k.replace("-", "_"): v for k, v in given.items()}
    drop = {name for name, sources in _derived_on_resume(saved).items()
            if name not in given and any(s in given and given[s] != saved.get(s) for s in sources)}
    return {k: v for k, v in saved.items() if k not in drop}


def build_config(file_values: dict[str, Any] | None = None, cli_values: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < demo defaults (when no dataset is named anywhere) < config file < command line, resolved."""
    file_values, cli_values = file_values or {}, cli_values or {}
    explicit = TrainConfig().updated(file_values, "config file").updated(cli_values, "command line")
    base = TrainConfig()
    if not explicit.has_data():
        base = base.updated(DEMO_DEFAULTS, "demo defaults")
    return base.updated(file_values, "config file").updated(cli_values, "command line").resolved()
