"""Helpers shared by the test modules (not fixtures: plain functions)."""

from __future__ import annotations


def set_nested(config, **overrides):
  """``set_nested(c, optimizer__eps=1e-4)`` sets ``c.optimizer.eps``; ``__`` separates the path. Returns ``c``."""
  for key, value in overrides.items():
    *parents, leaf = key.split("__")
    target = config
    for part in parents:
      target = target[part]
    target[leaf] = value
  return config


def one_train_step(config, task, mesh):
  """One compiled train step of ``task`` on ``mesh``, set up as :func:`gen3r_jax.training.loop.train` sets it up
  (train state, frozen state on its shardings, batch shardings from the first batch, the step key), so that the step
  on one mesh can be compared with the same step on another. Returns a namespace: ``compiled``, ``batch`` and
  ``state`` (after the step) on the mesh, ``metrics`` and ``before`` (the state before the step) on the host."""
  import types
  import jax
  import numpy as np
  from flax import nnx
  from gen3r_jax.parallel.rules import state_shardings
  from gen3r_jax.training import optimizer as opt
  from gen3r_jax.training.loop import batch_sharding, make_train_step, step_context, to_global
  from gen3r_jax.training.state import create_train_state
  tx, _ = opt.make_optimizer(config.optimizer, int(config.num_train_steps))
  state, spec = create_train_state(task.build, tx, seed=int(config.seed), mesh=mesh, ema=bool(config.ema.enabled),
                                   init_params=task.init_params)
  before = jax.device_get(state)       # the step donates the state
  frozen_state, frozen_sh = None, None
  if task.frozen is not None:
    frozen_state = nnx.state(task.frozen)
    frozen_sh = state_shardings(frozen_state, mesh)
    frozen_state = jax.device_put(frozen_state, frozen_sh)
  batch = next(task.make_data())
  axes = dict(task.batch_axes or {})
  batch_sh = {k: batch_sharding(mesh, axes.get(k, ("batch",) + (None,) * (np.ndim(v) - 1)))
              for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype != object}
  step = make_train_step(spec, task, tx, ema_decay=float(config.ema.decay), batch_sh=batch_sh, frozen_sh=frozen_sh,
                         mesh=mesh)
  batch, key = to_global(batch, batch_sh), jax.random.PRNGKey(int(config.seed))
  with step_context(mesh, config.get("context_strategy", "allgather")):
    compiled = step.lower(state, frozen_state, batch, key).compile()
    state, metrics = compiled(state, frozen_state, batch, key)
  return types.SimpleNamespace(compiled=compiled, batch=batch, state=state, metrics=jax.device_get(metrics),
                               before=before)
