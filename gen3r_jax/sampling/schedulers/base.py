"""Shared pieces of the flow samplers: log-SNR, index helpers and the scanned loop used by tests and parity.

Every scheduler is a frozen (hashable) dataclass holding only its static configuration, with three pure
functions (see :mod:`gen3r_jax.sampling.schedulers`):

* ``set_timesteps(num_steps, shift) -> Schedule`` on the host (numpy),
* ``init_state(sigmas, sample) -> state``: a NamedTuple of fixed-shape arrays (the sigmas and, for the
  multistep solvers, the history of x0 predictions),
* ``step(state, model_out, i, sample) -> (prev_sample, new_state)`` with ``i`` a Python or traced int32, so
  the whole denoising loop can live in ``jax.lax.fori_loop`` / ``scan``.

The flow model: ``x_sigma = (1 - sigma) * x0 + sigma * noise`` and the model predicts ``noise - x0``, so
``alpha = 1 - sigma`` and ``lambda = log(alpha) - log(sigma)`` (``+inf`` at the final sigma 0).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def log_snr(sigma: jax.Array) -> jax.Array:
  """``lambda = log(1 - sigma) - log(sigma)`` (float32, ``+inf`` at sigma 0), as the reference computes it."""
  return jnp.log(1.0 - sigma) - jnp.log(sigma)


def prev_index(i, k: int):
  """``max(i - k, 0)``: the reference reads ``sigmas[i - k]`` only when that is valid; clamping keeps the
  unused branch in range (its value is discarded with ``jnp.where``)."""
  return jnp.maximum(jnp.asarray(i, jnp.int32) - k, 0)


def table(values: np.ndarray, i) -> jax.Array:
  """Per-step constant ``values[i]`` for a Python or traced step index."""
  return jnp.asarray(values)[jnp.asarray(i, jnp.int32)]


def scan_steps(scheduler: Any, sigmas, sample: jax.Array, model_outputs: jax.Array) -> jax.Array:
  """Run ``N`` steps driven by given model outputs inside one ``lax.scan`` and return every latent.

  Args:
    scheduler: a scheduler instance (static).
    sigmas: ``[N + 1]`` float32 schedule sigmas.
    sample: ``[*S]`` initial latents.
    model_outputs: ``[N, *S]`` the model output fed to step ``i``.
  Returns:
    ``[N, *S]`` latents after each step.
  """
  return _scan_steps_jit(scheduler, jnp.asarray(sigmas, jnp.float32), sample, model_outputs)


@jax.jit(static_argnums=0)
def _scan_steps_jit(scheduler, sigmas, sample, model_outputs):
  n = model_outputs.shape[0]

  def body(carry, xs):
    x, st = carry
    i, mo = xs
    x, st = scheduler.step(st, mo, i, x)
    return (x, st), x

  state = scheduler.init_state(sigmas, sample)
  _, traj = jax.lax.scan(body, (sample, state), (jnp.arange(n, dtype=jnp.int32), model_outputs))
  return traj
