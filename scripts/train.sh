#!/usr/bin/env bash
# Install, then run the main job: `python -m yolox_fast.train` (with no arguments it trains
# YOLOX-Nano on the built-in synthetic dataset on the CPU and evaluates it). Arguments go to the trainer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m yolox_fast.train "$@"
