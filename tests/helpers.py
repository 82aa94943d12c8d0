"""Helpers shared by the test modules (not fixtures: plain functions)."""

from __future__ import annotations

import numpy as np

from gen3r_jax.data.synthetic import render_clip
from gen3r_jax.eval.io import unproject
from gen3r_jax.sampling import export


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
  model_rules = rules.for_model(task.model or None)
  tx, _ = opt.make_optimizer(config.optimizer, int(config.num_train_steps))
  state, spec = create_train_state(task.build, tx, seed=int(config.seed), mesh=mesh, ema=bool(config.ema.enabled),
                                   rules=model_rules, init_params=task.init_params)
  before = jax.device_get(state)       # the step donates the state
  frozen_state, frozen_sh = place_frozen(task, mesh, rules)
  batch = next(task.make_data())
  batch_sh = batch_shardings(task, mesh, batch, model_rules)
  step = make_train_step(spec, task, tx, ema_decay=float(config.ema.decay), batch_sh=batch_sh, frozen_sh=frozen_sh,
                         mesh=mesh)
  batch, key = to_global(batch, batch_sh), jax.random.PRNGKey(int(config.seed))
  with step_context(mesh, config.get("context_strategy", "allgather"), model_rules):
    compiled = step.lower(state, frozen_state, batch, key).compile()
    state, metrics = compiled(state, frozen_state, batch, key)
  return types.SimpleNamespace(compiled=compiled, batch=batch, state=state, metrics=jax.device_get(metrics),
                               before=before)


def write_synthetic_output(out: str, *, frames: int = 4, hw=(120, 160), conf: bool = False, seed: int = 1) -> dict:
  """An output directory in the sampler's format from a rendered synthetic scene with its exact depth (what
  launch/reconstruct.py would write for a perfect reconstruction); with ``conf`` a ``vggt_predictions.npz``."""
  rgb, depth, c2w, K = render_clip(seed=seed, frames=frames, hw=hw)
  Ks = np.repeat(K[None], frames, 0)
  points = unproject(depth, Ks, c2w)
  masks = depth < np.percentile(depth, 95)          # a mask that drops some points, as the exported one does
  extra = {}
  if conf:
    extra = {"vggt_predictions.npz": {"depth_conf": (1.0 + np.arange(depth.size, dtype=np.float32)
                                                     ).reshape(depth.shape)}}
  export.export_all(out, rgb=rgb, depth=depth, points=points, masks=masks, c2w=c2w, K=Ks, fps=4, prompt="a room",
                    meta={"source": "synthetic"}, extra_npz=extra)
  return dict(rgb=rgb, depth=depth, c2w=c2w, K=Ks, points=points, masks=masks)
