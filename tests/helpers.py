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
  from gen3r_jax.training import optimizer as opt
  from gen3r_jax.training.loop import batch_shardings, make_train_step, place_frozen, step_context, to_global
  from gen3r_jax.training.state import create_train_state
  from gen3r_jax.training.task import rules_of
  rules = rules_of(config)
  tx, _ = opt.make_optimizer(config.optimizer, int(config.num_train_steps))
  state, spec = create_train_state(task.build, tx, seed=int(config.seed), mesh=mesh, ema=bool(config.ema.enabled),
                                   rules=rules.for_model(task.model or None), init_params=task.init_params)
  before = jax.device_get(state)       # the step donates the state
  frozen_state, frozen_sh = place_frozen(task, mesh, rules)
  batch = next(task.make_data())
  batch_sh = batch_shardings(task, mesh, batch, rules)
  step = make_train_step(spec, task, tx, ema_decay=float(config.ema.decay), batch_sh=batch_sh, frozen_sh=frozen_sh,
                         mesh=mesh)
  batch, key = to_global(batch, batch_sh), jax.random.PRNGKey(int(config.seed))
  with step_context(mesh, config.get("context_strategy", "allgather"), rules):
    compiled = step.lower(state, frozen_state, batch, key).compile()
    state, metrics = compiled(state, frozen_state, batch, key)
  return types.SimpleNamespace(compiled=compiled, batch=batch, state=state, metrics=jax.device_get(metrics),
                               before=before)
