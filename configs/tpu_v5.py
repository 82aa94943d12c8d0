"""Gen3R training on TPU v5e / v5p slices. Entries: ``stage1`` (geometry adapter).

    python launch/train.py --config configs/tpu_v5.py:stage1 --workdir gs://bucket/gen3r_stage1 --distributed \
        --config.data.records=gs://bucket/gen3r_records \
        --config.model.vggt_checkpoint=gs://bucket/vggt_1b --config.model.wan_vae_checkpoint=gs://bucket/wan_vae

Run the same command on every host of the slice (``--distributed`` calls ``jax.distributed.initialize()``, which
finds the TPU topology itself). Stage 1 keeps the release's optimisation (base.py); the batch is one clip per
chip, data parallel over the whole slice (32 chips x 8 accumulation = 256 clips per optimiser step on a v5e-32),
bf16 compute, VGGT rematerialised.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import base  # noqa: E402


def stage1():
  # batch: one clip per chip of a v5e-32; scale with the slice
  return base.release_stage1(batch_size=32, read_threads=16, mp_workers=8)


def get_config(entry: str = "stage1"):
  entries = {"stage1": stage1}
  if entry not in entries:
    raise ValueError(f"unknown entry {entry!r}; choose one of {sorted(entries)} (configs/tpu_v5.py:<entry>)")
  return entries[entry]()
