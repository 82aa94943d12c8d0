"""Training survives damage (toy task): resume past a damaged newest checkpoint (moved aside, never deleted), the
NaN policy (``skip`` drops the update inside the step and counts it; the consecutive-skip limit stops), and a
restart that steps past the batch a ``stop`` stopped at."""

import glob
import logging
import os

import jax
import numpy as np
import pytest

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.parallel.rules import make_mesh
from gen3r_jax.training.loop import (TrainingDivergedError, batch_shardings, get_task, make_train_step, place_frozen,
                                     step_context, to_global, train)
from gen3r_jax.training.optimizer import make_optimizer
from gen3r_jax.training.state import create_train_state
from tests.test_train_loop import losses, toy_config


def _steps(d):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(d, "*")) if os.path.basename(p).isdigit())


def _files(d):
  out = {}
  for p in glob.glob(os.path.join(d, "**"), recursive=True):
    if os.path.isfile(p):
      with open(p, "rb") as f:
        out[os.path.relpath(p, d)] = f.read()
  return out


def _truncate_largest(step_dir):
  victim = max(glob.glob(os.path.join(step_dir, "state", "d", "*")), key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's loop after a failed read
def test_resume_restores_newest_intact_checkpoint_and_keeps_the_damaged_one(tmp_path, caplog):
  w = str(tmp_path)
  ck = os.path.join(w, "checkpoints")
  first = losses(train(toy_config(steps=6, every=2, checkpoint__keep=3), w, stop_after=4))
  assert _steps(ck) == [2, 4]
  os.remove(os.path.join(ck, "4", "state", "manifest.ocdbt"))       # a file deleted inside the newest step
  damaged = _files(os.path.join(ck, "4"))
  with caplog.at_level(logging.WARNING):
    resumed = train(toy_config(steps=6, every=2, checkpoint__keep=3), w)
  lines = [r.getMessage() for r in caplog.records if "skipped step 4" in r.getMessage()]
  assert len(lines) == 1 and "does not restore" in lines[0] and "checkpoints.damaged" in lines[0], lines
  assert "resuming from step 2" in lines[0] and "\n" not in lines[0]
  rl = losses(resumed)
  assert sorted(rl) == [3, 4, 5, 6]
  np.testing.assert_array_equal([rl[3], rl[4]], [first[3], first[4]])   # resumed exactly from step 2
  # the damaged step is kept byte for byte beside the checkpoints; the manager saved a fresh step 4 and went on
  assert _files(os.path.join(w, "checkpoints.damaged", "4")) == damaged
  assert _steps(ck) == [2, 4, 6] and resumed.last_checkpoint == 6
  # none restores (a truncated file in each): one line naming the directory; nothing is moved
  for s in _steps(ck):
    _truncate_largest(os.path.join(ck, str(s)))
  with pytest.raises(Gen3RInputError, match=r"no checkpoint in .*checkpoints restores \(step 6: .*step 2: ") as e:
    train(toy_config(steps=8, every=2, checkpoint__keep=3), w)
  assert "\n" not in str(e.value) and w in str(e.value)
  assert _steps(ck) == [2, 4, 6] and _steps(os.path.join(w, "checkpoints.damaged")) == [4]


def test_skip_policy_step_keeps_params_and_counts(tmp_path):
  c = toy_config(steps=4, toy__poison_step=0)            # the first batch is NaN
  mesh = make_mesh(dict(c.mesh))
  task = get_task(c, mesh, str(tmp_path))
  tx, _ = make_optimizer(c.optimizer, 4)
  state, spec = create_train_state(task.build, tx, seed=int(c.seed), mesh=mesh)
  frozen_state, frozen_sh = place_frozen(task, mesh)
  data = task.make_data()
  bad, good = next(data), next(data)
  assert np.isnan(bad["x"]).all()
  sh = batch_shardings(task, mesh, bad)
  step = make_train_step(spec, task, tx, ema_decay=None, batch_sh=sh, frozen_sh=frozen_sh, mesh=mesh,
                         nan_policy="skip", max_consecutive_skips=1)
  key = jax.random.PRNGKey(0)
  before = jax.device_get(state)
  with step_context(mesh):
    state, m = step(state, frozen_state, to_global(bad, sh), key)
  after = jax.device_get(state)
  jax.tree.map(np.testing.assert_array_equal, after["params"], before["params"])
  jax.tree.map(np.testing.assert_array_equal, after["opt_state"], before["opt_state"])
  assert int(after["step"]) == 1 and not bool(m["finite"]) and int(m["skipped_steps"]) == 1
  assert {k: int(v) for k, v in after["guard"].items()} == {"skipped": 1, "consecutive": 1, "stop_at": -1}
  with step_context(mesh):
    state, m = step(state, frozen_state, to_global(good, sh), key)
  after = jax.device_get(state)
  assert bool(m["finite"]) and int(after["step"]) == 2
  assert {k: int(v) for k, v in after["guard"].items()} == {"skipped": 1, "consecutive": 0, "stop_at": -1}
  assert not np.array_equal(after["params"]["fc1"]["kernel"], before["params"]["fc1"]["kernel"])


def test_consecutive_skip_limit_stops_with_the_steps_to_skip(tmp_path):
  c = toy_config(steps=8, every=100, nan_policy="skip", max_consecutive_skips=2, toy__poison_step=1,
                 toy__poison_count=3)                    # steps 2, 3, 4 are NaN: the third in a row stops
  with pytest.raises(TrainingDivergedError, match=r"steps 2-4: 3 non-finite steps in a row, more than "
                                                  r"max_consecutive_skips=2 .*--config.skip_batches_at_steps=2,3,4"):
    train(c, str(tmp_path))


def test_skip_policy_goes_on_and_a_stopped_run_resumes_past_the_bad_batch(tmp_path):
  kw = dict(steps=8, every=2, toy__poison_step=4)        # the batch of step 5 is NaN
  ref = train(toy_config(nan_policy="skip", **kw), str(tmp_path / "skip"))
  h = {e["step"]: e for e in ref.history}
  assert np.isnan(h[5]["loss"]) and [h[s]["skipped_steps"] for s in (4, 5, 8)] == [0, 1, 1]
  assert all(np.isfinite(h[s]["loss"]) for s in (6, 7, 8)) and ref.last_checkpoint == 8
  w = str(tmp_path / "stop")
  with pytest.raises(TrainingDivergedError, match=r"step 5: non-finite loss .* last good checkpoint is step 4 .*"
                                                  r"restart with --config.skip_batches_at_steps=5 "):
    train(toy_config(**kw), w)
  resumed = train(toy_config(skip_batches_at_steps=(5,), **kw), w)   # from step 4; step 5's update dropped
  rl = losses(resumed)
  assert sorted(rl) == [5, 6, 7, 8] and resumed.history[-1]["skipped_steps"] == 1
  np.testing.assert_array_equal([rl[s] for s in (6, 7, 8)], [h[s]["loss"] for s in (6, 7, 8)])


def test_distributed_initialize_passes_only_the_timeouts_jax_takes():
  from gen3r_jax.training import distributed
  calls = []

  def older_jax(coordinator_address=None, num_processes=None, process_id=None, initialization_timeout=300):
    calls.append(dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id,
                      initialization_timeout=initialization_timeout))

  passed = distributed.initialize("localhost:1234", 2, 1, initialization_timeout_s=600, heartbeat_timeout_s=600,
                                  initialize_fn=older_jax)
  assert passed == {"initialization_timeout": 600}
  assert calls == [dict(coordinator_address="localhost:1234", num_processes=2, process_id=1,
                        initialization_timeout=600)]
  # the installed jax (0.10.2 and 0.11.x alike) takes all three
  assert distributed.timeout_kwargs(jax.distributed.initialize, initialization_timeout_s=1, heartbeat_timeout_s=2,
                                    shutdown_timeout_s=3) == {"initialization_timeout": 1,
                                                              "heartbeat_timeout_seconds": 2,
                                                              "shutdown_timeout_seconds": 3}
