#!/usr/bin/env bash
# Install yolox_fast and what it needs into the current Python environment (idempotent).
#
# torch is taken as already installed when importable; otherwise torch 2.14.1 is installed (a CUDA
# build on Linux x86-64; the C++ CPU ops and, where nvcc exists, the CUDA ops are compiled against it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install "torch==2.14.1" "torchvision==0.29.1"
fi
# Build requirements first: the extension is built against the torch above (--no-build-isolation).
"$PY" -m pip install --quiet setuptools wheel ninja pybind11
"$PY" -m pip install --quiet -e ".[dev]" --no-build-isolation
"$PY" - <<'PY'
import torch, yolox_fast.ops._extension as ext
print(f"yolox_fast installed: torch {torch.__version__}, C++ ops {'yes' if ext.extension_loaded() else 'NO'}, "
      f"CUDA ops {'yes' if ext.cuda_built() else 'no'}, GPU {'yes' if torch.cuda.is_available() else 'no'}")
PY
