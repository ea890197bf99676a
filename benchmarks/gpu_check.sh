#!/usr/bin/env bash
# Record on the GPU in exact mode, verify on the CPU; print the hint fraction and the step overhead.
# One command for whoever has an accelerator machine; under 5 minutes (the timeout below says so).
# Without a GPU it runs the CPU fallback path. Run from anywhere: bash benchmarks/gpu_check.sh [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec timeout 290 "$PYTHON" benchmarks/gpu_check.py "$@"
