"""Gen3R training on NVIDIA H100 hosts (8 GPUs per host). Entries: ``stage1`` (geometry adapter), ``stage2_1p3b``
and ``stage2_14b`` (the DiT).

    python launch/train.py --config configs/gpu_h100.py:stage1 --workdir /ckpt/gen3r_stage1 \
        --config.data.root=/data/gen3r \
        --config.model.vggt_checkpoint=/ckpt/vggt_1b --config.model.wan_vae_checkpoint=/ckpt/wan_vae
    python launch/train.py --config configs/gpu_h100.py:stage2_1p3b --workdir /ckpt/gen3r_dit \
        --config.data.preencoded=/data/gen3r_preencoded --config.model.dit_checkpoint=/ckpt/dit_1p3b
    python launch/train.py --config configs/gpu_h100.py --workdir /tmp/dry --dry_run   # memory of both DiT entries
    # several hosts: add --distributed (SLURM) or --coordinator_address/--num_processes/--process_id

Stage 1 keeps the release's optimisation (base.py: AdamW 1e-5, cosine to 2e-6, clip 0.5, batch 1 per device x 8
accumulation -> 64 per optimiser step on one 8-GPU host; the release used 24 GPUs: 192) in bf16 compute with
float32 master weights. The adapter is small (~50M parameters), so the mesh is pure data parallel; VGGT's 24-block
stacks are rematerialised to fit 49 frames at 560x560 per device.
Stage 2 keeps the release's DiT optimisation (``base.release_stage2``) and 192 clips per optimiser step, cuDNN
attention, every block rematerialised:

* ``stage2_1p3b``: one host, FSDP over its 8 GPUs, 1 clip per GPU x 24 accumulation steps, remat ``attention``
  (keeps each block's attention outputs and projections, ~59 GiB on one H100: 2.20 s per clip instead of 2.59 s
  with ``full``, bench/RESULTS.md); ``--config.model.dit.remat=full`` for 2 clips per GPU.
* ``stage2_14b``: two hosts (16 GPUs), FSDP 8 x context 2 (each clip's 31,850 tokens over two GPUs, all-gather
  context attention), 8 clips x 24 accumulation steps.
Online encoding also needs the frozen models (``--config.model.{vggt,adapter,wan_vae,text_encoder,clip}_checkpoint``
and ``model.tokenizer``); ``data.preencoded`` drops them.
"""

from configs import base

H100 = dict(platform="gpu", hbm_gib=80.0)


def stage1():
  # batch: per optimiser micro-step, all devices of one host
  return base.release_stage1(batch_size=8, read_threads=8, mp_workers=4)


def stage2_1p3b():
  return base.release_stage2("1.3b", hardware=dict(H100, name="1 x 8 H100", num_devices=8),
                             mesh=dict(data=1, fsdp=-1, context=1, tensor=1), batch_size=8, grad_accum_steps=24,
                             remat="attention")


def stage2_14b():
  return base.release_stage2("14b", hardware=dict(H100, name="2 x 8 H100", num_devices=16),
                             mesh=dict(data=1, fsdp=-1, context=2, tensor=1), batch_size=8, grad_accum_steps=24)


ENTRIES = {"stage1": stage1, "stage2_1p3b": stage2_1p3b, "stage2_14b": stage2_14b}


def get_config(entry: str = "stage1"):
  if entry not in ENTRIES:
    raise ValueError(f"unknown entry {entry!r}; choose one of {sorted(ENTRIES)} (configs/gpu_h100.py:<entry>)")
  return ENTRIES[entry]()
