#!/usr/bin/env bash
# Issue 18 on the GPU in ONE device call (about 9 minutes): bench.accelerators at full size, 50 steps, the most
# important options first (rows are written after each, so a cut-short run keeps what it finished).
#   run(command="bash bench/gpu_accelerators.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_wheels.sh   # the optional kernels + the shared device-call environment ($out, PYTHONPATH)
timeout "${ACCEL_TIMEOUT_S:-520}" python3 -m bench.accelerators --options "${ACCEL_OPTIONS:-first_block,fp8,first_block+fp8,magcache,cfg}" \
  --out "$out/accelerators_h200.json" 2>&1 | grep -v "^\[denoise" | tail -40
