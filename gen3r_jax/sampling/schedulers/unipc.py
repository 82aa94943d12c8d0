"""Flow UniPC (``gen3r/utils/fm_solvers_unipc.FlowUniPCMultistepScheduler``): the Gen3R default sampler.

Configuration of the release: bh2, solver order 2, ``predict_x0``, ``flow_prediction``, ``lower_order_final``,
final sigma 0, constructor shift 1 and shift 5 at ``set_timesteps``.

Step ``i`` (``s0 = sigma_i``, ``t = sigma_{i+1}``, ``alpha = 1 - sigma``, ``lambda = log alpha - log sigma``):

1. ``x0 = sample - s0 * model_out``.
2. Corrector (UniC, every step but the first): corrects the CURRENT sample from the previous sample
   (``last_sample``), the stored x0 history and the new x0, with the order of the previous predictor
   (1 at step 1, else 2). Order 1 uses ``rho = 0.5``; order 2 solves the 2x2 system ``R rho = b``.
3. Predictor (UniP) from the corrected sample, order ``min(2, N - i, i + 1)`` (step 0 and the last step are
   first order): ``x_t = t/s0 * x - alpha_t * expm1(-h) * m0 - alpha_t * B_h * 0.5 * D1`` with
   ``D1 = (m1 - m0) / r1``, ``r1 = (lambda_s1 - lambda_s0) / h``, ``B_h = expm1(-h)`` (bh2) or ``-h`` (bh1).
   At the final sigma 0, ``lambda_t = +inf`` and the first-order update returns the x0 estimate.

Scalars are float32 as in the reference. Both orders are computed and selected with ``jnp.where`` (the
unused branch may hold inf/NaN at the boundaries; it is never mixed in arithmetically).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.sampling.schedulers.base import log_snr, prev_index, table
from gen3r_jax.sampling.schedulers.schedules import Schedule, unipc_schedule


class UniPCState(NamedTuple):
  """Carried between steps (fixed shapes)."""
  sigmas: jax.Array       # [N + 1] float32
  x0_1: jax.Array         # [*S] x0 prediction of the previous step (model_outputs[-1] of the reference)
  x0_2: jax.Array         # [*S] x0 prediction of the step before that (model_outputs[-2])
  last_sample: jax.Array  # [*S] the (corrected) sample the previous predictor started from


@dataclasses.dataclass(frozen=True)
class FlowUniPC:
  """Static configuration (the reference constructor arguments that this port supports)."""
  num_train_timesteps: int = 1000
  solver_order: int = 2
  shift: float = 1.0                   # constructor shift (the pipeline passes its own shift to set_timesteps)
  solver_type: str = "bh2"
  lower_order_final: bool = True
  disable_corrector: tuple[int, ...] = ()
  name: ClassVar[str] = "unipc"

  def __post_init__(self):
    require(self.solver_order in (1, 2),
            f"UniPC: solver_order {self.solver_order} is not supported; use 1 or 2 (Gen3R uses 2).")
    require(self.solver_type in ("bh1", "bh2"),
            f"UniPC: solver_type must be 'bh1' or 'bh2', got {self.solver_type!r}.")
    object.__setattr__(self, "disable_corrector", tuple(int(k) for k in self.disable_corrector))

  # ---- host ----
  def set_timesteps(self, num_steps: int, shift: float | None = 5.0) -> Schedule:
    """Timesteps (int64, truncated) and sigmas (float32) for ``num_steps`` with the pipeline's ``shift``
    (``None``: the constructor shift, as the reference's default)."""
    shift = self.shift if shift is None else shift
    return unipc_schedule(num_steps, shift, num_train_timesteps=self.num_train_timesteps,
                          constructor_shift=self.shift)

  def orders(self, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(predictor_order[N], corrector_order[N])``; corrector order 0 = no corrector at that step."""
    i = np.arange(n)
    p = np.full(n, self.solver_order)
    if self.lower_order_final:
      p = np.minimum(p, n - i)
    p = np.minimum(p, np.minimum(i, self.solver_order) + 1)     # warm-up
    c = np.concatenate([[0], p[:-1]])
    c = np.where(np.isin(i - 1, self.disable_corrector), 0, c)
    return p.astype(np.int32), c.astype(np.int32)

  # ---- device ----
  def init_state(self, sigmas, sample: jax.Array) -> UniPCState:
    z = jnp.zeros(sample.shape, jnp.float32)
    return UniPCState(jnp.asarray(sigmas, jnp.float32), z, z, z)

  def step(self, state: UniPCState, model_out: jax.Array, i, sample: jax.Array):
    """One UniPC step. Returns ``(prev_sample [*S] in sample.dtype, new_state)``."""
    sig = state.sigmas
    n = sig.shape[0] - 1
    p_order, c_order = self.orders(n)
    i = jnp.asarray(i, jnp.int32)
    x = sample.astype(jnp.float32)
    x0 = x - sig[i] * model_out.astype(jnp.float32)

    corrected = self._corrector(sig[i], sig[prev_index(i, 1)], sig[prev_index(i, 2)], x0,
                                state.x0_1, state.x0_2, state.last_sample, table(c_order, i))
    x = jnp.where(table(c_order, i) > 0, corrected, x)
    prev = self._predictor(sig[i + 1], sig[i], sig[prev_index(i, 1)], x, x0, state.x0_1, table(p_order, i))
    new_state = UniPCState(sig, x0, state.x0_1, x)
    return prev.astype(sample.dtype), new_state

  def _phi(self, s_t, s_0):
    alpha_t = 1.0 - s_t
    h = log_snr(s_t) - log_snr(s_0)
    hh = -h                                   # predict_x0
    h_phi_1 = jnp.expm1(hh)
    b_h = hh if self.solver_type == "bh1" else jnp.expm1(hh)
    return alpha_t, h, hh, h_phi_1, b_h

  def _predictor(self, s_t, s_0, s_1, x, m0, m1, order):
    alpha_t, h, _, h_phi_1, b_h = self._phi(s_t, s_0)
    x_t_ = (s_t / s_0) * x - (alpha_t * h_phi_1) * m0
    rk = (log_snr(s_1) - log_snr(s_0)) / h
    d1 = (m1 - m0) / rk
    x_t2 = x_t_ - (alpha_t * b_h) * (0.5 * d1)   # rho_p hard-coded to 0.5 for order 2
    return jnp.where(order == 2, x_t2, x_t_)

  def _corrector(self, s_t, s_0, s_1, model_t, m0, m1, last, order):
    """UniC: the corrected current sample, rebuilt from the previous sample ``last``."""
    alpha_t, h, hh, h_phi_1, b_h = self._phi(s_t, s_0)
    x_t_ = (s_t / s_0) * last - (alpha_t * h_phi_1) * m0
    d1_t = model_t - m0
    # order 1: rho_c = 0.5
    x_c1 = x_t_ - (alpha_t * b_h) * (0.5 * d1_t)
    # order 2: R = [[1, 1], [rk, 1]], b = [b1, b2]; solved like LAPACK getrf/getrs (partial pivoting)
    h_phi_k = h_phi_1 / hh - 1.0
    b1 = (h_phi_k * 1.0) / b_h
    h_phi_k = h_phi_k / hh - 0.5
    b2 = (h_phi_k * 2.0) / b_h
    rk = (log_snr(s_1) - log_snr(s_0)) / h
    rho0, rho1 = _solve_2x2_unit_col(rk, b1, b2)
    d1 = (m1 - m0) / rk
    x_c2 = x_t_ - (alpha_t * b_h) * (rho0 * d1 + rho1 * d1_t)
    return jnp.where(order == 2, x_c2, x_c1)


def _solve_2x2_unit_col(rk, b1, b2):
  """Solve ``[[1, 1], [rk, 1]] @ [r0, r1] = [b1, b2]`` with the pivoting LAPACK ``gesv`` uses."""
  swap = jnp.abs(rk) > 1.0
  # no swap: L = [[1, 0], [rk, 1]], U = [[1, 1], [0, 1 - rk]]
  r1_a = (b2 - rk * b1) / (1.0 - rk)
  r0_a = b1 - r1_a
  # swap rows: [[rk, 1], [1, 1]]; l = 1 / rk; U = [[rk, 1], [0, 1 - l]]
  l = 1.0 / rk
  r1_b = (b1 - l * b2) / (1.0 - l)
  r0_b = (b2 - r1_b) / rk
  return jnp.where(swap, r0_b, r0_a), jnp.where(swap, r1_b, r1_a)


def from_config(cfg: dict) -> FlowUniPC:
  """Build from a diffusers ``scheduler_config.json`` dict, rejecting options this port does not implement."""
  unsupported = {"prediction_type": "flow_prediction", "use_dynamic_shifting": False, "thresholding": False,
                 "predict_x0": True, "final_sigmas_type": "zero", "solver_p": None}
  for key, want in unsupported.items():
    if key in cfg and cfg[key] != want:
      raise Gen3RInputError(f"UniPC scheduler config: {key}={cfg[key]!r} is not supported (only {want!r}).")
  return FlowUniPC(num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
                   solver_order=int(cfg.get("solver_order", 2)), shift=float(cfg.get("shift", 1.0)),
                   solver_type=str(cfg.get("solver_type", "bh2")),
                   lower_order_final=bool(cfg.get("lower_order_final", True)),
                   disable_corrector=tuple(cfg.get("disable_corrector", ()) or ()))
