#!/usr/bin/env bash
# Prepare bench/_torch_ref/ (git-ignored) for `bench.run --torch` / `bench.torch_ref`, on a machine with network:
#   bench/_torch_ref/gen3r/     the official Gen3R python package (models, pipeline, ...), copied read-only
#   bench/_torch_ref/wheels/    pure-python wheels the GPU image lacks: diffusers 0.33.1 (the official pin) and
#                               huggingface_hub 0.30.2 (used only where the machine has none: torch_ref.py
#                               appends the unpacked wheels to sys.path, so the machine's own packages win)
# Usage: bash bench/fetch_torch_ref.sh [path/to/official/Gen3R checkout]   (default /work/ref/gen3r)
# The folder stays well under 10 MiB; carry it to the GPU machine as `bench/_torch_ref`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:-/work/ref/gen3r}"
dst="$here/_torch_ref"
[ -d "$src/gen3r/models" ] || { echo "error: $src/gen3r/models not found (pass the official Gen3R checkout)" >&2; exit 2; }
rm -rf "$dst/gen3r"
mkdir -p "$dst/wheels"
cp -r "$src/gen3r" "$dst/gen3r"
find "$dst/gen3r" -name __pycache__ -prune -exec rm -rf {} +
cp "$src/LICENSE" "$dst/LICENSE.gen3r" 2>/dev/null || true
(cd "$src" && git rev-parse HEAD 2>/dev/null || echo unknown) > "$dst/SOURCE_COMMIT"
py="${PYTHON:-python3}"
"$py" -m pip download -q --no-deps --only-binary=:all: -d "$dst/wheels" diffusers==0.33.1 huggingface_hub==0.30.2
ls "$dst/wheels"
du -sh "$dst"
