"""Gen3R training on NVIDIA H200 hosts (8 GPUs per host, 141 GB each). Entries: ``stage1`` (geometry adapter),
``stage2_1p3b`` and ``stage2_14b`` (the DiT).

    python launch/train.py --config configs/gpu_h200.py:stage2_1p3b --workdir /ckpt/gen3r_dit \
        --config.data.preencoded=/data/gen3r_preencoded --config.model.dit_checkpoint=/ckpt/dit_1p3b
    python launch/train.py --config configs/gpu_h200.py --workdir /tmp/dry --dry_run   # memory of both DiT entries

The settings measured best on one H200 (bench/RESULTS.md, "Issue 15", 2026-12-04, 1.3B, one 49-frame 560² clip per
GPU): remat ``attention`` 2.150 s per step, 38.7 % MFU, 59.9 GiB; ``dots`` (fits on the H200, not on the H100) is
slower, 2.422 s at 76.8 GiB; ``full`` 2.545 s. Attention ``auto``: under differentiation it runs cuDNN's forward
and backward at every head dim (``fa3_fwd`` at head dim 128): the step with FlashAttention-3's forward and
(fixed) backward, ``attention="fa3"``, measured slower, 2.29-2.32 s, although its kernels alone are faster.
Everything else (optimisation, batch 192 clips per optimiser step, the 14B's
fsdp x context mesh) is the H100 file's: ``configs/gpu_h100.py``.
"""

from configs import base, gpu_h100

H200 = dict(platform="gpu", hbm_gib=141.0)


def stage1():
  return gpu_h100.stage1()


def stage2_1p3b():
  return base.release_stage2("1.3b", hardware=dict(H200, name="1 x 8 H200", num_devices=8),
                             mesh=dict(data=1, fsdp=-1, context=1, tensor=1), batch_size=8, grad_accum_steps=24,
                             remat="attention", attention="auto")


def stage2_14b():
  return base.release_stage2("14b", hardware=dict(H200, name="2 x 8 H200", num_devices=16),
                             mesh=dict(data=1, fsdp=-1, context=2, tensor=1), batch_size=8, grad_accum_steps=24,
                             remat="full", attention="auto")


ENTRIES = {"stage1": stage1, "stage2_1p3b": stage2_1p3b, "stage2_14b": stage2_14b}


def get_config(entry: str = "stage1"):
  if entry not in ENTRIES:
    raise ValueError(f"unknown entry {entry!r}; choose one of {sorted(ENTRIES)} (configs/gpu_h200.py:<entry>)")
  return ENTRIES[entry]()
