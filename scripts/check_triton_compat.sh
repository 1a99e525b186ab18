#!/usr/bin/env bash
# The oldest supported torch / Triton pair, checked on the CPU: every Triton case in Triton's interpreter.
#
#   bash scripts/check_triton_compat.sh        # TORCH_VERSION (2.11.0), TRITON_VERSION (3.6.0), VENV, PYTHON
#
# Makes (once) a virtual environment in $VENV (default .venv-torch<version>) with torch, triton, NumPy 2 and
# the test tools from PyPI (about 3 GB: torch's Linux wheels pull the CUDA libraries), then runs
# `TRITON_INTERPRET=1 python -m pytest -m triton` over the op and kernel test files (every Triton case is
# there; the others need packages this environment does not install). yolox_fast._C is built for the main
# torch and does not load into another: the compiled ops' cases skip, the Triton ones run. Exit: pytest's.
set -uo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
TRITON_VERSION=${TRITON_VERSION:-3.6.0}
VENV=${VENV:-.venv-torch$TORCH_VERSION}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || exit 1
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" "triton==$TRITON_VERSION" "numpy>=2" pytest \
    opencv-python-headless pyyaml pillow tqdm || exit 1
fi
"$VENV/bin/python" -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
TRITON_INTERPRET=1 PYTHONPATH=".:tests${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m pytest -m triton -q \
  -p no:cacheprovider -W "ignore::RuntimeWarning" tests/test_ops_*.py tests/test_kernels_*.py "$@"
