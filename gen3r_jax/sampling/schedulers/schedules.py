"""Host-side timestep / sigma schedules of the three flow samplers, computed exactly as the reference does.

Everything here is numpy on the host (float64 where the reference uses numpy float64, float32 where it uses
float32 torch tensors), so the arrays are bit-identical to the official ones:

* **UniPC** (``FlowUniPCMultistepScheduler.set_timesteps(n, shift=shift)``): the constructor builds
  ``1 - linspace(1, 1/T, T)[::-1]`` (``0.999 ... 0``) in float32 and shifts it by the CONSTRUCTOR shift;
  ``sigma_max`` is its first entry. ``set_timesteps`` takes ``linspace(sigma_max, 0, n + 1)[:-1]`` in float64
  and shifts it again by the CALL's shift, so the first sigma is ``shift(0.999) = 0.9998`` (not 1).
* **DPM++** (``set_timesteps(sigmas=get_sampling_sigmas(n, shift))``): ``shift(linspace(1, 0, n + 1)[:n])`` in
  float64 (first sigma exactly 1), shifted AGAIN by the constructor shift inside ``set_timesteps``.
* For both, ``timesteps = sigmas * T`` cast to int64 by TRUNCATION, and ``sigmas`` gets a final 0 and is
  stored float32.
* **Euler** (diffusers 0.33.1 ``FlowMatchEulerDiscreteScheduler``, ``retrieve_timesteps(n, mu=1)`` with
  ``use_dynamic_shifting=False`` so ``mu`` is ignored): constructor sigmas ``shift(linspace(1, T, T)[::-1] / T)``
  in float32 give ``sigma_max = 1`` and ``sigma_min = shift(1/T)``; ``set_timesteps`` takes
  ``linspace(sigma_max * T, sigma_min * T, n) / T`` in float64, shifts it AGAIN by the config shift, casts to
  float32 and sets ``timesteps = sigmas * T`` in float32 (NOT integers). The pipeline's ``shift`` argument is
  not used by this scheduler.

The shift transform is ``s' = shift * s / (1 + (shift - 1) * s)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gen3r_jax.errors import Gen3RInputError, require


class Schedule(NamedTuple):
  """What ``set_timesteps`` produces.

  Attributes:
    timesteps: ``[N]`` what the model receives as ``t`` (int64 for UniPC / DPM++, float32 for Euler).
    sigmas: ``[N + 1]`` float32 noise levels the step uses (last entry is the final sigma, 0).
  """
  timesteps: np.ndarray
  sigmas: np.ndarray

  @property
  def num_steps(self) -> int:
    return int(self.timesteps.shape[0])


def shift_sigmas(sigmas, shift: float):
  """``shift * s / (1 + (shift - 1) * s)`` in the dtype of ``sigmas`` (numpy float64 or float32)."""
  s = np.asarray(sigmas)
  if s.dtype == np.float32:  # torch float32 tensor op with python scalars: computed in float32
    sh = np.float32(shift)
    return sh * s / (np.float32(1.0) + np.float32(shift - 1.0) * s)
  return shift * s / (1 + (shift - 1) * s)


def check_num_steps(num_steps) -> int:
  """``num_steps`` must be a positive integer."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise Gen3RInputError(
        f"num_inference_steps must be a positive integer (e.g. 50), got {num_steps!r}.")
  return int(num_steps)


def check_shift(shift, name: str = "shift") -> float:
  """``shift`` must be a finite positive number."""
  ok = isinstance(shift, (int, float, np.integer, np.floating)) and not isinstance(shift, bool)
  require(ok and math.isfinite(float(shift)) and float(shift) > 0,
          f"{name} must be a finite positive number (the pipeline default is 5), got {shift!r}.")
  return float(shift)


def _train_sigma_range_multistep(num_train_timesteps: int, constructor_shift: float) -> tuple[float, float]:
  """``(sigma_max, sigma_min)`` of the UniPC / DPM++ constructors (float32 tensors -> python floats)."""
  alphas = np.linspace(1, 1 / num_train_timesteps, num_train_timesteps)[::-1].copy()
  sigmas = (1.0 - alphas).astype(np.float32)
  sigmas = shift_sigmas(sigmas, constructor_shift)
  return float(sigmas[0]), float(sigmas[-1])


def _finish_int(sigmas64: np.ndarray, num_train_timesteps: int) -> Schedule:
  timesteps = (sigmas64 * num_train_timesteps).astype(np.int64)  # truncation, as torch .to(int64)
  _check_first_timestep(timesteps)
  sigmas = np.concatenate([sigmas64, [0.0]]).astype(np.float32)
  return Schedule(timesteps, sigmas)


def _check_first_timestep(timesteps: np.ndarray) -> None:
  # The reference finds its start index by looking the first timestep up in the schedule and takes the
  # SECOND match when it repeats; it would then skip a sigma and index past the end on the last step.
  if timesteps.shape[0] > 1 and timesteps[0] == timesteps[1]:
    raise Gen3RInputError(
        f"with {timesteps.shape[0]} steps the first two integer timesteps coincide ({timesteps[0]}); the "
        "official scheduler then skips a step and fails. Use fewer inference steps (e.g. 50) or a smaller shift.")


def unipc_schedule(num_steps: int, shift: float, *, num_train_timesteps: int = 1000,
                   constructor_shift: float = 1.0) -> Schedule:
  """``FlowUniPCMultistepScheduler(shift=constructor_shift).set_timesteps(num_steps, shift=shift)``."""
  n = check_num_steps(num_steps)
  shift = check_shift(shift)
  sigma_max, sigma_min = _train_sigma_range_multistep(num_train_timesteps, constructor_shift)
  sigmas = np.linspace(sigma_max, sigma_min, n + 1).copy()[:-1]   # float64
  sigmas = shift_sigmas(sigmas, shift)
  return _finish_int(sigmas, num_train_timesteps)


def get_sampling_sigmas(num_steps: int, shift: float) -> np.ndarray:
  """Wan's ``get_sampling_sigmas``: ``shift(linspace(1, 0, n + 1)[:n])`` in float64."""
  n = check_num_steps(num_steps)
  return shift_sigmas(np.linspace(1, 0, n + 1)[:n], check_shift(shift))


def dpmpp_schedule(num_steps: int, shift: float, *, num_train_timesteps: int = 1000,
                   constructor_shift: float = 1.0) -> Schedule:
  """``FlowDPMSolverMultistepScheduler(shift=constructor_shift).set_timesteps(sigmas=get_sampling_sigmas(n, shift))``."""
  sigmas = get_sampling_sigmas(num_steps, shift)
  sigmas = shift_sigmas(sigmas, constructor_shift)  # applied again inside set_timesteps
  return _finish_int(sigmas, num_train_timesteps)


def euler_schedule(num_steps: int, *, num_train_timesteps: int = 1000, shift: float = 5.0) -> Schedule:
  """diffusers ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(num_steps)`` (no dynamic shifting).

  ``shift`` is the scheduler's CONFIG shift; it is applied twice (constructor and ``set_timesteps``).
  """
  n = check_num_steps(num_steps)
  shift = check_shift(shift)
  t = num_train_timesteps
  train_t = np.linspace(1, t, t, dtype=np.float32)[::-1].copy()
  train_sigmas = shift_sigmas(train_t / np.float32(t), shift)          # float32
  sigma_max, sigma_min = float(train_sigmas[0]), float(train_sigmas[-1])
  timesteps = np.linspace(sigma_max * t, sigma_min * t, n)             # float64
  sigmas = shift_sigmas(timesteps / t, shift).astype(np.float32)
  timesteps = sigmas * np.float32(t)
  return Schedule(timesteps.astype(np.float32), np.concatenate([sigmas, np.zeros(1, np.float32)]))
