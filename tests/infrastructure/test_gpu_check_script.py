"""scripts/gpu_check.sh on a machine without a GPU: what it promises on the GPU machine that a CPU can check.

Without a GPU it stops at once with exit 2 and says so. With GPU_CHECK_WITHOUT_GPU=1 and a budget too small for
any step, its bookkeeping runs: the steps in order (the needed ones first, the optional ones last and not
counted as failures when skipped for time), the summary and results always written, at most 8 files, never
into an earlier run's folder; --quick runs no optional step."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ["build", "gpu_tests", "bench_assign", "bench_postprocess"]
OPTIONAL = ["slow_tests", "bench_iou", "bench_train_step", "triton_resources"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRITON_INTERPRET", "OUT", "PYTHON", "GPU_CHECK_WITHOUT_GPU", "GPU_CHECK_BUDGET_S")}
    env.update(extra)
    return env


def _run(args, env, timeout=300):
    return subprocess.run(["bash", "scripts/gpu_check.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_no_gpu_says_so_and_exits_2_before_building(tmp_path):
    out = tmp_path / "run"
    proc = _run([], _env(OUT=str(out), CUDA_VISIBLE_DEVICES=""), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "no CUDA device: nothing to check"
    assert not out.exists()  # nothing built, nothing written


def test_bad_argument_is_usage_error(tmp_path):
    proc = _run(["--fast"], _env(OUT=str(tmp_path / "run")), timeout=60)
    assert proc.returncode == 2 and "unknown argument --fast" in proc.stderr


def test_budget_order_and_outputs(tmp_path):
    out = tmp_path / "run"
    env = _env(OUT=str(out), GPU_CHECK_BUDGET_S="30", GPU_CHECK_CACHE=str(tmp_path / "cache"),
               GPU_CHECK_WITHOUT_GPU="1")  # under 20 s left for every step: all skipped
    proc = _run([], env)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # nothing ran: a failure, never a pass
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"summary.txt", "results.json"} <= set(files), files
    res = json.loads((out / "results.json").read_text())
    steps = {s["name"]: s["exit"] for s in res["steps"]}
    assert list(steps) == NEEDED + OPTIONAL
    assert all(steps[n] == "skipped: out of time" for n in NEEDED)
    assert all(steps[n] == "skipped (optional)" for n in OPTIONAL)
    assert res["pass"] is False and all(t["ok"] is False for t in res["targets"].values())
    summary = (out / "summary.txt").read_text()
    again = _run([], env, timeout=60)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (out / "summary.txt").read_text() == summary


def test_quick_runs_no_optional_step(tmp_path):
    out = tmp_path / "quick"
    env = _env(OUT=str(out), GPU_CHECK_BUDGET_S="30", GPU_CHECK_CACHE=str(tmp_path / "cache"),
               GPU_CHECK_WITHOUT_GPU="1")
    proc = _run(["--quick"], env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in res["steps"]] == NEEDED

