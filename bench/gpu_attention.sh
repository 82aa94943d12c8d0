#!/usr/bin/env bash
# The attention work of issue 15 in ONE device call (about 9 minutes): the GPU kernel tests, the DiT forward
# next to the official PyTorch module, the stage-2 step under remat "attention" and "dots", and the DiT forward
# with cuDNN GEMM fusion level 2.
#   run(command="bash bench/gpu_attention.sh", carry=[".whl", "bench/_torch_ref"], timeout_s=600)
# .whl/: the optional kernels (bench/gpu_wheels.sh says how to make it); bench/_torch_ref: bench/fetch_torch_ref.sh.
# Kernel table: python -m bench.run --what attention_kernels; FA3 gradient check: python -m bench.fa3_check.
set -uo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_wheels.sh   # the optional kernels + the shared device-call environment ($out, PYTHONPATH)
if ls bench/_torch_ref/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/gen3r_torch_ref_site \
    bench/_torch_ref/wheels/*.whl && export GEN3R_TORCH_REF_SITE=/tmp/gen3r_torch_ref_site
fi
JAX_PLATFORMS=cuda timeout 210 python3 -m pytest -p no:xdist -q -p no:cacheprovider tests/test_attention_gpu.py 2>&1 \
  | tee "$out/gpu_tests.log" | tail -15
timeout 200 python3 -m bench.run --what dit --torch --out "$out/dit_torch.json" 2>&1 | tee "$out/dit_torch.log" | tail -4
for remat in attention dots; do
  timeout 130 python3 -m bench.run --what stage2_step --kw stage2_step.remat=$remat --out "$out/s2_$remat.json" 2>&1 \
    | tee "$out/s2_$remat.log" | tail -3
done
XLA_FLAGS=--xla_gpu_cudnn_gemm_fusion_level=2 timeout 90 python3 -m bench.run --what dit --out "$out/dit_gemmfusion2.json" \
  2>&1 | tail -3
