"""Training on 8 fake CPU devices: tiny random models, synthetic scenes, a few steps (debugging, tests).

    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/gen3r_debug           # stage 1
    python launch/train.py --config configs/cpu_debug.py:stage2 --workdir /tmp/gen3r_debug2   # stage 2
    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/toy --config.task=toy

Entries:

* ``stage1`` (default) and ``stage2`` run on a laptop: 112x112 frames (``model.adapter.token_grid`` 8: 8x8 VGGT tokens
  <-> 14x14 latents), single-frame clips of 4 synthetic scenes, the parity fixtures' tiny model sizes with random
  weights drawn on the host. Stage 1 is data parallel over the 8 devices (as the release); stage 2 runs on fsdp 2 x
  context 2 x tensor 2: the DiT's embed axes sharded over ``fsdp``, heads and MLP over ``tensor``, its 98-token
  sequence over ``context`` (context-parallel attention), the batch of 4 over ``fsdp``. Measured on a 2-core, 24 GB
  box (2026-12-04, jax 0.10.2, /usr/bin/time -v): stage 1, 12 steps, 68 s and 2.4 GiB peak resident memory (85 s
  with other test runs loading the box); stage 2, 10 steps, 56 s and 2.3 GiB (1 min 57 s loaded). Most of it is
  the first compile and the first checkpoint; ``tests/test_train_debug_configs.py`` holds them to <= 4 GiB.
* ``stage1_full``: stage 1 at the release frame size (560x560, token grid 40) on data 2 x fsdp 4, the slow tests'
  setting (minutes on 16 cores; far beyond a laptop: VGGT's heads and the Wan VAE at 560x560).
"""

from configs import base


def stage1_full():
  """Stage 1 at the release frame size (560x560, the adapter's 40x40 <-> 70x70 grids) with the tiny models on data 2
  x fsdp 4: the slow tests' configuration (about 4 min on 16 cores; not a laptop run)."""
  c = base.get_config()
  c.host_device_count = 8           # fake CPU devices (set before jax starts)
  c.matmul_precision = "highest"
  c.num_train_steps = 12
  c.log_every = 1
  c.tensorboard = True
  c.mesh.data, c.mesh.fsdp = 2, 4
  c.data.batch_size = 8
  c.data.synthetic_scenes = 4
  c.data.synthetic_frames = 4
  c.data.synthetic_size = 40
  c.data.num_frames = 1
  c.data.strides = (1,)
  c.data.read_threads = 1
  c.data.prefetch = 1
  c.optimizer.learning_rate = 3e-3
  c.optimizer.grad_accum_steps = 1
  c.optimizer.schedule = "constant"
  c.optimizer.grad_clip_norm = 1.0
  c.checkpoint.every = 4
  c.checkpoint.keep = 2
  c.model.size = "tiny"
  c.model.dtype = "float32"
  c.profile.start = 2
  return c


def small_frames(c, grid: int = 8):
  """Frames ``14 * grid`` square (the VGGT / adapter token grid ``grid``, latents ``1.75 * grid``)."""
  c.model.adapter.token_grid = grid
  c.data.height = c.data.width = 14 * grid
  c.data.synthetic_size = 56
  return c


def stage1():
  """Stage 1 on a laptop: ``stage1_full`` with 112x112 frames (8x8 tokens <-> 14x14 latents), data parallel over
  the 8 devices as the release runs stage 1 (``base.release_stage1``)."""
  c = small_frames(stage1_full())
  c.mesh.data, c.mesh.fsdp = 8, 1
  return c


def stage2():
  """Stage 2 on a laptop: tiny models, 112x112 frames (a 14x28 joint latent: 98 DiT tokens per frame)."""
  c = stage1()
  c.task = "stage2"
  c.mesh.update(dict(data=1, fsdp=2, context=2, tensor=2))
  c.hardware.update(dict(name="8 fake CPU devices", platform="cpu", num_devices=8, hbm_gib=4.0))
  c.num_train_steps = 10
  c.data.batch_size = 4
  c.optimizer.learning_rate = 2e-3
  c.optimizer.schedule = "constant"
  c.model.dit.remat = "full"
  return c


ENTRIES = {"stage1": stage1, "stage2": stage2, "stage1_full": stage1_full}


def get_config(entry: str = "stage1"):
  if entry not in ENTRIES:
    raise ValueError(f"unknown entry {entry!r}; choose one of {sorted(ENTRIES)} (configs/cpu_debug.py:<entry>)")
  return ENTRIES[entry]()
