#!/usr/bin/env bash
# Download the optional GPU kernels into .whl/ (git-ignored; carry it to the device machine, where
# bench/gpu_wheels.sh installs it): flash-attn3-jax (the [fa3] extra) and tokamax with its pure-python needs,
# as cp312 manylinux wheels for the GPU image's Python. Needs a package index (this machine's pip configuration).
#   bash bench/fetch_wheels.sh      # then: run(command="bash bench/gpu_....sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/\?\.whl/\?' .git/info/exclude 2>/dev/null || grep -qx '\.whl/\?' .gitignore 2>/dev/null \
  || echo ".whl/" >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  flash-attn3-jax==0.2.3 tokamax==0.0.17 einshape qwix immutabledict tensorboardx pydantic pydantic-core \
  annotated-types typing-inspection
ls .whl
du -sh .whl
