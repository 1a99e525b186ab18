"""The training loop: the official YOLOX recipe, single- or multi-process, resumable.

One iteration (as the official trainer): move the batch to the device, resize it to the current
multiscale input size, set the scheduled learning rate, forward with the loss (AMP on CUDA),
backward through the grad scaler, step, update the EMA; every ``multiscale_interval`` iterations rank 0
draws a new input size and broadcasts it. After each epoch: average BatchNorm statistics over ranks,
write ``latest.pt``, evaluate the EMA model when due, keep ``best.pt`` by AP, add a results.csv row, stop
early when the AP has not improved for ``patience`` evaluations. The first batches of a new run are drawn
(``train_batch0.jpg``, ...: :mod:`yolox_fast.engine.visual_checks`).
"""

from __future__ import annotations

import functools
import inspect
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..models.assigner import SimOTAAssigner
from ..data.augment import collate
from ..models import build_yolox, load_official_weights
from ..models.checkpoint import CLASS_HEAD_PREFIX, CheckpointError, read_checkpoint
from ..models.layout import use_channels_last
from ..models.summary import count_parameters, model_summary
from ..ops.batchnorm_silu import fused_batch_norm_silu_available
from . import distributed as dist_utils
from .train_state import (FORMAT, capture_rng_state, copy_checkpoint, read_train_state, restore_rng_state,
                          save_train_state)
from .config import TrainConfig, save_config_file
from .distributed import DistContext
from .ema import ModelEMA, unwrap
from .lr_schedule import WarmCosineSchedule
from .optim import build_optimizer
from .records import LOSS_KEYS, NullRecorder, Recorder, format_duration
from .visual_checks import DRAWN_BATCHES, draw_training_batch

#: ``evaluate(model) -> {"AP": float, "AP50": float, "AP75": float, "table": str, ...}``
Evaluator = Callable[[torch.nn.Module], dict]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python and NumPy from the worker's torch seed; OpenCV sequential.

    torch gives each worker ``base_seed + worker_id``, with ``base_seed`` drawn from the main
    process's torch generator (saved in checkpoints), so augmentation is reproducible for a seed.
    Each worker already is one of several processes: OpenCV's own thread pool (one thread per core by
    default) would oversubscribe the cores, so workers run it sequentially, as the official trainer does.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    cv2.setNumThreads(0)


def resize_batch(
    images: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a batch to ``size = (h, w)`` as the official multiscale training does.

    ``images [B, 3, H, W]`` are resized bilinearly (``align_corners=False``); ``labels [B, N, 5]``
    (class, cx, cy, w, h in pixels) get cx, w scaled by ``w / W`` and cy, h by ``h / H`` (zero padding
    rows stay zero). Returns new tensors; the inputs are not modified.
    """
    h, w = size
    scale_y, scale_x = h / images.shape[-2], w / images.shape[-1]
    if scale_x == 1 and scale_y == 1:
        return images, labels
    images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
    labels = labels.clone()
    labels[..., 1::2] *= scale_x
    labels[..., 2::2] *= scale_y
    return images, labels


def trim_label_padding(labels: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """``labels [B, N, 5]`` cut after the last non-zero row of any image, rounded up to ``multiple`` rows.

    The loaders pad every image to ``max_labels`` (120) rows; a mosaic of COCO rarely holds more than 30
    boxes. The assigner's and the loss's work grows with the padded count, so the training step trims it on
    the CPU copy, where reading it costs no device sync. Rounding keeps the number of distinct shapes small
    (one compiled graph each under ``--compile``). Padding rows stay zero; nothing real is cut.
    """
    if labels.dim() != 3 or labels.shape[1] <= multiple:
        return labels
    used = labels.abs().sum(-1) > 0  # [B, N]
    rows = torch.arange(1, labels.shape[1] + 1).mul(used).max() if used.any() else torch.tensor(0)
    keep = min(labels.shape[1], max(multiple, -(-int(rows) // multiple) * multiple))
    return labels[:, :keep]


def choose_amp_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``setting`` (``auto``, ``bf16``, ``fp16``) on ``device``.

    CUDA, ``auto``: bf16 where the GPU supports it (compute capability 8.0+: no loss scaling, no overflow),
    fp16 with the grad scaler otherwise. CPU: only ``bf16``, asked for explicitly (oneDNN's bf16
    convolutions; measured 1.36x on the YOLOX-Nano step here, one thread, with channels_last), on CPUs with
    bf16 instructions.
    """
    if device.type == "cpu":
        if setting != "bf16":
            raise ValueError(f"AMP on the CPU runs in bf16 only (--amp-dtype bf16), got {setting!r}")
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            raise ValueError("--amp-dtype bf16: this CPU has no bfloat16 instructions; drop it to train in float32")
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    if setting == "bf16" and not bf16:
        raise ValueError(f"--amp-dtype bf16: {device} does not support bfloat16; use fp16 or auto")
    return torch.bfloat16 if bf16 else torch.float16


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose next epoch can start part-way: ``skip`` indices of this process's order
    for that epoch are left out once (the batches a stopped run already trained on), then it is reset."""

    skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


def _no_buffer_sync_per_forward() -> dict:
    """DDP keyword: no BatchNorm buffer broadcast before every forward (as the official trainer's
    ``broadcast_buffers=False``); the statistics are averaged after each epoch instead. Recent torch
    renames the option and deprecates the old name."""
    if "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class Trainer:
    """Train a YOLOX on ``train_set`` with the settings of ``cfg``.

    Args:
        cfg: a resolved :class:`TrainConfig` (see :meth:`TrainConfig.resolved`).
        train_set: the augmented training set: ``train_set[i] -> (image [3, H, W] float32 BGR 0-255,
            labels [max_labels, 5] float32 (class, cx, cy, w, h) pixels zero-padded, image_id)``, with
            H = W = ``cfg.img_size``; optional ``close_mosaic()`` (called for the no-aug epochs) and
            ``set_epoch(epoch)`` (called before each epoch). Loader workers persist across epochs, so
            these must reach them (:class:`yolox_fast.data.TrainAugmentDataset` keeps that state in
            shared memory).
        class_names: the C class names (C sets the head size; stored in checkpoints).
        evaluate: ``evaluate(model) -> dict`` with at least ``"AP"`` (AP50:95), called on rank 0 with
            the EMA model (raw model without EMA) in eval mode; None: no evaluation, no ``best.pt``.
            Only rank 0's is used (and needed).
        ctx: this process's place in a multi-process run (default: one process on ``cfg.device``).
        collate_fn: batches ``(images [B, 3, H, W], labels [B, max_labels, 5], ids)``; default
            :func:`yolox_fast.data.collate` in the model's memory layout.
        resume_from: a training checkpoint to continue from (else ``cfg.weights``, if any, is loaded).
        checkpoint: the already-loaded content of ``resume_from`` (read from the file when None).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        train_set: Dataset,
        class_names: Sequence[str],
        evaluate: Evaluator | None = None,
        ctx: DistContext | None = None,
        collate_fn=None,
        resume_from: str | Path | None = None,
        checkpoint: dict | None = None,
    ):
        if cfg.img_size is None or cfg.output_dir is None:
            raise ValueError("Trainer needs a resolved config with an output_dir (TrainConfig.resolved())")
        self.cfg = cfg
        self.ctx = ctx or DistContext(
            device=torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        )
        self.device = self.ctx.device
        self.class_names = list(class_names)
        self.train_set = train_set
        self.evaluate = evaluate
        # Only rank 0 needs an evaluator; every rank must agree on whether evaluations happen.
        self.evaluates = bool(dist_utils.broadcast_object(evaluate is not None))
        self.output_dir = Path(cfg.output_dir)
        self.recorder = Recorder(self.output_dir, cfg.progress, cfg.tensorboard) if self.ctx.is_main else NullRecorder()
        self.log = self.recorder.log
        try:
            self._setup(collate_fn, resume_from, checkpoint)
        except BaseException:
            self.recorder.close()
            raise

    # -- setup ------------------------------------------------------------------------------------------
    def _setup(self, collate_fn, resume_from, checkpoint) -> None:
        cfg = self.cfg
        if cfg.batch_size % self.ctx.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {self.ctx.world_size} processes")
        self.batch_per_process = cfg.batch_size // self.ctx.world_size
        seed_everything(cfg.seed)  # the same initial weights on every rank (the EMA copies them before DDP)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as the official trainer; one tuning per multiscale size

        # The data layer checks the labels (TrainAugmentDataset, in the loader workers): no per-step value check.
        assigner = SimOTAAssigner(len(self.class_names), cfg.simota, backend=cfg.assigner_backend, check_values=False)
        model = build_yolox(cfg.model, num_classes=len(self.class_names), assigner=assigner)
        if cfg.weights and resume_from is None:
            self._load_weights(model, cfg.weights)
        if cfg.freeze:
            self._freeze(model, cfg.freeze)
        # AMP: on CUDA by default; on the CPU only when bf16 is asked for (it changes the numbers; opt-in).
        cpu_bf16 = self.device.type == "cpu" and cfg.amp_dtype == "bf16"
        self.use_amp = cfg.amp and (self.device.type == "cuda" or cpu_bf16)
        self.amp_dtype = choose_amp_dtype(cfg.amp_dtype, self.device) if self.use_amp else None
        self.channels_last = use_channels_last(cfg.channels_last, self.device, self.use_amp)
        self.model = model.to(self.device).set_channels_last(self.channels_last).set_cpu_fusions(cfg.cpu_fusions)
        self.optimizer = build_optimizer(
            self.model, lr=cfg.warmup_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        # bf16 has float32's exponent range: loss scaling (and its per-step host sync) only for fp16.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema else None
        if cfg.compile:
            self.model.compile()  # in place: state-dict names, the EMA copy and DDP see the plain module
        seed_everything(cfg.seed + self.ctx.rank)  # each rank augments its images differently

        self.loader = self._build_loader(collate_fn)
        self.iters_per_epoch = len(self.loader)
        # A run shorter than the no-aug phase is all no-aug (``--epochs 1`` alone works); said in the header.
        self.no_aug_epochs = min(cfg.no_aug_epochs, cfg.epochs)
        self.schedule = WarmCosineSchedule(
            cfg.lr_per_image * cfg.batch_size,
            self.iters_per_epoch,
            cfg.epochs,
            cfg.warmup_epochs,
            self.no_aug_epochs,
            cfg.warmup_lr,
            cfg.min_lr_ratio,
        )
        self.base_size = (cfg.img_size, cfg.img_size)
        self.input_size = self.base_size
        self.size_rng = random.Random(cfg.seed)  # drawn on rank 0 only, then broadcast
        self.start_epoch = 0
        self.epochs_saved = 0  # epochs done as of the newest latest.pt (what an interrupted run resumes from)
        self.iteration = 0
        self.resume_batches = 0  # batches of start_epoch a stopped run had done (resumed part-way through)
        self.stopped_at: tuple[int, int] | None = None  # (epoch, batches done) of a checkpoint saved on a stop
        self._stop: BaseException | None = None  # raised at the next step boundary (request_stop)
        self._in_steps = False
        self.best_ap = -1.0
        self.best_epoch = 0  # 1-based epoch of best.pt
        self.evals_without_improvement = 0  # for --patience
        self.last_table = None
        if resume_from is not None:
            self._resume(resume_from, checkpoint if checkpoint is not None else read_train_state(resume_from))
        if self.ctx.is_distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **_no_buffer_sync_per_forward(),
            )

    def _build_loader(self, collate_fn) -> DataLoader:
        cfg = self.cfg
        n = len(self.train_set)
        if n == 0:
            raise ValueError("the training set is empty")
        # The sampler shuffles with (seed, epoch): the order of an epoch does not depend on RNG state.
        sampler = ResumableSampler(
            self.train_set, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=True, seed=cfg.seed
        )
        if len(sampler) < self.batch_per_process:
            raise ValueError(
                f"the training set has {n} images, fewer than one batch ({cfg.batch_size}); lower --batch-size"
            )
        pin = self.device.type == "cuda"
        self.log(
            f"data loader: {cfg.workers} worker processes per training process"
            f"{' (persistent)' if cfg.workers else ' (loading in the training process)'}, batches of "
            f"{self.batch_per_process}, {'channels_last' if self.channels_last else 'contiguous'} layout"
            f"{', pinned memory' if pin else ''}; images cross as the dataset gives them (uint8 from the "
            f"training augmentation) and become float32 on {self.device}"
        )
        return DataLoader(
            self.train_set,
            batch_size=self.batch_per_process,
            sampler=sampler,
            num_workers=cfg.workers,
            collate_fn=collate_fn or functools.partial(collate, channels_last=self.channels_last),
            pin_memory=pin,
            drop_last=True,
            worker_init_fn=seed_worker,
            persistent_workers=cfg.workers > 0,
        )

    def _load_weights(self, model: torch.nn.Module, path: str) -> None:
        """Start from ``path`` (official or ours); a different class count keeps all but the class layers."""
        info = read_checkpoint(path, prefer_ema=True)  # our checkpoints: start from the evaluated EMA weights
        if info.num_classes != model.num_classes:
            self.log(
                f"{path} was trained for {info.num_classes} classes, this dataset has {model.num_classes}: "
                f"loading everything except the class prediction layers ({CLASS_HEAD_PREFIX}*), which start fresh"
            )
        if info.model_name is not None and info.model_name != self.cfg.model:
            raise CheckpointError(f"cannot start {self.cfg.model} from {path}: it holds {info.model_name} weights")
        load_official_weights(model, info.state_dict, strict=True, new_class_head=True)
        self.log(f"loaded weights from {path} ({info.which})")

    def _freeze(self, model: torch.nn.Module, prefixes: Sequence[str]) -> None:
        """No gradient (and so no optimiser group) for parameters named ``prefix...``; BatchNorm statistics
        of frozen layers still follow the data in train mode."""
        for prefix in prefixes:
            matched = [p for name, p in model.named_parameters() if name.startswith(prefix)]
            if not matched:
                example = next(iter(dict(model.named_parameters())))
                raise ValueError(f"freeze: no parameter name starts with {prefix!r} (names look like {example!r})")
            for p in matched:
                p.requires_grad_(False)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        self.log(f"frozen: {', '.join(prefixes)} ({frozen} parameters)")

    def _resume(self, path: str | Path, ckpt: dict) -> None:
        if list(ckpt["class_names"]) != self.class_names:
            raise ValueError(
                f"{path} was trained on classes {ckpt['class_names'][:5]}... but this dataset has "
                f"{self.class_names[:5]}...; resume needs the same classes (start anew with --weights)"
            )
        if ckpt.get("model_name") not in (None, self.cfg.model):
            raise ValueError(f"{path} holds a {ckpt['model_name']}, the config asks for {self.cfg.model}")
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.ema.load_state_dict(ckpt["ema"])
                self.ema.updates = int(ckpt["ema_updates"])
            else:  # the run had no EMA: start the average from the resumed weights
                self.ema = ModelEMA(self.model, self.cfg.ema_decay)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.use_amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = self.epochs_saved = int(ckpt["epoch"])
        # A run stopped part-way through an epoch (SIGTERM, Ctrl-C) continues at its next batch, unless the
        # batch size or the dataset changed the epoch's batches.
        part = int(ckpt.get("epoch_batches_done", 0))
        self.resume_batches = part if 0 < part < self.iters_per_epoch else 0
        # The schedule position follows the epoch, as in the official trainer (batch size may have changed).
        self.iteration = self.start_epoch * self.iters_per_epoch + self.resume_batches
        if int(ckpt["iteration"]) != self.iteration:
            self.log(
                f"note: {path} stopped at iteration {ckpt['iteration']}, which is {self.iteration} with the "
                "current batch size and dataset; the learning-rate schedule continues from the latter"
            )
        self.best_ap = float(ckpt.get("best_ap", -1.0))
        self.best_epoch = int(ckpt.get("best_epoch", 0))
        self.evals_without_improvement = int(ckpt.get("evals_without_improvement", 0))
        # Continue at the size the run had drawn only when it is still one this run's settings can draw:
        # --no-multiscale or another --img-size on resume start from the (new) base size.
        drawn = tuple(ckpt.get("input_size", self.base_size))
        low, high = self.cfg.multiscale_sizes()
        if self.cfg.multiscale and low <= drawn[0] <= high and low <= drawn[1] <= high:
            self.input_size = drawn
        if ckpt.get("multiscale_rng") is not None:
            version, internal, gauss = ckpt["multiscale_rng"]
            self.size_rng.setstate((version, tuple(internal), gauss))
        states = ckpt.get("rng") or []
        if len(states) == self.ctx.world_size:
            restore_rng_state(states[self.ctx.rank])
        else:
            self.log(
                f"note: {path} was written by {len(states)} processes, this run has {self.ctx.world_size}; "
                "random streams are re-seeded, so augmentation will not repeat the uninterrupted run exactly"
            )
            seed_everything(self.cfg.seed + self.ctx.rank + 1000 * self.start_epoch)
        where = (f"epoch {self.start_epoch + 1}, batch {self.resume_batches + 1} of {self.iters_per_epoch}"
                 if self.resume_batches else f"epoch {self.start_epoch}")
        self.log(f"resumed from {path} at {where} (best AP so far {max(self.best_ap, 0):.4f})")
        old_epochs = int((ckpt.get("config") or {}).get("epochs", self.cfg.epochs))
        if old_epochs != self.cfg.epochs:
            self.log(
                f"schedule changed from {old_epochs} to {self.cfg.epochs} epochs: the cosine learning rate and the "
                f"no-aug phase are recomputed for {self.cfg.epochs} epochs ({self._no_aug_phase()})"
            )

    # -- phases -----------------------------------------------------------------------------------------
    @property
    def no_aug_start_epoch(self) -> int:
        """First (0-based) epoch without mosaic/mixup, with the L1 loss and evaluation every epoch.

        The official trainer closes the mosaic when ``epoch + 1 == epochs - no_aug_epochs``, i.e. one
        epoch before the learning rate goes flat, so ``no_aug_epochs + 1`` epochs run without it; this
        trainer does the same. ``no_aug_epochs = 0`` turns the phase off.
        """
        if self.no_aug_epochs <= 0:
            return self.cfg.epochs
        return max(self.cfg.epochs - self.no_aug_epochs - 1, 0)

    def _no_aug_phase(self) -> str:
        """The no-aug phase in words, for the log."""
        start = self.no_aug_start_epoch
        if start >= self.cfg.epochs:
            return "no no-aug phase"
        return f"no mosaic/mixup, L1 loss from epoch {start + 1} to {self.cfg.epochs}"

    def _enter_epoch(self, epoch: int) -> None:
        self.loader.sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        if epoch >= self.no_aug_start_epoch:
            if hasattr(self.train_set, "close_mosaic"):
                self.train_set.close_mosaic()
            if not unwrap(self.model).head.use_l1:
                unwrap(self.model).head.use_l1 = True
                self.log(f"epoch {epoch + 1}: no mosaic/mixup from now on, L1 loss on, evaluation every epoch")
            latest = self.output_dir / "latest.pt"
            resumed_part_way = epoch == self.start_epoch and self.resume_batches > 0
            if epoch == self.no_aug_start_epoch and self.ctx.is_main and latest.is_file() and not resumed_part_way:
                # As the official trainer: keep the state after the last mosaic epoch, to redo the last phase.
                copy_checkpoint(latest, self.output_dir / "last_mosaic_epoch.pt")

    def _eval_due(self, epoch: int) -> bool:
        done = epoch + 1
        return self.evaluates and (
            done % self.cfg.eval_interval == 0 or epoch >= self.no_aug_start_epoch or done == self.cfg.epochs
        )

    def _draw_input_size(self) -> tuple[int, int]:
        """Rank 0 draws ``32 * randint(low, high)``; every rank gets the same size."""
        size = None
        if self.ctx.is_main:
            low, high = self.cfg.multiscale_sizes()
            side = 32 * self.size_rng.randint(low // 32, high // 32)
            size = (side, side)
        return tuple(dist_utils.broadcast_object(size))

    def _input_sizes(self) -> str:
        """The training input sizes actually used, for the header."""
        if not self.cfg.multiscale:
            return f"input {self.input_size[0]}"
        low, high = self.cfg.multiscale_sizes()
        now = f", now {self.input_size[0]}" if self.input_size != self.base_size else ""
        return (f"input {low}-{high} (multiscale around {self.cfg.img_size}, redrawn every "
                f"{self.cfg.multiscale_interval} iterations{now})")

    # -- the loop ---------------------------------------------------------------------------------------
    def _fused_bn_silu_applies(self) -> bool:
        """Whether training runs the fused BatchNorm + SiLU op (ops/batchnorm_silu.py): built, CPU, float32,
        channels_last (the batches' conditions of ``fused_batch_norm_silu_applies``, known before the first step)."""
        return (self.cfg.cpu_fusions and fused_batch_norm_silu_available() and self.device.type == "cpu"
                and self.channels_last and not self.use_amp)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step on a batch (``images [B, 3, H, W]``, ``labels [B, N, 5]``); returns the loss dict.

        On a GPU the step queues without a host sync (tested under ``torch.cuda.set_sync_debug_mode``) with
        bf16 AMP. With fp16 the grad scaler's inf check was one; the fused SGD (``engine/optim.py``) takes the
        scaler's inf flag on the device instead, so that sync should be gone too (not yet run on a GPU). The
        loop adds one every ``log_interval`` steps, to read the loss means.
        """
        # uint8 crosses to the device (4x less than float32); the conversion runs there, keeping the layout.
        if labels.device.type == "cpu":
            labels = trim_label_padding(labels)
        images = images.to(self.device, non_blocking=True).float()
        labels = labels.to(self.device, non_blocking=True).float()
        images, labels = resize_batch(images, labels, self.input_size)
        lr = self.schedule(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            losses = self.model(images, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total_loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        if self.cfg.multiscale and self.iteration % self.cfg.multiscale_interval == 0:
            self.input_size = self._draw_input_size()
        return losses

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; returns the epoch means of the loss terms (over all ranks) and throughput.

        A stop asked for with :meth:`request_stop` takes effect after the step in progress: ``latest.pt`` is
        written as of that step (``epoch_batches_done`` says how far into the epoch) and the exception raised.
        An epoch resumed part-way starts at the first batch the stopped run had not trained on; its means and
        throughput cover the batches trained here.
        """
        self._enter_epoch(epoch)
        self.model.train()
        bar = self.recorder.start_epoch(epoch, self.cfg.epochs, self.iters_per_epoch)
        sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64, device=self.device)
        window = torch.zeros_like(sums)
        window_count, done = 0, 0
        if epoch == self.start_epoch and self.resume_batches:
            done = self.resume_batches
            self.loader.sampler.skip = done * self.batch_per_process
            if bar is not None and bar.bar is not None:
                bar.bar.update(done)
        first = done
        start = time.perf_counter()
        self._in_steps = True
        try:
            for batch in self.loader:
                if epoch == 0 and done < DRAWN_BATCHES and self.ctx.is_main:  # as the model gets them, before the step
                    draw_training_batch(batch[0], batch[1], self.class_names,
                                        self.output_dir / f"train_batch{done}.jpg")
                losses = self.train_step(batch[0], batch[1])
                # Accumulate on the device; read back (a host sync) only every log_interval iterations.
                step_values = torch.stack([losses[k].detach().to(torch.float64) for k in LOSS_KEYS])
                sums += step_values
                window += step_values
                window_count += 1
                done += 1
                if bar is not None:
                    bar.tick()
                if done % self.cfg.log_interval == 0 or done == self.iters_per_epoch:
                    means = dict(zip(LOSS_KEYS, (window / window_count).tolist(), strict=False))
                    if not np.isfinite(means["total_loss"]) and not self.use_amp:
                        saved = (f"last good checkpoint: {self.output_dir / 'latest.pt'} (epoch {self.epochs_saved})"
                                 if self.epochs_saved else "no checkpoint was written yet")
                        raise FloatingPointError(
                            f"the loss became {means['total_loss']} at epoch {epoch + 1}, iteration {done}: training "
                            f"diverged (try a lower --lr-per-image or more --warmup-epochs); {saved}"
                        )
                    elapsed = time.perf_counter() - start
                    rate = (done - first) * self.cfg.batch_size / elapsed
                    remaining = (self.cfg.epochs - epoch) * self.iters_per_epoch - done
                    lr = self.optimizer.param_groups[0]["lr"]
                    if bar is not None:
                        bar.update(done, means, lr, rate, self.input_size[0], remaining * elapsed / (done - first))
                    self.recorder.scalars({**means, "lr": lr}, self.iteration, "train")
                    window.zero_()
                    window_count = 0
                if self._stop is not None:  # asked between steps: keep this point, then stop
                    self._save_part_way(epoch, done)
                    raise self._stop
        finally:
            self._in_steps = False
        elapsed = time.perf_counter() - start
        self.recorder.end_epoch()
        stats = dict(zip(LOSS_KEYS, (sums / max(done - first, 1)).tolist(), strict=False))
        stats = dist_utils.all_reduce_mean(stats, self.device)
        stats.update(
            lr=self.optimizer.param_groups[0]["lr"],
            images_per_s=(done - first) * self.cfg.batch_size / elapsed,
            epoch_time_s=elapsed,
        )
        return stats

    def request_stop(self, reason: BaseException) -> bool:
        """Ask the run to stop at the next step boundary, raising ``reason`` there after saving ``latest.pt``.

        Returns False when the stop cannot wait for a step boundary (not inside an epoch's steps, a stop
        already asked for, or several processes, which would have to agree on the step): the caller then
        raises at once. Safe to call from a signal handler (it only sets a field).
        """
        if self._stop is not None or not self._in_steps or self.ctx.is_distributed:
            return False
        self._stop = reason
        return True

    def _save_part_way(self, epoch: int, batches_done: int) -> None:
        """``latest.pt`` as of ``batches_done`` steps into ``epoch`` (0-based); resuming continues there."""
        if batches_done >= self.iters_per_epoch:  # the epoch's last step: the epoch-end checkpoint follows
            batches_done = 0
            epoch += 1
        state = self._checkpoint(epoch, None)
        state["epoch_batches_done"] = batches_done
        if self.ctx.is_main:
            save_train_state(state, self.output_dir / "latest.pt")
        self.stopped_at = (epoch, batches_done)

    def _run_evaluation(self, epoch: int) -> dict | None:
        """Evaluate on rank 0 (the others wait); every rank gets the metrics, or every rank raises."""
        metrics, error = None, None
        if self.ctx.is_main:
            model = self.ema.ema if self.ema is not None else unwrap(self.model)
            start = time.perf_counter()
            try:
                metrics = self.evaluate(model)
            except Exception as exc:  # passed to the other ranks so that they do not wait forever
                error = f"{type(exc).__name__}: {exc}"
                if not self.ctx.is_distributed:
                    raise
            finally:
                self.model.train()
            if metrics is not None:
                self.last_table = metrics.get("table")
                if self.last_table:  # per-class table: in train.log each time, on the console at the end
                    self.log(f"epoch {epoch + 1} per-class AP:\n{self.last_table}", console=False)
                self.log(
                    f"epoch {epoch + 1}: AP {metrics['AP']:.4f}  AP50 {metrics.get('AP50', float('nan')):.4f}  "
                    f"AP75 {metrics.get('AP75', float('nan')):.4f}  ({time.perf_counter() - start:.1f} s)"
                )
        summary = {k: metrics[k] for k in ("AP", "AP50", "AP75") if k in metrics} if metrics else None
        summary, error = dist_utils.broadcast_object((summary, error))
        if error is not None:
            raise RuntimeError(f"evaluation failed on rank 0 after epoch {epoch + 1}: {error}")
        return summary

    def _checkpoint(self, epochs_done: int, ap: float | None) -> dict:
        """The checkpoint dict (collective: every rank contributes its RNG state)."""
        rng_states = dist_utils.all_gather_object(capture_rng_state())
        version, internal, gauss = self.size_rng.getstate()
        return {
            "format": FORMAT,
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.ema.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_amp else {},
            "epoch": epochs_done,
            "epoch_batches_done": 0,  # > 0: saved part-way through epoch ``epoch + 1`` (a stop between steps)
            "iteration": self.iteration,
            "best_ap": self.best_ap,
            "best_epoch": self.best_epoch,
            "evals_without_improvement": self.evals_without_improvement,
            "ap": ap,
            "input_size": list(self.input_size),
            "multiscale_rng": (version, list(internal), gauss),
            "config": self.cfg.to_dict(),
            "class_names": self.class_names,
            "model_name": self.cfg.model,
            "rng": rng_states,
        }

    def _save(self, epoch: int, ap: float | None, is_best: bool) -> None:
        state = self._checkpoint(epoch + 1, ap)
        if self.ctx.is_main:
            latest = self.output_dir / "latest.pt"
            save_train_state(state, latest)
            if is_best:
                copy_checkpoint(latest, self.output_dir / "best.pt")
            if self.cfg.save_interval and (epoch + 1) % self.cfg.save_interval == 0:
                copy_checkpoint(latest, self.output_dir / f"epoch_{epoch + 1}.pt")
        self.epochs_saved = epoch + 1

    def fit(self, stop_after_epoch: int | None = None) -> dict:
        """Train from ``start_epoch`` to ``cfg.epochs`` (or stop after epoch ``stop_after_epoch``, 1-based).

        With ``cfg.patience`` N > 0, training stops after the N-th evaluation in a row without a better AP (all
        ranks decide alike: they all get the metrics); ``best.pt`` holds the best model.

        Returns ``{"best_ap", "last_metrics", "epochs_done", "output_dir", "checkpoint", "best_checkpoint",
        "results_csv", "plot", "stopped_early"}`` (``stopped_early``: the last epoch when patience stopped the
        run, else None).
        """
        cfg = self.cfg
        if self.ctx.is_main:
            save_config_file(cfg, self.output_dir / "config.yaml")
        # parameters and GFLOPs at the evaluation size, as the official YOLOX prints them (rank 0: it costs a forward)
        size = model_summary(unwrap(self.model), cfg.test_size or self.base_size).describe() if self.ctx.is_main \
            else f"{count_parameters(self.model) / 1e6:.2f} M parameters"
        amp = str(self.amp_dtype).removeprefix("torch.") if self.use_amp else "off"
        self.log(
            f"{cfg.model} ({size}, {len(self.class_names)} classes) on "
            f"{self.ctx.world_size} x {self.device}; {len(self.train_set)} training images, batch "
            f"{cfg.batch_size}, {self.iters_per_epoch} iterations/epoch, epochs {self.start_epoch + 1}-"
            f"{cfg.epochs}, lr {self.schedule.base_lr:.3g}, {self._input_sizes()}, AMP {amp}, "
            f"{'channels_last' if self.channels_last else 'contiguous'} layout{', compiled' if cfg.compile else ''}"
            f"{', fused BatchNorm+SiLU' if self._fused_bn_silu_applies() else ''}; "
            f"output {self.output_dir}"
        )
        if self.no_aug_epochs < cfg.no_aug_epochs:
            self.log(f"note: no_aug_epochs {cfg.no_aug_epochs} is more than the run's {cfg.epochs} epochs; "
                     f"clamped to {self.no_aug_epochs} ({self._no_aug_phase()})")
        if self.start_epoch >= cfg.epochs:
            self.log(f"nothing to train: the run has done all its {cfg.epochs} epochs (raise --epochs to go on)")
        last_metrics = stopped_early = None
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.epochs):
            stats = self.train_epoch(epoch)
            dist_utils.all_reduce_norm_buffers(unwrap(self.model))
            if self.ema is not None:
                dist_utils.all_reduce_norm_buffers(self.ema.ema)
            self._save(epoch, None, False)  # a crash during evaluation loses nothing
            metrics = None
            if self._eval_due(epoch):
                metrics = self._run_evaluation(epoch)
                is_best = metrics["AP"] > self.best_ap
                self.best_ap = max(self.best_ap, metrics["AP"])
                if is_best:
                    self.best_epoch, self.evals_without_improvement = epoch + 1, 0
                else:
                    self.evals_without_improvement += 1
                self._save(epoch, metrics["AP"], is_best)
                last_metrics = metrics
            self.recorder.write_row({"epoch": epoch + 1, **stats, **(metrics or {})})
            self.recorder.scalars(metrics or {}, epoch + 1, "val")
            self.log(
                f"epoch {epoch + 1}/{cfg.epochs} done in {format_duration(stats['epoch_time_s'])}: loss "
                f"{stats['total_loss']:.3f}, {stats['images_per_s']:.1f} img/s"
                + (f", AP {metrics['AP']:.4f} (best {self.best_ap:.4f})" if metrics else "")
            )
            if metrics and cfg.patience and self.evals_without_improvement >= cfg.patience:
                stopped_early = epoch + 1
                self.log(f"early stopping after epoch {epoch + 1}: the AP has not improved for {cfg.patience} "
                         f"evaluations (--patience {cfg.patience}); best AP50:95 {self.best_ap:.4f} after epoch "
                         f"{self.best_epoch}, kept in {self.output_dir / 'best.pt'}")
                break
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
        dist_utils.barrier()
        if self.last_table:
            self.log(f"per-class AP of the last evaluation:\n{self.last_table}")
        plot = self.recorder.plot()
        best = self.output_dir / "best.pt"
        result = {
            "best_ap": self.best_ap if self.best_ap >= 0 else None,
            "last_metrics": last_metrics,
            "epochs_done": epoch + 1,
            "output_dir": self.output_dir,
            "checkpoint": self.output_dir / "latest.pt",
            "best_checkpoint": best if best.is_file() else None,
            "results_csv": self.recorder.csv_path,
            "plot": plot,
            "stopped_early": stopped_early,
        }
        return result

    def close(self) -> None:
        self.recorder.close()
