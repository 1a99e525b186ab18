"""A shared machine: the training step and predict beside a busy process, idle and contended side by side.

On a machine where another process keeps a core busy (a second job, a browser, CI), OpenMP's default
*active* wait makes each torch thread spin at every barrier for a partner that is not scheduled, and the
step slows down several times (issue 18.8). On such a machine (load average >= 0.9) the commands set
``OMP_WAIT_POLICY=PASSIVE`` before torch loads (:func:`yolox_fast.cli.prefer_passive_openmp_waits`); on an idle
one they keep the default, which this benchmark shows is faster there. Each case runs in a fresh process (OpenMP reads
the policy when torch loads), with torch's default thread count (one per core):

* ``policy``: ``active`` (OpenMP's default: the commands on an idle machine) or ``passive`` (on a busy one);
* ``load``: ``idle``, or ``busy``: one background process spinning on one core for the whole measurement.

Groups: ``contention-train-step`` (yolox-nano 256, batch 8, forward with the loss, backward, SGD step, random
init, synthetic boxes) and ``contention-predict`` (yolox-nano 416 through :class:`yolox_fast.Detector` on the
shared dog.jpg). The figure is the child's own median per step / image (``extra_info["ms"]``; the benchmark's time also
counts the child's start-up); ``extra_info`` also holds the machine's load average
when the case started. The summary at the end prints ms per step and the contended/idle ratios.

    pytest benchmarks/bench_contention.py --benchmark-only -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOG = REPO.parent / "shared" / "data" / "images" / "dog.jpg"
WEIGHTS = REPO.parent / "shared" / "data" / "weights" / "yolox_nano.pth"
STEPS = int(os.environ.get("BENCH_CONTENTION_STEPS", "6"))

TRAIN_CHILD = """
import json, statistics, sys, time
import torch
from yolox_fast.models import build_yolox
torch.manual_seed(0)
model = build_yolox("yolox-nano", num_classes=80).train()
opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
images = torch.rand(8, 3, 256, 256) * 255
labels = torch.zeros(8, 16, 5)
labels[:, :4] = torch.tensor([[1.0, 64, 64, 40, 60], [2.0, 150, 100, 80, 50], [0.0, 200, 200, 30, 30],
                              [5.0, 100, 180, 60, 40]])
times = []
for step in range(2 + int(sys.argv[1])):
    start = time.perf_counter()
    loss = model(images, labels)["total_loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": 1000 * statistics.median(times[2:]), "threads": torch.get_num_threads()}))
"""

PREDICT_CHILD = """
import json, statistics, sys, time
import torch
from yolox_fast import Detector
from yolox_fast.data import read_image
det = Detector(sys.argv[2], device="cpu")
image = read_image(sys.argv[3])
times = []
for _ in range(2 + 3 * int(sys.argv[1])):
    start = time.perf_counter()
    det(image)
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": 1000 * statistics.median(times[2:]), "threads": torch.get_num_threads()}))
"""

RESULTS: dict[tuple[str, str, str], float] = {}


def run_child(code: str, policy: str, load: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter with the wait policy, beside a spinning process when ``load``
    is ``busy``; returns the child's JSON line plus the load average at the start."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    busy = None
    if load == "busy":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        load_avg = os.getloadavg()[0]
        out = subprocess.run([sys.executable, "-c", code, str(STEPS), *args], env=env, capture_output=True,
                             text=True, timeout=900, check=True).stdout
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return {**json.loads(out.strip().splitlines()[-1]), "load_avg_at_start": round(load_avg, 2)}


def _measure(benchmark, group: str, code: str, policy: str, load: str, *args: str) -> None:
    result = {}

    def once():
        result.update(run_child(code, policy, load, *args))
        return result["ms"] / 1000

    benchmark.pedantic(once, rounds=1, iterations=1)
    benchmark.extra_info.update(result, policy=policy, load=load, cores=os.cpu_count())
    RESULTS[(group, policy, load)] = result["ms"]


CASES = [(policy, load) for policy in ("active", "passive") for load in ("idle", "busy")]


@pytest.mark.benchmark(group="contention-train-step")
@pytest.mark.parametrize("policy, load", CASES, ids=[f"{p}-{q}" for p, q in CASES])
def test_train_step_beside_a_busy_process(benchmark, policy, load):
    _measure(benchmark, "train step", TRAIN_CHILD, policy, load)


@pytest.mark.benchmark(group="contention-predict")
@pytest.mark.parametrize("policy, load", CASES, ids=[f"{p}-{q}" for p, q in CASES])
def test_predict_beside_a_busy_process(benchmark, policy, load):
    if not WEIGHTS.is_file() or not DOG.is_file():
        pytest.skip(f"needs {WEIGHTS} and {DOG}")
    _measure(benchmark, "predict", PREDICT_CHILD, policy, load, str(WEIGHTS), str(DOG))


def teardown_module(module):
    """Print ms per step / image and the busy/idle ratio of each policy."""
    lines = []
    for group in ("train step", "predict"):
        for policy in ("active", "passive"):
            idle, busy = RESULTS.get((group, policy, "idle")), RESULTS.get((group, policy, "busy"))
            if idle and busy:
                lines.append(f"{group:>10} {policy:>7}: idle {idle:8.1f} ms, beside a busy process {busy:8.1f} ms "
                             f"({busy / idle:.2f}x)")
    if lines:
        print("\n" + "\n".join(lines))
