"""Flow DPM-Solver++ 2M (``gen3r/utils/fm_solvers.FlowDPMSolverMultistepScheduler``), ``dpmsolver++`` only.

Step ``i`` (``s0 = sigma_i``, ``t = sigma_{i+1}``, ``s1 = sigma_{i-1}``): ``x0 = sample - s0 * model_out``;
first order (step 0, the last step, or ``solver_order == 1``):
``x_t = t/s0 * sample - alpha_t * (exp(-h) - 1) * x0``; otherwise second order with ``r0 = h_0 / h`` and
``D1 = (x0 - x0_prev) / r0``: midpoint subtracts ``0.5 * alpha_t * (exp(-h) - 1) * D1``, heun adds
``alpha_t * ((exp(-h) - 1) / h + 1) * D1``. The last step is always first order because the final sigma is 0.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.sampling.schedulers.base import log_snr, prev_index, table
from gen3r_jax.sampling.schedulers.schedules import Schedule, dpmpp_schedule


class DPMppState(NamedTuple):
  sigmas: jax.Array   # [N + 1] float32
  x0_1: jax.Array     # [*S] x0 prediction of the previous step


@dataclasses.dataclass(frozen=True)
class FlowDPMpp:
  num_train_timesteps: int = 1000
  solver_order: int = 2
  shift: float = 1.0            # constructor shift, applied again to the pipeline's sampling sigmas
  solver_type: str = "midpoint"
  name: ClassVar[str] = "dpmpp"

  def __post_init__(self):
    require(self.solver_order in (1, 2),
            f"DPM++: solver_order {self.solver_order} is not supported; use 1 or 2 (Gen3R uses 2).")
    require(self.solver_type in ("midpoint", "heun"),
            f"DPM++: solver_type must be 'midpoint' or 'heun', got {self.solver_type!r}.")

  def set_timesteps(self, num_steps: int, shift: float = 5.0) -> Schedule:
    """The pipeline's ``set_timesteps(sigmas=get_sampling_sigmas(num_steps, shift))``."""
    return dpmpp_schedule(num_steps, shift, num_train_timesteps=self.num_train_timesteps,
                          constructor_shift=self.shift)

  def first_order(self, n: int) -> np.ndarray:
    """``[N]`` bool: steps that use the first-order update (warm-up, final step, or order 1)."""
    i = np.arange(n)
    return (i == 0) | (i == n - 1) | (self.solver_order == 1)

  def init_state(self, sigmas, sample: jax.Array) -> DPMppState:
    return DPMppState(jnp.asarray(sigmas, jnp.float32), jnp.zeros(sample.shape, jnp.float32))

  def step(self, state: DPMppState, model_out: jax.Array, i, sample: jax.Array):
    """One DPM++ step. Returns ``(prev_sample [*S] in model_out.dtype, new_state)``."""
    sig = state.sigmas
    n = sig.shape[0] - 1
    i = jnp.asarray(i, jnp.int32)
    x = sample.astype(jnp.float32)
    s_t, s_0, s_1 = sig[i + 1], sig[i], sig[prev_index(i, 1)]
    x0 = x - s_0 * model_out.astype(jnp.float32)
    alpha_t = 1.0 - s_t
    lam_t, lam_0, lam_1 = log_snr(s_t), log_snr(s_0), log_snr(s_1)
    h = lam_t - lam_0
    em1 = jnp.exp(-h) - 1.0
    x_first = (s_t / s_0) * x - (alpha_t * em1) * x0
    r0 = (lam_0 - lam_1) / h
    d1 = (1.0 / r0) * (x0 - state.x0_1)
    if self.solver_type == "midpoint":
      x_second = x_first - (0.5 * (alpha_t * em1)) * d1
    else:
      x_second = x_first + (alpha_t * (em1 / h + 1.0)) * d1
    prev = jnp.where(table(self.first_order(n), i), x_first, x_second)
    return prev.astype(model_out.dtype), DPMppState(sig, x0)


def from_config(cfg: dict) -> FlowDPMpp:
  """Build from a ``scheduler_config.json`` dict, rejecting options this port does not implement."""
  fixed = {"prediction_type": "flow_prediction", "use_dynamic_shifting": False, "thresholding": False,
           "algorithm_type": "dpmsolver++", "final_sigmas_type": "zero", "invert_sigmas": False}
  for key, want in fixed.items():
    if key in cfg and cfg[key] != want:
      raise Gen3RInputError(f"DPM++ scheduler config: {key}={cfg[key]!r} is not supported (only {want!r}).")
  return FlowDPMpp(num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
                   solver_order=int(cfg.get("solver_order", 2)), shift=float(cfg.get("shift", 1.0)),
                   solver_type=str(cfg.get("solver_type", "midpoint")))
