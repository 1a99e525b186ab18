"""Training-step benchmark on the CPU: yolox-nano, 416 x 416, batch 8, real coco128 images with mosaic.

One step = :meth:`yolox_fast.engine.Trainer.train_step` (forward with the loss, backward, SGD step, EMA
update); augmentation is done beforehand and timed apart. The model's assigner is wrapped to time its
``assign`` calls, giving the share of the step spent in label assignment. Two providers side by side:
the default assigner (best available backend) and the per-image reference.

    pytest benchmarks/bench_train_step.py --benchmark-only
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from yolox_fast import SimOTAAssigner
from yolox_fast.engine.config import TrainConfig
from yolox_fast.engine.trainer import Trainer
from yolox_fast.ops import backends

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO128 = DATA / "coco128"
WEIGHTS = DATA / "weights" / "yolox_nano_calib.pth"
BATCH, SIZE, NUM_BATCHES, ROUNDS = 8, 416, 3, 5

pytestmark = pytest.mark.skipif(not (COCO128 / "annotations" / "instances_train2017.json").is_file(),
                                reason=f"coco128 not found under {COCO128}")


class TimedAssigner:
    """Forwards to an assigner and adds up the wall time of its ``assign`` calls."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def assign(self, *args, **kwargs):
        start = time.perf_counter()
        result = self.inner.assign(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return result


@pytest.fixture(scope="module")
def batches():
    """``NUM_BATCHES`` mosaic batches of coco128 (augmentation timed here, not in the step)."""
    from yolox_fast.data import COCODetection, TrainAugmentDataset, collate

    dataset = COCODetection(COCO128 / "train2017", COCO128 / "annotations" / "instances_train2017.json")
    augmented = TrainAugmentDataset(dataset, input_size=(SIZE, SIZE), mosaic_prob=1.0, mixup_prob=0.0,
                                    mosaic_scale=(0.5, 1.5), seed=0)
    start = time.perf_counter()
    out = [collate([augmented[b * BATCH + i] for i in range(BATCH)])[:2] for b in range(NUM_BATCHES)]
    augment_s = (time.perf_counter() - start) / NUM_BATCHES
    return out, augment_s, augmented


@pytest.mark.benchmark(group="train-step yolox-nano 416 b8 cpu")
@pytest.mark.parametrize("assigner", ["default", "reference"])
def test_train_step(benchmark, record_env, batches, assigner, tmp_path):
    data, augment_s, augmented = batches
    cfg = TrainConfig(model="yolox-nano", img_size=SIZE, batch_size=BATCH, epochs=300, multiscale=False,
                      workers=0, device="cpu", output_dir=str(tmp_path), progress=False, tensorboard=False,
                      weights=str(WEIGHTS) if WEIGHTS.is_file() else None, lr_per_image=0.01 / 64).resolved()
    trainer = Trainer(cfg, augmented, [str(i) for i in range(80)])
    trainer.iteration = 10_000  # past the warm-up: a realistic learning rate
    backend = None if assigner == "default" else "reference"
    timed = TimedAssigner(SimOTAAssigner(80, backend=backend))
    trainer.model.head.loss.assigner = timed
    step_index = iter(range(10**9))

    def step():
        images, labels = data[next(step_index) % NUM_BATCHES]
        trainer.train_step(images, labels)

    step()  # warm-up (first-call allocations, oneDNN primitive creation)
    timed.seconds, timed.calls = 0.0, 0
    start = time.perf_counter()
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1)
    total = time.perf_counter() - start
    trainer.close()
    gts = [int((labels.abs().sum(-1) > 0).sum()) / BATCH for _, labels in data]
    record_env("cpu")
    benchmark.extra_info.update({
        "assigner_backend": backends.choose("simota_assign", "cpu", backend)[0],
        "assign_ms_per_step": 1000 * timed.seconds / timed.calls,
        "assign_share": timed.seconds / total,
        "step_ms": 1000 * total / timed.calls,
        "augment_ms_per_batch": 1000 * augment_s,
        "gts_per_image": sum(gts) / len(gts),
        "batch": BATCH,
        "input": SIZE,
        "weights": WEIGHTS.name if WEIGHTS.is_file() else "random init",
    })
