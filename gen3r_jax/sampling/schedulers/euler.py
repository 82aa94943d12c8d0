"""Flow-matching Euler (diffusers 0.33.1 ``FlowMatchEulerDiscreteScheduler``, deterministic).

``prev = sample + (sigma_{i+1} - sigma_i) * model_out`` in float32, cast to the model output's dtype. The
schedule shifts twice by the CONFIG shift and ignores the pipeline's ``shift`` (see ``schedules.py``); the
timesteps given to the model are float32, not integers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling.schedulers.schedules import Schedule, euler_schedule


class EulerState(NamedTuple):
  sigmas: jax.Array   # [N + 1] float32


@dataclasses.dataclass(frozen=True)
class FlowEuler:
  num_train_timesteps: int = 1000
  shift: float = 5.0           # config shift (VideoX-Fun Wan yaml); the pipeline's shift is not used
  name: ClassVar[str] = "euler"

  def set_timesteps(self, num_steps: int, shift: float | None = None) -> Schedule:
    """``retrieve_timesteps(num_steps, mu=1)``: ``shift`` is accepted and IGNORED, as in the pipeline."""
    del shift
    return euler_schedule(num_steps, num_train_timesteps=self.num_train_timesteps, shift=self.shift)

  def init_state(self, sigmas, sample: jax.Array) -> EulerState:
    del sample
    return EulerState(jnp.asarray(sigmas, jnp.float32))

  def step(self, state: EulerState, model_out: jax.Array, i, sample: jax.Array):
    i = jnp.asarray(i, jnp.int32)
    dt = state.sigmas[i + 1] - state.sigmas[i]
    prev = sample.astype(jnp.float32) + dt * model_out.astype(jnp.float32)
    return prev.astype(model_out.dtype), state


def from_config(cfg: dict) -> FlowEuler:
  """Build from a diffusers ``scheduler_config.json`` dict (no dynamic shifting / Karras / stochastic)."""
  for key in ("use_dynamic_shifting", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
              "invert_sigmas", "stochastic_sampling", "shift_terminal"):
    if cfg.get(key):
      raise Gen3RInputError(f"Euler scheduler config: {key}={cfg[key]!r} is not supported (only off).")
  return FlowEuler(num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
                   shift=float(cfg.get("shift", 1.0)))
