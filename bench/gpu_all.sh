#!/usr/bin/env bash
# The benchmark suite of issue 10 in ONE device call (about 9 minutes; every benchmark in its own process).
#
#   bash bench/gpu_all.sh            # all: PyTorch refs + dit, vggt, vae, adapter, stage2_step, sample (10 steps)
#   bash bench/gpu_all.sh part1      # PyTorch refs + dit, vggt, vae, adapter            (~5 min)
#   bash bench/gpu_all.sh part2      # stage2_step + sample with the full 50 steps       (~6 min)
#   bash bench/gpu_all.sh part1 --size tiny --dtype float32   # extra arguments go to bench.run (CPU smoke)
#
# Device call (from the repo root; carry the ignored reference folder made by bench/fetch_torch_ref.sh):
#   run(command="bash bench/gpu_all.sh", carry=["bench/_torch_ref"], timeout_s=600)
# Results: $OUT/results.json (rows + device/driver/jax/date) and $OUT/log.txt; the table is printed last.
# BENCH_BUDGET_S (default 530) bounds the whole run: benchmarks that no longer fit are recorded as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
part="${1:-all}"
shift || true
out="${OUT:-/tmp/gen3r_bench_out}"
mkdir -p "$out"
budget="${BENCH_BUDGET_S:-530}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"   # one JAX process at a time
export TF_CPP_MIN_LOG_LEVEL=2
py="${PYTHON:-python3}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
"$py" -c 'import jax, torch; print("jax", jax.__version__, "| torch", torch.__version__, torch.version.cuda)'

torch_flag=()
if ls bench/_torch_ref/wheels/*.whl >/dev/null 2>&1 && [ -d bench/_torch_ref/gen3r ]; then
  site=/tmp/gen3r_torch_ref_site
  "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" bench/_torch_ref/wheels/*.whl \
    && export GEN3R_TORCH_REF_SITE="$site"
  torch_flag=(--torch)
else
  echo "bench/_torch_ref missing (run bench/fetch_torch_ref.sh here and carry it): no PyTorch reference"
fi

case "$part" in
  all)   what=dit,vggt,vae,adapter,stage2_step,sample; extra=(--kw sample.quick=true) ;;
  part1) what=dit,vggt,vae,adapter; extra=() ;;
  part2) what=stage2_step,sample; extra=(); torch_flag=() ;;
  *) echo "usage: bash bench/gpu_all.sh [all|part1|part2]" >&2; exit 2 ;;
esac

"$py" -m bench.run --what "$what" "${torch_flag[@]}" --out "$out/results.json" --deadline-s "$budget" \
  --timeout-s 420 --kw sample.cache_dir=/tmp/gen3r_bench_jax_cache "${extra[@]}" "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
