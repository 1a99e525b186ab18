#!/usr/bin/env bash
# Install, then run the whole test suite: the main process (on a GPU machine it runs the CUDA and Triton
# cases natively), then, without a GPU, the Triton cases (marked `triton`) in Triton's interpreter, in a
# process of their own (TRITON_INTERPRET=1 must be set before triton is imported).
# Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/install.sh || exit 1

reports=$(mktemp -d)
"$PY" -m pytest tests --junitxml="$reports/main.xml" "$@"
main_rc=$?
triton_rc=0
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    TRITON_INTERPRET=1 "$PY" -m pytest tests -m triton --junitxml="$reports/triton.xml" "$@"
    triton_rc=$?
fi

# One closing line for both runs.
"$PY" - "$reports"/*.xml <<'PY'
import sys
import xml.etree.ElementTree as ET

totals = dict(tests=0, failures=0, errors=0, skipped=0)
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"all: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
# pytest exit 5 = nothing collected: not a failure of the suite (e.g. a -k filter).
for rc in $main_rc $triton_rc; do
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
done
exit 0
