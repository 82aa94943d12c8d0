#!/usr/bin/env bash
# Source this on the GPU machine (from the repo root) to install the optional kernels carried in .whl/ (git-ignored):
#   flash-attn3-jax (the [fa3] extra) and tokamax with its pure-python needs. Made here with:
#   bash bench/fetch_wheels.sh (pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#     flash-attn3-jax==0.2.3 tokamax==0.0.17 einshape qwix immutabledict tensorboardx pydantic pydantic-core \
#     annotated-types typing-inspection)
# tokamax imports xprof (32 MiB, only for its own benchmarking helpers) at import time: a stub module stands in.
#   . bench/gpu_wheels.sh
# Also the device-call environment every bench/gpu_*.sh driver shares: $out (= $OUT, the folder that comes back),
# unbuffered Python, quiet TF/XLA logging, 90 % of the GPU for the one JAX process, the repo on PYTHONPATH.
out="${OUT:-/tmp/gen3r_bench_out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=0.90
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  if [ ! -d /tmp/site/xprof ]; then
    mkdir -p /tmp/site/xprof/cli
    touch /tmp/site/xprof/__init__.py /tmp/site/xprof/cli/__init__.py
    echo "get_kernel_stats_tool = None  # stub: tokamax's benchmarking helpers only" > /tmp/site/xprof/cli/tools.py
  fi
  python3 -c 'import flash_attn3_jax; print("flash_attn3_jax", flash_attn3_jax.__version__)' || true
  python3 -c 'import tokamax; print("tokamax", tokamax.__version__)' 2>&1 | tail -1 || true
else
  echo "no .whl/: optional kernels not installed"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
