"""Gen3R training on NVIDIA H100 hosts (8 GPUs per host). Entries: ``stage1`` (geometry adapter).

    python launch/train.py --config configs/gpu_h100.py:stage1 --workdir /ckpt/gen3r_stage1 \
        --config.data.root=/data/gen3r \
        --config.model.vggt_checkpoint=/ckpt/vggt_1b --config.model.wan_vae_checkpoint=/ckpt/wan_vae
    # several hosts: add --distributed (SLURM) or --coordinator_address/--num_processes/--process_id

Stage 1 keeps the release's optimisation (base.py: AdamW 1e-5, cosine to 2e-6, clip 0.5, batch 1 per device x 8
accumulation -> 64 per optimiser step on one 8-GPU host; the release used 24 GPUs: 192) in bf16 compute with
float32 master weights. The adapter is small (~50M parameters), so the mesh is pure data parallel; VGGT's 24-block
stacks are rematerialised to fit 49 frames at 560x560 per device.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import base  # noqa: E402


def stage1():
  # batch: per optimiser micro-step, all devices of one host
  return base.release_stage1(batch_size=8, read_threads=8, mp_workers=4)


def get_config(entry: str = "stage1"):
  entries = {"stage1": stage1}
  if entry not in entries:
    raise ValueError(f"unknown entry {entry!r}; choose one of {sorted(entries)} (configs/gpu_h100.py:<entry>)")
  return entries[entry]()
