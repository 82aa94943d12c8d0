"""Shared training defaults (stage 1, the release's optimisation settings; training-reference §2.6).

Every other config starts from ``base.get_config()`` and states only what differs. The values here reproduce the
official stage-1 run: AdamW lr 1e-5, betas (0.9, 0.999), eps 1e-8, weight decay 1e-4; cosine annealing to
0.2 x lr with no warm-up; gradient clipping at global norm 0.5; batch 1 per device x 8 accumulation.

    python launch/train.py --config configs/base.py --workdir /tmp/run --config.data.root=/data/gen3r
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.task = "stage1"               # "stage1" (geometry adapter) | "toy" (trainer self-test)
  c.seed = 42
  c.num_train_steps = 100_000     # micro-steps (optimiser steps = num_train_steps / grad_accum_steps)
  c.log_every = 50
  c.nan_check_every = 1           # host check of the NaN guard flag every k steps (and at every log)
  c.tensorboard = True
  c.host_device_count = 0         # > 0: that many fake CPU devices (debugging; set before jax starts)
  c.matmul_precision = "default"  # jax_default_matmul_precision ("highest" for float32 parity-like runs)

  # mesh: sizes of (data, fsdp, context, tensor); one may be -1 (the remaining devices)
  c.mesh = ConfigDict(dict(data=1, fsdp=-1, context=1, tensor=1))

  c.data = ConfigDict(dict(
      batch_size=8,               # global (all processes), sharded over data x fsdp
      root="",                    # official layout root (stage 1 reads <root>/train_videos_dirs.txt)
      records="",                 # or array_record files of gen3r_jax.data.tfds_builder
      synthetic_scenes=0,         # > 0 and no root/records: generate this many synthetic scenes in <workdir>
      synthetic_frames=12,        # frames per synthetic scene
      synthetic_size=80,          # rendered size (resized up to height x width by the pipeline)
      num_frames=49,
      height=560,
      width=560,
      strides=(1, 2),             # stage-1 train: Python randint(1, 2)
      read_threads=2,
      prefetch=2,
      mp_workers=0,
  ))

  c.optimizer = ConfigDict(dict(
      name="adamw", learning_rate=1e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
      schedule="cosine", min_lr_ratio=0.2, warmup_steps=0, decay_steps=0,
      grad_clip_norm=0.5, grad_accum_steps=8,
  ))
  c.ema = ConfigDict(dict(enabled=False, decay=0.999))
  c.checkpoint = ConfigDict(dict(every=1000, keep=3, async_save=True))
  c.profile = ConfigDict(dict(start=10, steps=0))   # steps > 0: trace [start, start + steps) to <workdir>/profile

  # models of stage 1
  c.model = ConfigDict(dict(
      size="release",             # "release" | "tiny" (random frozen models, for debugging)
      dtype="bfloat16",           # compute dtype (parameters stay float32)
      remat="none",               # VGGT scanned stacks' remat policy
      vggt_checkpoint="",         # Orbax dirs written by launch/convert.py (empty: random init, debug only)
      wan_vae_checkpoint="",
  ))
  c.loss = ConfigDict(dict(
      recon_loss_weight=0.5, similarity_loss_weight=0.1, align_kl_loss_weight=2.0,
      camera_loss_in_recon=10.0, depth_loss_in_recon=2.0, point_loss_in_recon=1.0,
      image_token_smooth_l1_beta=0.15, camera_token_smooth_l1_beta=0.1, kl_adaptive_extra_factor=0.1,
  ))

  # toy task (trainer self-test)
  c.toy = ConfigDict(dict(dim=16, hidden=32, num_examples=64, noise=0.01, poison_step=-1))
  return c


def release_stage1(batch_size: int, read_threads: int, mp_workers: int) -> ConfigDict:
  """Stage 1 at the release size on accelerators: data parallel, bf16 compute, remat, the release's 3k
  optimiser steps (x 8 accumulation). The hardware configs set only the input pipeline and batch size."""
  c = get_config()
  c.task = "stage1"
  c.mesh.data, c.mesh.fsdp = -1, 1
  c.data.batch_size = batch_size
  c.data.read_threads = read_threads
  c.data.prefetch = 4
  c.data.mp_workers = mp_workers
  c.model.size = "release"
  c.model.dtype = "bfloat16"
  c.model.remat = "full"
  c.num_train_steps = 8 * 3_000        # micro-steps: 3k optimiser steps (grad_accum_steps 8)
  c.checkpoint.every = 500
  c.log_every = 20
  return c

