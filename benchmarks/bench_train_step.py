"""Training-step and data-pipeline benchmarks: the official-style step and pipeline against the fast ones.

Train-step groups (CPU; yolox-nano 416 batch 8 from the official weights, yolox-s 640 batch 4 from random
init; seeded mosaic batches of coco128). One step = :meth:`yolox_fast.engine.Trainer.train_step` (input
conversion, forward with the loss, backward, SGD step, EMA update). Providers side by side:

* ``official-style``: the official algorithm as the official code runs it: float32 contiguous (NCHW)
  batches and model, the official modules (Conv, BatchNorm, inplace SiLU), PyTorch's default SGD, and the
  per-image loss of :func:`yolox_fast.ops.reference.yolox_loss` (SimOTA image by image with the reference
  assigner, boolean-indexed loss terms);
* ``fast``: the trainer's defaults: uint8 batches in the layout chosen for the device
  (``models/layout.py``: channels_last on the CPU), BatchNorm + SiLU fused on the CPU
  (``ops/batchnorm_silu.py``), fused SGD (``engine/optim.py``), the batched assigner op, the fixed-shape loss;
* ``fast-unfused``: ``fast`` with ``--no-cpu-fusions`` (the official modules: no fused BatchNorm + SiLU, the
  official Focus slicing), to show the share of those two rewrites;
* ``model-only-<layout>``: the same model's forward, backward and SGD step with a trivial loss (the
  floor for a step in that layout; the fast step should be within 5% of ``model-only-channels_last``);
* ``fast-bf16``: the fast step with the CPU's opt-in bf16 AMP (``--amp-dtype bf16``; not the default).

``extra_info`` holds the milliseconds per step and, for the two real steps, the share of each stage
(input transfer and conversion, model forward, assignment, loss, backward, optimiser step and EMA)
from one instrumented step; for float32 steps also the FLOPs per step (convolutions and matmuls, forward and
backward) and the share of this machine's float32 GEMM rate the step runs at (how close it is to the
hardware's pace). A summary with the ratios is printed at the end of the run.

Data-pipeline group (CPU, one process, one thread for torch and OpenCV, yolox-s settings at 640: mosaic,
mixup, HSV, flip, affine; items collated in batches of 8): items per second of ``official-style``
(:func:`official_pipeline.official_train_item`: the official order of operations and arithmetic, every
tile decoded, float32 CHW items, float stacking) and of the fast :class:`yolox_fast.data.TrainAugmentDataset`
(the same pixels and labels, tested), each without and with the RAM cache.

The GPU group (``-m gpu``; yolox-s 640 batch 16, AMP) compares the official-style and fast steps and
reports images per second and the stage shares.

    pytest benchmarks/bench_train_step.py --benchmark-only                 # CPU groups
    pytest benchmarks/bench_train_step.py --benchmark-only -m gpu          # GPU group

On a machine shared with other jobs, wall times of multi-threaded steps are meaningless (OpenMP threads
wait for busy cores); the CPU work of one thread is the stable figure:
``OMP_NUM_THREADS=1 pytest benchmarks/bench_train_step.py --benchmark-only --benchmark-timer time.process_time``.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolox_fast.engine.config import TrainConfig
from yolox_fast.engine.trainer import Trainer
from yolox_fast.ops import reference

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO128 = DATA / "coco128"
WEIGHTS = {"yolox-nano": DATA / "weights" / "yolox_nano_calib.pth"}
CPU_CASES = {"yolox-nano": (416, 8), "yolox-s": (640, 4)}
STEP_TARGETS = {"yolox-nano": 2.1, "yolox-s": 1.35}  # fast vs official-style on the CPU (issue 11)
GPU_CASE = ("yolox-s", 640, 16)
NUM_BATCHES, ROUNDS = 2, 5  # train step: 5 timed rounds (3 left the official-style median swinging by 20%)
# Data pipeline: 32 items a round, a warm-up round and 3 timed ones: together one pass over coco128's 128 images.
DATA_ITEMS, DATA_BATCH, DATA_ROUNDS = 32, 8, 3

pytestmark = pytest.mark.skipif(not (COCO128 / "annotations" / "instances_train2017.json").is_file(),
                                reason=f"coco128 not found under {COCO128}")

_RESULTS: dict[str, dict[str, float]] = {}  # group -> provider -> seconds per step (median) or items/s
_FLOP_PACE: dict[str, dict[str, tuple]] = {}  # group -> provider -> (FLOPs per step, share of GEMM rate, rate)


class OfficialStyleLoss(torch.nn.Module):
    """The official per-image loss (reference SimOTA image by image, boolean-indexed terms)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.use_l1 = False

    def forward(self, raw, grids, strides, labels):
        return reference.yolox_loss(raw, grids, strides, labels, self.num_classes, self.use_l1)


class TimedAssigner:
    """Forwards to an assigner and adds up the wall time of its ``assign`` calls (synchronising on CUDA)."""

    def __init__(self, inner, sync):
        self.inner, self.sync, self.seconds = inner, sync, 0.0

    def assign(self, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        result = self.inner.assign(*args, **kwargs)
        self.sync()
        self.seconds += time.perf_counter() - start
        return result


def _sync_for(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def coco128_base(cache: bool = False):
    from yolox_fast.data import COCODetection

    return COCODetection(COCO128 / "train2017", COCO128 / "annotations" / "instances_train2017.json",
                         cache_images=cache)


def make_batches(model: str, size: int, batch: int, channels_last: bool):
    """``NUM_BATCHES`` seeded mosaic batches: uint8 in the given layout, as the fast loader hands them."""
    from yolox_fast.data import TrainAugmentDataset, collate

    augmented = TrainAugmentDataset(coco128_base(), input_size=size, mosaic_prob=1.0, mixup_prob=0.0,
                                    mosaic_scale=(0.5, 1.5), seed=0)
    return [collate([augmented[b * batch + i] for i in range(batch)], channels_last=channels_last)[:2]
            for b in range(NUM_BATCHES)]


def make_trainer(model: str, size: int, batch: int, tmp_path, device: str, official: bool, amp: bool = False,
                 amp_dtype: str = "auto", cpu_fusions: bool = True):
    weights = WEIGHTS.get(model)
    cfg = TrainConfig(model=model, img_size=size, batch_size=batch, epochs=300, multiscale=False, workers=0,
                      device=device, output_dir=str(tmp_path), progress=False, tensorboard=False, amp=amp,
                      amp_dtype=amp_dtype,
                      weights=str(weights) if weights is not None and weights.is_file() else None,
                      channels_last="off" if official else "auto", cpu_fusions=cpu_fusions and not official,
                      assigner_backend="reference" if official else None, lr_per_image=0.01 / 64).resolved()
    from yolox_fast.data import TrainAugmentDataset

    trainer = Trainer(cfg, TrainAugmentDataset(coco128_base(), input_size=size, seed=0), [str(i) for i in range(80)])
    trainer.iteration = 10_000  # past the warm-up: a realistic learning rate
    if official:
        trainer.model.head.loss = OfficialStyleLoss(80)
        for group in trainer.optimizer.param_groups:  # the official torch.optim.SGD: default per-parameter loop
            group["fused"] = False
    return trainer


def stage_times(trainer: Trainer, images, labels) -> dict[str, float]:
    """One step cut into stages (synchronised on CUDA), in seconds; the same work as ``train_step``."""
    sync = _sync_for(trainer.device)
    model, head = trainer.model, trainer.model.head
    timed = TimedAssigner(getattr(head.loss, "assigner", None), sync)
    if timed.inner is not None:
        head.loss.assigner = timed
    marks: list[float] = []

    def mark():
        sync()
        marks.append(time.perf_counter())

    sync()
    marks = [time.perf_counter()]
    images = images.to(trainer.device, non_blocking=True).float()
    labels = labels.to(trainer.device, non_blocking=True).float()
    images = images.contiguous(memory_format=torch.channels_last if model.channels_last else torch.contiguous_format)
    mark()
    with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype, enabled=trainer.use_amp):
        raw, sizes = head.forward_raw(model.backbone(images))
        mark()
        grids, strides = head.grids(sizes, raw.device)
        losses = head.loss(raw, grids, strides, labels)
    mark()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(losses["total_loss"]).backward()
    mark()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    if trainer.ema is not None:
        trainer.ema.update(model)
    mark()
    if timed.inner is not None:
        head.loss.assigner = timed.inner
    d = np.diff(marks)
    return {"input": d[0], "forward": d[1], "assignment": timed.seconds, "loss": d[2] - timed.seconds,
            "backward": d[3], "optimizer+ema": d[4]}


def model_only_step(trainer: Trainer):
    """Forward, backward and SGD step of the trainer's model with a trivial loss (no assignment, no EMA)."""
    model, head = trainer.model, trainer.model.head
    layout = torch.channels_last if model.channels_last else torch.contiguous_format

    def step(images, labels):
        images = images.to(trainer.device, non_blocking=True).float().contiguous(memory_format=layout)
        with torch.autocast(trainer.device.type, dtype=trainer.amp_dtype, enabled=trainer.use_amp):
            raw, _ = head.forward_raw(model.backbone(images))
            loss = raw.float().square().mean()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()

    return step


_GEMM_RATE: dict[str, float] = {}  # device -> float32 matrix-multiply FLOP/s, measured once per session


def gemm_rate(device: torch.device) -> float:
    """This machine's float32 GEMM rate in FLOP/s (a 4096^3 matmul, median of 5): the pace a convolutional
    network's fp32 step can at best approach, since its convolutions run as GEMM-like kernels."""
    if device.type not in _GEMM_RATE:
        sync = _sync_for(device)
        a, b = (torch.randn(4096, 4096, device=device) for _ in range(2))
        a @ b
        sync()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            sync()
            times.append(time.perf_counter() - start)
        _GEMM_RATE[device.type] = 2 * 4096**3 / float(np.median(times))
    return _GEMM_RATE[device.type]


def step_flops(step) -> float:
    """FLOPs of one step, convolutions and matmuls (torch.utils.flop_counter), forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def run_step_benchmark(benchmark, record_env, provider, model, size, batch, tmp_path, device="cpu", amp=False):
    official = provider == "official-style"
    group = f"train-step {model} {size} b{batch} {device}{' amp' if amp else ''}"
    if provider == "fast-bf16":  # the CPU's opt-in AMP
        amp = True
    trainer = make_trainer(model, size, batch, tmp_path, device, official or provider == "model-only-contiguous",
                           amp, "bf16" if provider == "fast-bf16" else "auto", cpu_fusions=provider != "fast-unfused")
    if provider == "model-only-channels_last":
        trainer.model.set_channels_last(True)
    fast_layout = trainer.model.channels_last
    batches = make_batches(model, size, batch, channels_last=fast_layout)
    if official:  # what the official loader hands over: float32, contiguous
        batches = [(images.float().contiguous(), labels) for images, labels in batches]
    step_fn = model_only_step(trainer) if provider.startswith("model-only") else trainer.train_step
    counter = iter(range(10**9))
    sync = _sync_for(trainer.device)

    def step():
        images, labels = batches[next(counter) % NUM_BATCHES]
        step_fn(images, labels)
        sync()

    step()  # warm-up: first-call allocations, oneDNN primitive creation, cuDNN autotuning
    stages = {} if provider.startswith("model-only") else stage_times(trainer, *batches[0])
    flops = step_flops(step) if not amp else 0.0
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1)
    trainer.close()
    median = benchmark.stats.stats.median
    _RESULTS.setdefault(group, {})[provider] = median
    if flops:  # how close the fp32 step comes to the machine's GEMM pace
        gemm = gemm_rate(trainer.device)
        _FLOP_PACE.setdefault(group, {})[provider] = (flops, flops / median / gemm, gemm)
        benchmark.extra_info.update(gflop_per_step=flops / 1e9, gflop_per_s=flops / median / 1e9,
                                    share_of_gemm_rate=flops / median / gemm)
    total = sum(stages.values()) or 1.0
    record_env(device)
    benchmark.extra_info.update({
        "step_ms": 1000 * median, "images_per_s": batch / median, "batch": batch, "input": size,
        "layout": "channels_last" if trainer.model.channels_last else "contiguous",
        "weights": "official" if WEIGHTS.get(model, Path("-")).is_file() else "random init",
        **{f"share_{k}": v / total for k, v in stages.items()},
    })


CPU_PROVIDERS = ["official-style", "fast", "fast-unfused", "model-only-contiguous", "model-only-channels_last",
                 "fast-bf16"]


@pytest.mark.benchmark(group="train-step yolox-nano 416 b8 cpu")
@pytest.mark.parametrize("provider", CPU_PROVIDERS)
def test_train_step_nano(benchmark, record_env, provider, tmp_path):
    run_step_benchmark(benchmark, record_env, provider, "yolox-nano", *CPU_CASES["yolox-nano"], tmp_path)


@pytest.mark.benchmark(group="train-step yolox-s 640 b4 cpu")
@pytest.mark.parametrize("provider", CPU_PROVIDERS)
def test_train_step_s(benchmark, record_env, provider, tmp_path):
    run_step_benchmark(benchmark, record_env, provider, "yolox-s", *CPU_CASES["yolox-s"], tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.benchmark(group="train-step yolox-s 640 b16 cuda amp")
@pytest.mark.parametrize("provider", ["official-style", "fast", "model-only-contiguous", "model-only-channels_last"])
def test_train_step_gpu(benchmark, record_env, provider, tmp_path):
    model, size, batch = GPU_CASE
    run_step_benchmark(benchmark, record_env, provider, model, size, batch, tmp_path, device="cuda", amp=True)


# -- data pipeline ----------------------------------------------------------------------------------------
@pytest.mark.benchmark(group="data-pipeline 640 yolox-s settings cpu (one process)")
@pytest.mark.parametrize("cache", [False, True], ids=["decode", "ram-cache"])
@pytest.mark.parametrize("provider", ["official-style", "fast"])
def test_data_pipeline(benchmark, record_env, provider, cache):
    from yolox_fast.data import TrainAugmentDataset, collate
    from official_pipeline import official_train_item

    aug = TrainAugmentDataset(coco128_base(cache), input_size=640, mosaic_prob=1.0, mixup_prob=1.0, seed=0)
    counter = iter(range(10**9))
    if provider == "fast":
        def batch():
            start = next(counter) * DATA_BATCH
            collate([aug[(start + i) % len(aug)] for i in range(DATA_BATCH)])
    else:
        def batch():
            start = next(counter) * DATA_BATCH
            torch.stack([torch.from_numpy(official_train_item(aug, (start + i) % len(aug))[0])
                         for i in range(DATA_BATCH)])

    def run():
        for _ in range(DATA_ITEMS // DATA_BATCH):
            batch()

    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    # One thread per process for both providers: torch as in a DataLoader worker, OpenCV as in the official
    # trainer's workers (its configure_module calls cv2.setNumThreads(0): OpenCV runs sequentially).
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    try:
        run()  # warm-up
        benchmark.pedantic(run, rounds=DATA_ROUNDS, iterations=1)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    items_per_s = DATA_ITEMS / benchmark.stats.stats.mean  # the rounds hold different images: the whole pass
    _RESULTS.setdefault("data-pipeline (items/s)", {})[f"{provider} {'ram-cache' if cache else 'decode'}"] = items_per_s
    record_env("cpu")
    benchmark.extra_info.update({"items_per_s": items_per_s, "input": 640, "cache": cache})


@pytest.fixture(scope="module", autouse=True)
def print_summary(request):
    """After the module: the ratios the targets are stated in (issue 11), on the terminal."""
    yield
    lines = ["", "train-step / data-pipeline summary (medians):"]
    for group, res in _RESULTS.items():
        if group.startswith("train-step"):
            lines.append(f"  {group}: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in res.items()))
            for fast in ("fast", "fast-unfused", "fast-bf16"):
                if "official-style" in res and fast in res:
                    lines.append(f"    {fast} vs official-style: {res['official-style'] / res[fast]:.2f}x")
            for layout in ("channels_last", "contiguous"):
                if "fast" in res and f"model-only-{layout}" in res:
                    overhead = res["fast"] / res[f"model-only-{layout}"] - 1
                    lines.append(f"    fast over model-only-{layout}: {100 * overhead:+.1f}%")
            pace = _FLOP_PACE.get(group, {})
            if "fast" in pace:
                flops, share, gemm = pace["fast"]
                lines.append(f"    fast: {flops / 1e9:.1f} GFLOP per step at {100 * share:.0f}% of this machine's "
                             f"float32 GEMM rate ({gemm / 1e9:.0f} GFLOP/s)")
                target = STEP_TARGETS.get(group.split()[1])
                if "official-style" in res and target:
                    need = flops / (res["official-style"] / target) / gemm
                    lines.append(f"    a step {target}x the official-style one (issue 11's target) would need "
                                 f"{100 * need:.0f}% of it")
        else:
            lines.append(f"  {group}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()))
            if "official-style decode" in res and "fast decode" in res:
                lines.append(f"    fast vs official-style without cache: "
                             f"{res['fast decode'] / res['official-style decode']:.2f}x")
            if "fast ram-cache" in res and "fast decode" in res:
                lines.append(f"    RAM cache speed-up (fast): {res['fast ram-cache'] / res['fast decode']:.2f}x")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if len(lines) > 2 and capture is not None:
        with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
            print("\n".join(lines), flush=True)
