"""Gen3R training on TPU v5e / v5p slices. Entries: ``stage1`` (geometry adapter), ``stage2_1p3b`` and
``stage2_14b`` (the DiT).

    python launch/train.py --config configs/tpu_v5.py:stage1 --workdir gs://bucket/gen3r_stage1 --distributed \
        --config.data.records=gs://bucket/gen3r_records \
        --config.model.vggt_checkpoint=gs://bucket/vggt_1b --config.model.wan_vae_checkpoint=gs://bucket/wan_vae
    python launch/train.py --config configs/tpu_v5.py:stage2_1p3b --workdir gs://bucket/gen3r_dit --distributed \
        --config.data.preencoded=gs://bucket/gen3r_preencoded --config.model.dit_checkpoint=gs://bucket/dit_1p3b
    python launch/train.py --config configs/tpu_v5.py --workdir /tmp/dry --dry_run   # memory of both DiT entries

Run the same command on every host of the slice (``--distributed`` calls ``jax.distributed.initialize()``, which
finds the TPU topology itself). Stage 1 keeps the release's optimisation (base.py); one clip per chip, data
parallel (32 chips x 8 accumulation = 256 clips per optimiser step on a v5e-32), bf16 compute, VGGT rematerialised.
Stage 2 keeps the release's DiT optimisation (``base.release_stage2``) and 192 clips per optimiser step, with
splash attention and every block rematerialised:

* ``stage2_1p3b``: v5p-128 (64 chips), FSDP over all chips, 3 clips per chip.
* ``stage2_14b``: v5p-512 (256 chips), FSDP 64 x context 2 x tensor 2: each clip's 31,850 tokens are split over
  two chips (all-gather context attention; 31,850 = 2 x 5^2 x 7^2 x 13 splits over no larger power of two), heads
  and MLP over two more; 64 clips x 3 accumulation steps.
Online encoding also needs the frozen models (``--config.model.{vggt,adapter,wan_vae,text_encoder,clip}_checkpoint``
and ``model.tokenizer``); ``data.preencoded`` drops them.
"""

from configs import base

V5P = dict(platform="tpu", hbm_gib=95.0)


def stage1():
  # batch: one clip per chip of a v5e-32; scale with the slice
  return base.release_stage1(batch_size=32, read_threads=16, mp_workers=8)


# fsdp=64 divides none of the frozen Wan VAE encoder's last conv (384 -> 32 channels, 1.3 MiB): it stays replicated
# on every chip, said here so that the sharding check (config.sharding, parallel/rules.py) does not refuse it
REPLICATED_AT_FSDP_64 = ("wan_vae.encoder.head.conv.conv.kernel",)


def stage2_1p3b():
  c = base.release_stage2("1.3b", hardware=dict(V5P, name="TPU v5p-128", num_devices=64),
                          mesh=dict(data=1, fsdp=-1, context=1, tensor=1), batch_size=192, grad_accum_steps=1,
                          attention="splash", read_threads=16, mp_workers=8)
  c.sharding.allow_replicated = REPLICATED_AT_FSDP_64
  return c


def stage2_14b():
  c = base.release_stage2("14b", hardware=dict(V5P, name="TPU v5p-512", num_devices=256),
                          mesh=dict(data=1, fsdp=-1, context=2, tensor=2), batch_size=64, grad_accum_steps=3,
                          attention="splash", read_threads=16, mp_workers=8)
  c.sharding.allow_replicated = REPLICATED_AT_FSDP_64
  return c


ENTRIES = {"stage1": stage1, "stage2_1p3b": stage2_1p3b, "stage2_14b": stage2_14b}


def get_config(entry: str = "stage1"):
  if entry not in ENTRIES:
    raise ValueError(f"unknown entry {entry!r}; choose one of {sorted(ENTRIES)} (configs/tpu_v5.py:<entry>)")
  return ENTRIES[entry]()
