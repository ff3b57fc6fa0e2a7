#!/usr/bin/env bash
# The trainer's GPU paths in a few minutes (LoRA, QLoRA, ZeRO-3), as JSON on stdout: see bench/gpu_check.py.
# On a machine without a GPU (or with --cpu) it runs the CPU fallback that tests/trainer/test_gpu_check.py runs.
#   bench/gpu_check.sh [--cpu] [--steps N] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 600 "$PY" bench/gpu_check.py "$@"
