#!/usr/bin/env bash
# Every CUDA and Triton check in one run that fits in half of a GPU window (the dev/CI machines have no GPU):
#
#   bash scripts/gpu_check.sh            # first run: ~6 minutes at most (GPU_CHECK_BUDGET_S, default 360 s)
#   bash scripts/gpu_check.sh --quick    # rerun after a fix: incremental build, last run's failed tests, targets
#                                        # (default budget 240 s); PYTHON, OUT (default gpu_results/<time>), WHEELS
#
# Without a CUDA device it says "no CUDA device: nothing to check" and exits 2, before building anything.
# The steps, most needed first; each runs under a time limit within the budget, and the optional ones (last)
# only if time is left:
# 1. build yolox_fast._C with CUDA for the present GPU only (TORCH_CUDA_ARCH_LIST from its compute
#    capability, all cores; ninja rebuilds only what changed), ptxas figures per kernel in build.log;
# 2. gpu_tests: every test marked gpu or triton, natively on the GPU, except the slow ones (-m "not slow");
#    references are computed at small shapes, or by the C++ CPU op (itself tested against the reference);
# 3. the two target benchmarks at their target shapes (YOLOX_FAST_BENCH_GPU_ONLY=1): SimOTA B=16 G=50 A=8400
#    (CUDA op and Triton, the reference on the GPU for the ratio), postprocess B=16 at conf 0.25;
# 4. optional: the slow gpu / triton tests, the other SimOTA shapes, the IoU benchmark, the training step
#    (yolox-s 640, B=16, AMP: official-style, fast, model-only), the Triton kernels' resources for this GPU;
# 5. checks the targets (SimOTA under 1 ms, no host sync, >= 50x the reference; postprocess under 0.5 ms, on
#    compute capability >= 9.0); writes results.json and summary.txt.
#
# Triton's compiled kernels and pytest's record of failed tests are kept in gpu_results/.cache, so that a rerun
# on the same machine neither recompiles unchanged kernels nor reruns what passed (--quick).
# Output, 8 files in $OUT: summary.txt (short), results.json (environment, steps, targets), build.log,
# tests.log, bench.log, bench_assign.json, bench_postprocess.json, bench_iou.json. The exit status is 1 if any
# step that ran, or any target, failed, 2 for bad usage or no GPU. No internet needed: pytest /
# pytest-benchmark, if missing, are installed from the wheels in $WHEELS (default shared/wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (usage: bash scripts/gpu_check.sh [--quick])" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
# GPU_CHECK_WITHOUT_GPU=1 runs the bookkeeping on a machine without a GPU (tests/infrastructure uses it).
if [ "${GPU_CHECK_WITHOUT_GPU:-0}" != 1 ] &&
   ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no CUDA device: nothing to check" >&2
  exit 2
fi
if [ -z "${OUT:-}" ]; then OUT="gpu_results/$(date +%Y%m%d-%H%M%S)"; fi
export OUT
mkdir -p "$OUT"
if [ -e "$OUT/summary.txt" ]; then echo "gpu_check: $OUT already holds a run; set OUT to a new folder" >&2; exit 2; fi
if [ "$QUICK" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET_S:-240}; else BUDGET=${GPU_CHECK_BUDGET_S:-360}; fi
START=$SECONDS
STEPS=$(mktemp)  # name|exit|seconds, one line per step (read by the summary)
unset TRITON_INTERPRET  # compiled Triton on the GPU, not the interpreter
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
CACHE=${GPU_CHECK_CACHE:-gpu_results/.cache}
mkdir -p "$CACHE"
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/$CACHE/triton}
status=0

# step NAME LOG LIMIT_S CMD...: run CMD with its output appended to $OUT/LOG, within LIMIT_S and the budget.
# OPTIONAL=1: skipped without failing when the time is gone.
step() {
  local name="$1" log="$OUT/$2" limit="$3"; shift 3
  local left=$((BUDGET - (SECONDS - START) - 15))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped (out of time)" | tee -a "$log"
    if [ "${OPTIONAL:-0}" = 1 ]; then echo "$name|skipped (optional)|0" >>"$STEPS"; return; fi
    echo "$name|skipped: out of time|0" >>"$STEPS"; status=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  [ $rc -eq 5 ] && rc=0  # pytest: nothing collected (e.g. --quick with no failure left to rerun)
  echo "$name|$rc|$((SECONDS - t0))" >>"$STEPS"
  echo "   exit $rc after $((SECONDS - t0))s" | tee -a "$log"
  [ $rc -eq 0 ] || status=1
}

# Test tools from local wheels when the image lacks them (no internet on the GPU machine).
WHEELS=${WHEELS:-shared/wheels}
if ! "$PY" -c "import pytest, pytest_benchmark" 2>/dev/null && [ -d "$WHEELS" ]; then
  step wheels build.log 60 "$PY" -m pip install --no-index --find-links "$WHEELS" pytest pytest-benchmark
fi

ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>>"$OUT/build.log")
echo "GPU compute capability: ${ARCH:-none}" | tee -a "$OUT/build.log"

# 1. Build for this GPU only, all cores; YOLOX_FAST_CUDA=1 makes a missing CUDA build an error.
step build build.log 240 env YOLOX_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST="${ARCH:-9.0}" MAX_JOBS="$(nproc)" \
  "$PY" setup.py build_ext --inplace

# 2. Tests, each once, natively: CUDA ops and Triton kernels (one process: Triton compiles, no interpreter).
#    --quick: only what failed in the last run (pytest's cache in $CACHE).
PYTEST=("$PY" -m pytest tests -q -rfEs -o cache_dir="$CACHE/pytest")
if [ "$QUICK" = 1 ]; then LAST=(--last-failed --last-failed-no-failures none); else LAST=(); fi
step gpu_tests tests.log 150 "${PYTEST[@]}" -m "(gpu or triton) and not slow" "${LAST[@]}"

# 3. The target benchmarks, at the target shapes only.
export YOLOX_FAST_BENCH_GPU_ONLY=1
BENCH=(--benchmark-only -q -p no:cacheprovider --benchmark-columns=min,median,mean,rounds)
step bench_assign bench.log 60 "$PY" -m pytest benchmarks/bench_assign.py -k "B16-A8400-G50" "${BENCH[@]}" \
  --benchmark-json="$OUT/bench_assign.json"
step bench_postprocess bench.log 45 "$PY" -m pytest benchmarks/bench_postprocess.py -m gpu "${BENCH[@]}" \
  --benchmark-json="$OUT/bench_postprocess.json"

# 4. Optional, if time is left (never in --quick): the slow tests, the IoU benchmark, the training step (its
#    JSON folded into results.json: 8 files at most in $OUT), the Triton kernels' resources for this GPU.
TRAIN_JSON=$(mktemp -u)
export TRAIN_JSON
if [ "$QUICK" = 0 ]; then
  OPTIONAL=1 step slow_tests tests.log 120 "${PYTEST[@]}" -m "(gpu or triton) and slow"
  OPTIONAL=1 step bench_iou bench.log 40 "$PY" -m pytest benchmarks/bench_iou.py "${BENCH[@]}" \
    --benchmark-json="$OUT/bench_iou.json"
  OPTIONAL=1 step bench_train_step bench.log 120 "$PY" -m pytest benchmarks/bench_train_step.py -m gpu "${BENCH[@]}" \
    --benchmark-json="$TRAIN_JSON"
  CC=${ARCH/./}
  OPTIONAL=1 step triton_resources tests.log 60 "$PY" -m yolox_fast.kernels.compile_specs --arch "${CC:-90}" \
    --jobs "$(nproc)"
fi

# 5. Targets and summary (always runs).
"$PY" - "$STEPS" "$((SECONDS - START))" <<'PY' >>"$OUT/summary.txt" 2>&1
import json, os, platform, subprocess, sys
out = os.environ["OUT"]
steps = [dict(zip(("name", "exit", "seconds"), line.strip().split("|"))) for line in open(sys.argv[1]) if line.strip()]
res = dict(steps=steps, elapsed_s=int(sys.argv[2]), targets={}, figures={})
try:
    import torch
    res["env"] = dict(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(),
                      capability=list(torch.cuda.get_device_capability()), python=platform.python_version())
    import triton
    res["env"]["triton"] = triton.__version__
except Exception as exc:  # noqa: BLE001
    res.setdefault("env", {})["error"] = repr(exc)
cap = tuple(res.get("env", {}).get("capability", (0, 0)))
sys.path.insert(0, ".")
from benchmarks.gpu_targets import (SIMOTA_TARGET_MS, SIMOTA_TARGET_RATIO, SIMOTA_TARGET_SHAPE,  # noqa: E402
                                    gpu_target_applies)
applies = gpu_target_applies(cap)

def load(name):
    path = os.path.join(out, name)
    return json.load(open(path))["benchmarks"] if os.path.isfile(path) else []

rows = {}
for r in load("bench_assign.json"):
    s, e = r["extra_info"].get("shape", {}), r["extra_info"]
    rows[(e.get("provider"), s.get("B"), s.get("A"), s.get("G"))] = r
    res["figures"][f"simota {e.get('provider')} B={s.get('B')} A={s.get('A')} G={s.get('G')}"] = dict(
        median_ms=round(r["stats"]["median"] * 1e3, 4), cuda_event_ms=e.get("cuda_event_ms"),
        host_syncs=e.get("host_syncs"), peak_extra_mb=e.get("peak_extra_mb"))
b, a, g = SIMOTA_TARGET_SHAPE
ref = rows.get(("reference-cuda", b, a, g))
for p in ("cuda", "triton"):
    r = rows.get((p, b, a, g))
    if r is None:
        res["targets"][f"simota {p}"] = dict(ok=False, why="not measured")
        continue
    ms, syncs = r["extra_info"].get("cuda_event_ms"), r["extra_info"].get("host_syncs")
    ratio = ref["stats"]["median"] / r["stats"]["median"] if ref else None
    ok = ms is not None and ms < SIMOTA_TARGET_MS and syncs == 0 and ratio is not None and ratio >= SIMOTA_TARGET_RATIO
    res["targets"][f"simota {p}"] = dict(ok=ok if applies else None, cuda_event_ms=ms, host_syncs=syncs,
                                         ratio_vs_reference=None if ratio is None else round(ratio, 1))
for r in load("bench_postprocess.json"):
    e = r["extra_info"]
    key = f"postprocess {r['group']} {r['name']}"
    res["figures"][key] = dict(median_ms=round(r["stats"]["median"] * 1e3, 4), peak_extra_mb=e.get("peak_extra_mb"))
    if "target_s" in e:
        res["targets"]["postprocess cuda B=16 conf 0.25"] = dict(
            ok=(e["median_s"] < e["target_s"]) if applies else None, median_ms=round(e["median_s"] * 1e3, 4))
if "postprocess cuda B=16 conf 0.25" not in res["targets"]:
    res["targets"]["postprocess cuda B=16 conf 0.25"] = dict(ok=False, why="not measured")
for r in load("bench_iou.json"):
    res["figures"][f"iou {r['name']}"] = dict(median_ms=round(r["stats"]["median"] * 1e3, 4))
if os.path.isfile(os.environ.get("TRAIN_JSON", "")):
    for r in json.load(open(os.environ["TRAIN_JSON"]))["benchmarks"]:
        res["figures"][f"train-step {r['name']}"] = dict(median_ms=round(r["stats"]["median"] * 1e3, 2),
                                                         **{k: v for k, v in r["extra_info"].items()
                                                            if isinstance(v, (int, float, str))})
failed = [s["name"] for s in steps if s["exit"] not in ("0", "skipped (optional)")]
missed = [k for k, v in res["targets"].items() if v.get("ok") is False]
res["pass"] = not failed and not missed
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
print(f"gpu_check on {res.get('env', {}).get('gpu')} (capability {cap}, torch {res.get('env', {}).get('torch')}, "
      f"triton {res.get('env', {}).get('triton')}), {res['elapsed_s']} s")
for s in steps:
    print(f"  step {s['name']:18s} exit {s['exit']:>4s}  {s['seconds']:>4s} s")
for k, v in res["targets"].items():
    state = {True: "MET", False: "MISSED", None: "recorded (target applies from capability 9.0)"}[v.get("ok")]
    print(f"  target {k}: {state} {json.dumps({x: y for x, y in v.items() if x != 'ok'})}")
print("overall:", "PASS" if res["pass"] else "FAIL")
sys.exit(0 if res["pass"] else 1)
PY
[ $? -eq 0 ] || status=1
cat "$OUT/summary.txt"
rm -f "$STEPS" "$TRAIN_JSON"
exit $status
