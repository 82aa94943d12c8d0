"""Training on 8 fake CPU devices: tiny random models, synthetic scenes, a few steps (debugging, tests).

    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/gen3r_debug           # stage 1
    python launch/train.py --config configs/cpu_debug.py:stage2 --workdir /tmp/gen3r_debug2   # stage 2
    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/toy --config.task=toy

Entries: ``stage1`` (default) and ``stage2``. The models have the parity fixtures' tiny sizes with random weights;
frames are still 560x560 (the adapter's 40x40 <-> 70x70 grids are hard-wired) but short clips. Stage 1 runs on
data 2 x fsdp 4 (the adapter sharded over ``fsdp``, the batch over all 8 devices). Stage 2 runs on fsdp 2 x
context 2 x tensor 2: the DiT's embed axes are sharded over ``fsdp``, heads and MLP over ``tensor``, its 2450-token
sequence over ``context`` (context-parallel attention), the batch of 4 over ``fsdp``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import base  # noqa: E402


def stage1():
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


def stage2():
  c = stage1()
  c.task = "stage2"
  c.mesh.update(dict(data=1, fsdp=2, context=2, tensor=2))
  c.hardware.update(dict(name="8 fake CPU devices", platform="cpu", num_devices=8, hbm_gib=4.0))
  c.num_train_steps = 10
  c.data.batch_size = 4
  c.optimizer.learning_rate = 2e-3
  c.optimizer.schedule = "constant"
  c.model.dit_remat = "full"
  return c


ENTRIES = {"stage1": stage1, "stage2": stage2}


def get_config(entry: str = "stage1"):
  if entry not in ENTRIES:
    raise ValueError(f"unknown entry {entry!r}; choose one of {sorted(ENTRIES)} (configs/cpu_debug.py:<entry>)")
  return ENTRIES[entry]()
