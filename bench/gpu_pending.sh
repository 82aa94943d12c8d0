#!/usr/bin/env bash
# The one-H200 measurements that issues 15 and 18 still lack, in TWO device calls (each under 10 minutes; every
# benchmark in its own process, each bounded by `timeout`, so a cut-short call keeps what it finished in $OUT):
#
#   run(command="bash bench/gpu_pending.sh accel", carry=[".whl"], timeout_s=600)
#   run(command="bash bench/gpu_pending.sh train", carry=[".whl", "bench/_torch_ref"], timeout_s=600)
#
# accel (issue 18): bench.accelerators at full size, 50 steps, the rows docs/sampling.md still lacks: fp8,
#   first_block+fp8, magcache (a schedule calibrated on the bench's own random weights), cfg. The bundle (~37 s)
#   and the cold exact reference (~91 s) come first.
# train (issue 15): a kernel profile of the stage-2 step (1.3B, remat "attention") with cuDNN's backward (`auto`)
#   and with FlashAttention-3's (`fa3`): where the FA3 step loses the ~320 ms its kernels save; the VGGT-1B forward
#   beside the official module (target 1.95 s); the GPU kernel tests (tests/test_attention_gpu.py).
#
# .whl/ holds the optional kernels (bench/gpu_wheels.sh says how to download them); bench/_torch_ref is made by
# bench/fetch_torch_ref.sh (without it the VGGT row has no PyTorch column). Fill the numbers into
# bench/RESULTS.md ("Issue 15") and docs/sampling.md ("Accelerators") with device and date.
set -uo pipefail
cd "$(dirname "$0")/.."
part="${1:-}"
case "$part" in
  accel)
    ACCEL_OPTIONS="${ACCEL_OPTIONS:-fp8,first_block+fp8,magcache,cfg}" exec bash bench/gpu_accelerators.sh ;;
  train) ;;
  *) echo "usage: bash bench/gpu_pending.sh accel|train" >&2; exit 2 ;;
esac
. bench/gpu_wheels.sh   # the optional kernels + the shared device-call environment ($out, PYTHONPATH)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true
date -u +"%Y-%m-%d %H:%M UTC"
for attn in auto fa3; do
  timeout 150 python3 -m bench.profile --what stage2_step --out "$out/prof_s2_$attn" --top 40 \
    --kw stage2_step.remat=attention --kw stage2_step.attention=$attn --kw stage2_step.repeats=2 \
    > "$out/prof_s2_$attn.txt" 2>&1; echo "== stage-2 profile, attention=$attn (rc $?)"; head -45 "$out/prof_s2_$attn.txt"
done
torch=()
if ls bench/_torch_ref/wheels/*.whl >/dev/null 2>&1 && [ -d bench/_torch_ref/gen3r ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/gen3r_torch_ref_site \
    bench/_torch_ref/wheels/*.whl && export GEN3R_TORCH_REF_SITE=/tmp/gen3r_torch_ref_site && torch=(--torch)
fi
timeout 150 python3 -m bench.run --what vggt "${torch[@]}" --out "$out/vggt.json" 2>&1 | tee "$out/vggt.log" | tail -4
JAX_PLATFORMS=cuda timeout 150 python3 -m pytest -p no:xdist -q -p no:cacheprovider tests/test_attention_gpu.py \
  > "$out/gpu_tests.log" 2>&1; tail -8 "$out/gpu_tests.log"
