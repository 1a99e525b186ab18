#!/usr/bin/env bash
# Every CUDA and Triton check in one run of at most ~10 minutes, for a machine with a GPU (the dev/CI
# machines have none):
#
#   bash scripts/gpu_check.sh          # PYTHON (default python3), OUT (default gpu_results/<time>), WHEELS
#
# 1. builds yolox_fast._C with CUDA for the present GPU only (TORCH_CUDA_ARCH_LIST from its compute
#    capability, all cores), ptxas figures per kernel in build.log;
# 2. runs every gpu-marked test, then every Triton test compiled natively (tests/triton_ops), once each;
# 3. runs each GPU benchmark group once (YOLOX_FAST_BENCH_GPU_ONLY=1: no CPU providers; the reference on the
#    GPU only at the SimOTA target shape, for the ratio);
# 4. if time is left: the training-step benchmark (yolox-s 640, B=16, AMP: official-style, fast, model-only),
#    then the Triton kernels' registers / spills / shared memory for this GPU (compile_specs);
# 5. checks the targets: SimOTA B=16 G=50 A=8400 under 1 ms (CUDA events), no host sync, >= 50x the
#    reference, for the CUDA op and Triton; postprocess B=16 at conf 0.25 under 0.5 ms (test_gpu_target);
#    both on compute capability >= 9.0; writes results.json and summary.txt.
#
# Output, 8 files in $OUT: summary.txt (short), results.json (environment, steps, targets), build.log,
# tests.log, bench.log, bench_assign.json, bench_postprocess.json, bench_iou.json. Every step runs under a
# time limit within the overall budget (GPU_CHECK_BUDGET_S, default 570 s); the exit status is 1 if any
# step or target failed. No internet needed: pytest / pytest-benchmark, if missing, are installed from
# the wheels in $WHEELS (default shared/wheels) when that folder exists.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -z "${OUT:-}" ]; then OUT="gpu_results/$(date +%Y%m%d-%H%M%S)"; fi
export OUT
mkdir -p "$OUT"
if [ -e "$OUT/summary.txt" ]; then echo "gpu_check: $OUT already holds a run; set OUT to a new folder" >&2; exit 2; fi
BUDGET=${GPU_CHECK_BUDGET_S:-570}
START=$SECONDS
STEPS=$(mktemp)  # name|exit|seconds, one line per step (read by the summary)
unset TRITON_INTERPRET  # compiled Triton on the GPU, not the interpreter
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
status=0

# step NAME LOG LIMIT_S CMD...: run CMD with its output appended to $OUT/LOG, within LIMIT_S and the budget
step() {
  local name="$1" log="$OUT/$2" limit="$3"; shift 3
  local left=$((BUDGET - (SECONDS - START) - 20))
  if [ "$left" -lt 30 ]; then
    echo "== $name: skipped (out of time)" | tee -a "$log"
    if [ "${OPTIONAL:-0}" = 1 ]; then return; fi
    echo "$name|skipped: out of time|0" >>"$STEPS"; status=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "$name|$rc|$((SECONDS - t0))" >>"$STEPS"
  echo "   exit $rc after $((SECONDS - t0))s" | tee -a "$log"
  [ $rc -eq 0 ] || status=1
}

# Test tools from local wheels when the image lacks them (no internet on the GPU machine).
WHEELS=${WHEELS:-shared/wheels}
if ! "$PY" -c "import pytest, pytest_benchmark" 2>/dev/null && [ -d "$WHEELS" ]; then
  step wheels build.log 120 "$PY" -m pip install --no-index --find-links "$WHEELS" pytest pytest-benchmark
fi

ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>>"$OUT/build.log")
echo "GPU compute capability: ${ARCH:-none}" | tee -a "$OUT/build.log"

# 1. Build for this GPU only, all cores; YOLOX_FAST_CUDA=1 makes a missing CUDA build an error.
step build build.log 300 env YOLOX_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST="${ARCH:-9.0}" MAX_JOBS="$(nproc)" \
  "$PY" setup.py build_ext --inplace

# 2. Tests, each once: gpu-marked tests outside tests/triton_ops, then all of tests/triton_ops natively.
step gpu_tests tests.log 180 "$PY" -m pytest -m gpu tests --ignore=tests/triton_ops -q -rfEs -p no:cacheprovider
step triton_tests tests.log 180 "$PY" -m pytest tests/triton_ops -q -rfEs -p no:cacheprovider

# 3. Benchmarks, each GPU group once.
export YOLOX_FAST_BENCH_GPU_ONLY=1
BENCH=(--benchmark-only -q -p no:cacheprovider --benchmark-columns=min,median,mean,rounds)
step bench_assign bench.log 150 "$PY" -m pytest benchmarks/bench_assign.py "${BENCH[@]}" \
  --benchmark-json="$OUT/bench_assign.json"
step bench_postprocess bench.log 120 "$PY" -m pytest benchmarks/bench_postprocess.py -m gpu "${BENCH[@]}" \
  --benchmark-json="$OUT/bench_postprocess.json"
step bench_iou bench.log 60 "$PY" -m pytest benchmarks/bench_iou.py "${BENCH[@]}" \
  --benchmark-json="$OUT/bench_iou.json"

# 4. If time is left: the training step (yolox-s 640, B=16, AMP; official-style vs fast vs model-only), its
#    JSON folded into results.json (8 files at most in $OUT).
TRAIN_JSON=$(mktemp -u)
export TRAIN_JSON
OPTIONAL=1 step bench_train_step bench.log 150 "$PY" -m pytest benchmarks/bench_train_step.py -m gpu "${BENCH[@]}" \
  --benchmark-json="$TRAIN_JSON"

# 5. Triton kernel resources for this GPU (registers / spills / shared memory), only if time is left.
CC=${ARCH/./}
OPTIONAL=1 step triton_resources tests.log 90 "$PY" -m yolox_fast.kernels.compile_specs --arch "${CC:-90}" --jobs 8

# 6. Targets and summary (always runs).
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
failed = [s["name"] for s in steps if s["exit"] != "0"]
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
