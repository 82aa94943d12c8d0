"""The generic trainer on the toy task: loss falls, sharded == single device, kill-and-resume, NaN guard, errors."""

import glob
import os

import jax
import numpy as np
import pytest

from configs import cpu_debug
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.parallel.rules import make_mesh
from gen3r_jax.training.loop import TrainingDivergedError, get_task, restore_params, train
from gen3r_jax.training.optimizer import make_optimizer
from gen3r_jax.training.state import train_state_spec
from tests.helpers import set_nested


def toy_config(**kw):
  c = cpu_debug.get_config("stage1_full")   # data 2 x fsdp 4 (the laptop stage-1 entry is data parallel)
  c.task = "toy"
  c.tensorboard = False
  c.num_train_steps = kw.pop("steps", 6)
  c.checkpoint.every = kw.pop("every", 2)
  c.checkpoint.async_save = True
  c.optimizer.learning_rate = 1e-2
  c.optimizer.schedule = "cosine"
  c.optimizer.grad_clip_norm = 1.0
  return set_nested(c, **kw)


def losses(result):
  return {h["step"]: h["loss"] for h in result.history}


def test_toy_loss_falls_and_writes_checkpoints(tmp_path):
  c = toy_config(steps=40, every=20, optimizer__learning_rate=3e-2)
  r = train(c, str(tmp_path))
  l = losses(r)
  assert l[40] < 0.3 * l[1], l
  assert sorted(int(os.path.basename(p)) for p in glob.glob(str(tmp_path / "checkpoints" / "*"))
                if os.path.basename(p).isdigit()) == [20, 40]
  assert r.last_checkpoint == 40
  # parameters really are sharded over fsdp (data 2 x fsdp 4 in cpu_debug)
  k = r.state["params"]["fc1"]["kernel"]
  assert k.sharding.spec[0] == "fsdp" and len(k.sharding.device_set) == 8


def test_sharded_step_equals_single_device(tmp_path):
  c = toy_config(steps=3, every=100)
  sharded = losses(train(c, str(tmp_path / "a")))
  c1 = toy_config(steps=3, every=100, data__batch_size=8)
  c1.mesh.data, c1.mesh.fsdp = 1, 1
  single = losses(train(c1, str(tmp_path / "b"), mesh=make_mesh({"fsdp": 1}, devices=jax.devices()[:1])))
  np.testing.assert_allclose([sharded[s] for s in (1, 2, 3)], [single[s] for s in (1, 2, 3)], rtol=1e-5, atol=1e-6)


def test_kill_and_resume_reproduces_next_losses(tmp_path):
  c = toy_config(steps=6, every=2)
  run = train(c, str(tmp_path / "full"))
  full = losses(run)
  # restore_params reads the newest checkpoint onto the abstract state of train_state_spec (nothing initialised)
  mesh = make_mesh(dict(c.mesh))
  task = get_task(c, mesh, str(tmp_path / "full"))
  params, step = restore_params(str(tmp_path / "full"), c, task, mesh)
  assert step == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(run.state["params"]))
  tx, _ = make_optimizer(c.optimizer, 6)
  spec = train_state_spec(task.build, tx, seed=int(c.seed), mesh=mesh)
  want = jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), run.state)
  assert jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), spec.abstract) == want
  w = str(tmp_path / "killed")
  part = train(toy_config(steps=6, every=2), w, stop_after=5)       # "killed" after step 5, last ckpt 4
  assert part.last_checkpoint == 4
  resumed = train(toy_config(steps=6, every=2), w)                  # restarts from 4: steps 5, 6
  rl = losses(resumed)
  assert sorted(rl) == [5, 6]
  np.testing.assert_array_equal([rl[5], rl[6]], [full[5], full[6]])


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  c = toy_config(steps=8, every=2, toy__poison_step=4)               # the 5th batch is NaN
  with pytest.raises(TrainingDivergedError, match=r"step 5: non-finite loss .* last good checkpoint is step 4"):
    train(c, str(tmp_path))
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(str(tmp_path / "checkpoints" / "*"))
                 if os.path.basename(p).isdigit())
  assert steps == [2, 4]


@pytest.mark.parametrize("change, message", [
    (dict(mesh__data=3, mesh__fsdp=1), r"mesh .* does not divide the 8 devices"),
    (dict(mesh__data=16, mesh__fsdp=1), r"mesh .* does not divide the 8 devices"),
    (dict(mesh__data=2, mesh__fsdp=-1, data__batch_size=4), r"batch_size 4 must be divisible by mesh data x fsdp = 8"),
    (dict(optimizer__schedule="linear"), r"optimizer.schedule must be one of"),
    (dict(optimizer__grad_accum_steps=0), r"grad_accum_steps must be >= 1"),
    (dict(checkpoint__keep=0), r"checkpoint.keep must be >= 1"),
    (dict(task="stage3"), r"task must be one of"),
    (dict(nan_policy="ignore"), r"nan_policy must be one of \('stop', 'skip'\)"),
    (dict(max_consecutive_skips=-1), r"max_consecutive_skips must be an integer >= 0"),
    (dict(skip_batches_at_steps=(0, 3)), r"skip_batches_at_steps must list steps in \[1, num_train_steps=6\]"),
])
def test_bad_config_is_a_clear_error_before_compiling(tmp_path, change, message):
  with pytest.raises(Gen3RInputError, match=message):
    train(toy_config(**change), str(tmp_path))
  assert not glob.glob(str(tmp_path / "checkpoints" / "*" / "state"))
