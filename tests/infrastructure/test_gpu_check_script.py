"""scripts/gpu_check.sh without a GPU, with a budget too small for any step: what it promises on the GPU
machine that a CPU can check. Each step once, the summary and results always written, at most 8 files,
never into an earlier run's folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_budget_and_outputs(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "OUT", "PYTHON")}
    env.update(OUT=str(out), GPU_CHECK_BUDGET_S="40")  # under 30 s left for every step: all skipped
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # nothing ran: a failure, never a pass
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"summary.txt", "results.json"} <= set(files), files
    res = json.loads((out / "results.json").read_text())
    names = [s["name"] for s in res["steps"]]
    assert names == ["build", "gpu_tests", "triton_tests", "bench_assign", "bench_postprocess", "bench_iou"]
    assert res["pass"] is False and all(t["ok"] is False for t in res["targets"].values())
    summary = (out / "summary.txt").read_text()
    again = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (out / "summary.txt").read_text() == summary
