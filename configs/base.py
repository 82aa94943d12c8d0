"""Shared training defaults (stage 1, the release's optimisation settings; training-reference §2.6).

Every other config starts from ``base.get_config()`` and states only what differs. The values here reproduce the
official stage-1 run: AdamW lr 1e-5, betas (0.9, 0.999), eps 1e-8, weight decay 1e-4; cosine annealing to
0.2 x lr with no warm-up; gradient clipping at global norm 0.5; batch 1 per device x 8 accumulation.
``release_stage1`` / ``release_stage2`` hold what the hardware configs share for each stage.

    python launch/train.py --config configs/base.py --workdir /tmp/run --config.data.root=/data/gen3r
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.task = "stage1"               # "stage1" (geometry adapter) | "stage2" (DiT) | "toy" (trainer self-test)
  c.seed = 42
  c.num_train_steps = 100_000     # micro-steps (optimiser steps = num_train_steps / grad_accum_steps)
  c.log_every = 50
  c.nan_check_every = 1           # host check of the NaN guard flag every k steps (and at every log / checkpoint)
  c.nan_policy = "stop"           # non-finite loss/grad norm: "stop" (exit 3, nothing saved) | "skip" (drop the update)
  c.max_consecutive_skips = 10    # "skip": stop (as "stop") after more than this many non-finite steps in a row
  c.skip_batches_at_steps = ()    # drop these steps' updates (e.g. =5 after a NaN stop at step 5; the stop says which)
  c.tensorboard = True
  c.progress = True       # console progress bars on a terminal; False: one plain line every log_every steps
  c.host_device_count = 0         # > 0: that many fake CPU devices (debugging; set before jax starts)
  c.matmul_precision = "default"  # jax_default_matmul_precision ("highest" for float32 parity-like runs)

  # mesh: sizes of (data, fsdp, context, tensor); one may be -1 (the remaining devices)
  c.mesh = ConfigDict(dict(data=1, fsdp=-1, context=1, tensor=1))
  # attention over mesh.context > 1: "allgather" (fused kernels) | "ring" (einsum) | "ulysses" (all-to-all over
  # heads, fused kernels; heads % context == 0) | "ulysses_ring" | "ulysses_allgather" (any head count)
  c.context_strategy = "allgather"
  # what --dry_run estimates for (stage 2): device kind, count and memory per device
  c.hardware = ConfigDict(dict(name="", platform="cpu", num_devices=0, hbm_gib=0.0))

  c.data = ConfigDict(dict(
      batch_size=8,               # global (all processes), sharded over data x fsdp
      root="",                    # official layout root (stage 1 reads <root>/train_videos_dirs.txt)
      records="",                 # or array_record files of gen3r_jax.data.tfds_builder
      preencoded="",              # or (stage 2) the output of launch/preencode.py: no frozen encoders needed
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
      validate="strict",          # scenes that cannot give a clip, found when the pipeline is built (headers only):
                                  # "strict": one error listing them all (exit 2) | "skip": warn, train without them
      validate_images="all",      # image headers validation reads: "all" frames a clip may use | "first" per scene
  ))

  c.optimizer = ConfigDict(dict(
      name="adamw", learning_rate=1e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
      schedule="cosine", min_lr_ratio=0.2, warmup_steps=0, decay_steps=0,
      grad_clip_norm=0.5, grad_clip_initial_ratio=1.0, grad_clip_ramp_fraction=0.0, grad_accum_steps=8,
  ))
  c.ema = ConfigDict(dict(enabled=False, decay=0.999))
  c.checkpoint = ConfigDict(dict(every=1000, keep=3, async_save=True))
  c.profile = ConfigDict(dict(start=10, steps=0))   # steps > 0: trace [start, start + steps) to <workdir>/profile

  # models of stages 1 and 2. Each model's sub-dict uses its config dataclass's field names and is laid over the
  # size preset (<Config>.from_dict(config.model.<name>, base=<preset>)); fields not set keep the preset's.
  c.model = ConfigDict(dict(
      size="release",             # "release" | "tiny" (random frozen models, for debugging)
      dtype="bfloat16",           # compute dtype of every model (parameters stay float32); a sub-dict's dtype wins
      vggt_checkpoint="",         # Orbax dirs written by launch/convert.py (empty: random init, debug only)
      wan_vae_checkpoint="",
      adapter_checkpoint="",      # stage 2: frozen geometry adapter, umT5, CLIP, and the umT5 spiece.model folder
      text_encoder_checkpoint="",
      clip_checkpoint="",
      tokenizer="",
      dit_size="1.3b",            # stage 2: "1.3b" | "14b" (release size)
      dit_checkpoint="",          # stage 2: the DiT to start from (empty: random init)
      # gen3r_jax.models.wan_dit.config.WanDiTConfig: remat per block "none" | "full" | "attention" | "dots" |
      # "dots_no_batch"; attention "auto" | "xla" | "cudnn" | "fa3" | "fa3_fwd" | "splash"
      dit=ConfigDict(dict(remat="full", attention="auto")),
      vggt=ConfigDict(dict(remat="none")),     # gen3r_jax.models.vggt.VGGTConfig: scanned stacks' remat policy
      # gen3r_jax.models.geometry_adapter.model.GeometryAdapterConfig: token_grid = frames / 14 (the release: 40 <->
      # 70x70 latents, 560x560 frames; a multiple of 4; the debug configs use 8: 112x112 frames)
      adapter=ConfigDict(dict(token_grid=40)),
      wan_vae=ConfigDict(),       # gen3r_jax.models.wan_vae.vae.WanVAEConfig
      text_encoder=ConfigDict(),  # gen3r_jax.models.umt5.t5.UMT5Config
      clip=ConfigDict(),          # gen3r_jax.models.clip.model.CLIPVisionConfig
  ))
  c.sharding = sharding()
  # stage 2 (gen3r_jax.training.stage2.Stage2Config; official values, our draws per example)
  c.stage2 = ConfigDict(dict(
      num_train_timesteps=1000, shift=2.0, text_drop_prob=0.2, camera_drop_prob=0.5,
      camera_drop="example",      # "batch": one draw per batch as the official code
      loss_clip=50.0,
      geometry_condition="adapter",  # "zeros": geometry half of the condition zeroed, as paper / inference
      noise_dtype="float32",      # "bfloat16": the official bf16 noise mixing
  ))
  c.loss = ConfigDict(dict(
      recon_loss_weight=0.5, similarity_loss_weight=0.1, align_kl_loss_weight=2.0,
      camera_loss_in_recon=10.0, depth_loss_in_recon=2.0, point_loss_in_recon=1.0,
      image_token_smooth_l1_beta=0.15, camera_token_smooth_l1_beta=0.1, kl_adaptive_extra_factor=0.1,
  ))

  # toy task (trainer self-test)
  c.toy = ConfigDict(dict(dim=16, hidden=32, num_examples=64, noise=0.01, poison_step=-1, poison_count=1))
  return c


def sharding() -> ConfigDict:
  """``config.sharding``: where parameters and activations go on the mesh (:mod:`gen3r_jax.parallel.rules`).

  ``rules`` maps every logical axis name to mesh axes (``()``: replicated): parameter axes (``embed``, ``mlp``,
  ...) and activation axes (``act_*``; distinct names, so a rule for weights never moves activations).
  ``model_rules.<model>`` (``dit``, ``vggt``, ``wan_vae``, ``adapter``, ``text_encoder``, ``clip``) is laid over
  ``rules`` for that model only. A parameter above ``replicated_limit_mib`` whose rules shard it over mesh axes
  that divide none of its dimensions is an error (it would silently be replicated on every device) unless a pattern
  of ``allow_replicated`` (``fnmatch`` on its path, e.g. ``"blocks.*.cross_attn.*"``, or ``"*"``) matches it.
  Command line: ``--config.sharding.rules.embed="('fsdp', 'tensor')"``, ``--config.sharding.rules.kv="()"``.
  """
  return ConfigDict(dict(
      rules=ConfigDict(dict(
          # parameters
          embed=("fsdp",), mlp=("tensor",), heads=("tensor",), kv=(), vocab=("tensor",), conv_in=(),
          conv_out=("fsdp",), layers=(), norm=(),
          # activations
          act_batch=("cfg", "data", "fsdp"), act_length=("context",), act_embed=(), act_heads=("tensor",), act_kv=(),
      )),
      model_rules=ConfigDict({m: ConfigDict() for m in ("dit", "vggt", "wan_vae", "adapter", "text_encoder",
                                                        "clip")}),
      allow_replicated=(),
      replicated_limit_mib=1.0,
  ))


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
  c.model.vggt.remat = "full"
  c.num_train_steps = 8 * 3_000        # micro-steps: 3k optimiser steps (grad_accum_steps 8)
  c.checkpoint.every = 500
  c.log_every = 20
  return c


def release_stage2(dit_size: str, *, hardware: dict, mesh: dict, batch_size: int, grad_accum_steps: int,
                   remat: str = "full", attention: str = "auto", read_threads: int = 8,
                   mp_workers: int = 4) -> ConfigDict:
  """Stage 2 (the DiT, all parameters train) at the release size with the optimisation the official run really
  applies (training-reference §3.9): AdamW lr 1e-5, betas (0.9, 0.999), eps 1e-8 (DeepSpeed's default: the script's
  --adam_epsilon 1e-10 never reaches the optimiser), weight decay 3e-2 on every parameter; DeepSpeed WarmupCosineLR
  (linear warm-up from 0 over 50 optimiser steps, cosine to 1e-4 x lr); global-norm clipping ramped from 0.5 down to
  0.25 over the first 10% of optimiser steps; bf16 compute, float32 master weights and Adam moments; every block
  rematerialised (official gradient checkpointing). 8k optimiser steps of ``batch_size x grad_accum_steps`` clips
  (the paper's length; official: 192 clips per step)."""
  c = get_config()
  c.task = "stage2"
  c.mesh.update(mesh)
  c.hardware.update(hardware)
  c.data.update(dict(batch_size=batch_size, strides=(1,), read_threads=read_threads, prefetch=4,
                     mp_workers=mp_workers))
  c.optimizer.update(dict(learning_rate=1e-5, eps=1e-8, weight_decay=3e-2, schedule="deepspeed_warmup_cosine",
                          min_lr_ratio=1e-4, warmup_steps=50, grad_clip_norm=0.25, grad_clip_initial_ratio=2.0,
                          grad_clip_ramp_fraction=0.1, grad_accum_steps=grad_accum_steps))
  c.model.update(dict(size="release", dtype="bfloat16", dit_size=dit_size))
  c.model.dit.update(dict(remat=remat, attention=attention))
  c.num_train_steps = 8_000 * grad_accum_steps
  c.checkpoint.every = 250 * grad_accum_steps
  c.log_every = 10
  return c
