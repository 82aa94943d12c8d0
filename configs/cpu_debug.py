"""Stage 1 on 8 fake CPU devices: tiny random frozen models, synthetic scenes, a few steps (debugging, tests).

    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/gen3r_debug
    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/toy --config.task=toy

The models have the parity fixture's tiny sizes (``training_stage1_tiny``) with random weights; frames are still
560x560 (the adapter's 40x40 <-> 70x70 grids are hard-wired) but single-frame clips. The mesh is data 2 x fsdp 4,
so the adapter's parameters are sharded over ``fsdp`` and the batch over all 8 devices.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import base  # noqa: E402


def get_config():
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
