"""Parity case for the ``schedulers`` fixture: schedules (host) and 8-step runs through the scanned, jitted step.

The fixture's latents are ``B C F H W``; the step is elementwise, but we still run it channels-last
(``B F H W C``) like the pipeline does and transpose back for the comparison.
"""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp
import numpy as np

from gen3r_jax.sampling.schedulers import get_scheduler, scan_steps
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check

_KINDS = ("unipc", "dpmpp", "euler")


def _build(fx: Fixture, kind: str):
  cfg = fx.config[kind]
  if kind == "euler":
    return get_scheduler(kind, num_train_timesteps=int(cfg["num_train_timesteps"]), shift=float(cfg["shift"]))
  kw = dict(num_train_timesteps=int(cfg["num_train_timesteps"]), solver_order=int(cfg["solver_order"]),
            shift=float(cfg["shift"]), solver_type=str(cfg["solver_type"]))
  if kind == "unipc":
    kw.update(lower_order_final=bool(cfg["lower_order_final"]),
              disable_corrector=tuple(cfg.get("disable_corrector", ())))
  return get_scheduler(kind, **kw)


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  del dtype  # the scheduler always runs in float32
  shift = float(fx.config["pipeline_shift"])
  for kind in _KINDS:
    sched = _build(fx, kind)
    for n in fx.config["steps"]:
      schedule = sched.set_timesteps(int(n), shift)
      yield Check(f"{kind}.n{n}.timesteps", schedule.timesteps, kind="exact")
      yield Check(f"{kind}.n{n}.sigmas", schedule.sigmas)

  x_init = np.transpose(fx.tensor("latents_init"), (0, 2, 3, 4, 1))           # B F H W C
  outs = np.transpose(fx.tensor("model_outputs"), (0, 1, 3, 4, 5, 2))        # N B F H W C
  n_run = int(fx.config["run_steps"])
  for kind in _KINDS:
    sched = _build(fx, kind)
    schedule = sched.set_timesteps(n_run, shift)
    traj = scan_steps(sched, schedule.sigmas, jnp.asarray(x_init), jnp.asarray(outs[:n_run]))
    yield Check(f"{kind}.run.latents", np.transpose(np.asarray(traj), (0, 1, 5, 2, 3, 4)))
    yield Check(f"{kind}.run.timesteps", schedule.timesteps, kind="exact")
