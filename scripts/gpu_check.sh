#!/usr/bin/env bash
# Every GPU check in one call: build with CUDA, run the CUDA and Triton tests and the benchmarks.
#
#   bash scripts/gpu_check.sh            # results in ./gpu_results (or $OUT)
#
# Needs a CUDA GPU, nvcc and the dev dependencies (pytest, pytest-benchmark, triton).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
status=0
run() {  # run a step, log it, remember a failure, go on with the next step
  local name="$1"; shift
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc" | tee -a "$OUT/summary.txt"
  tail -n 5 "$OUT/$name.log" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || status=1
}

{ nvidia-smi; python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'gpu', torch.cuda.get_device_name())"; } >"$OUT/env.txt" 2>&1

run build env YOLOX_FAST_CUDA=1 python setup.py build_ext --inplace

# --- SimOTA (issue 3) ---------------------------------------------------------------------------
run simota_gpu_tests python -m pytest -m gpu tests/test_ops_simota.py -v -rs
run simota_triton_tests python -m pytest tests/triton/test_simota_triton.py -v -rs
run simota_bench python -m pytest benchmarks/bench_assign.py --benchmark-only \
  --benchmark-json="$OUT/bench_assign.json" --benchmark-columns=min,median,mean,rounds
# the GPU target: B=16, G=50, A=8400 under 1 ms on an H100, no host sync, >= 50x the reference
run simota_target python - <<'PY'
import json, os, sys
rows = json.load(open(os.path.join(os.environ.get("OUT", "gpu_results"), "bench_assign.json")))["benchmarks"]
get = {(r["extra_info"]["provider"], r["extra_info"]["shape"]["B"], r["extra_info"]["shape"]["G"],
        r["extra_info"]["shape"]["A"]): r for r in rows}
ref = get.get(("reference-cuda", 16, 50, 8400))
ok = True
for p in ("cuda", "triton"):
    r = get.get((p, 16, 50, 8400))
    if r is None:
        print(p, "missing"); ok = False; continue
    ms = r["extra_info"].get("cuda_event_ms")
    ratio = ref["stats"]["median"] / r["stats"]["median"] if ref else float("nan")
    print(f"{p}: {ms} ms (CUDA events), median {r['stats']['median'] * 1e3:.3f} ms, "
          f"host_syncs={r['extra_info'].get('host_syncs')}, {ratio:.0f}x the reference")
    ok &= ms is not None and ms < 1.0 and r["extra_info"].get("host_syncs") == 0 and ratio >= 50
sys.exit(0 if ok else 1)
PY

# all gpu-marked tests of the project, and every Triton test on the GPU
run gpu_tests python -m pytest -m gpu tests -rs
run triton_tests python -m pytest tests/triton -rs
run benchmarks python -m pytest benchmarks --benchmark-only --benchmark-json="$OUT/benchmarks.json"

echo "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL)" | tee -a "$OUT/summary.txt"
exit $status
