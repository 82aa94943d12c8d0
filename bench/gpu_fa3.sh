#!/usr/bin/env bash
# Issue 15, FlashAttention-3's backward with correctly sized buffers, in ONE device call (about 7 minutes):
# FA3 / cuDNN timings at the DiT's self, text and CLIP attention, the GPU kernel tests, the stage-2 step with
# remat "attention" and "dots" (auto: FA3 for the self-attention, cuDNN for the short cross keys), and with
# --check the gradient check (package vs ours vs the XLA reference, bench.fa3_check).
#   run(command="bash bench/gpu_fa3.sh [--check]", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_wheels.sh   # the optional kernels + the shared device-call environment ($out, PYTHONPATH)
check=--no-check; [ "${1:-}" = "--check" ] && check=
timeout 200 python3 -m bench.fa3_check --time $check 2>&1 | tee "$out/fa3_check.log"
for remat in attention dots; do
  timeout 120 python3 -m bench.run --what stage2_step --kw stage2_step.remat=$remat --out "$out/s2_${remat}_fa3.json" \
    2>&1 | tee "$out/s2_${remat}_fa3.log" | tail -3
done
JAX_PLATFORMS=cuda timeout 200 python3 -m pytest -p no:xdist -q -p no:cacheprovider tests/test_attention_gpu.py \
  -k "small or fa3 or remat or mesh or auto" > "$out/gpu_tests.log" 2>&1; tail -8 "$out/gpu_tests.log"
