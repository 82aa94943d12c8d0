"""Flow-matching samplers of the Gen3R pipeline as pure, jittable functions.

    sched = get_scheduler("unipc")                 # FlowUniPC(), the release default
    schedule = sched.set_timesteps(50, shift=5)    # host numpy: timesteps [50] int64, sigmas [51] float32
    state = sched.init_state(schedule.sigmas, latents)

    def body(i, carry):                            # the whole loop compiles (i is traced)
      x, st = carry
      model_out = model(x, jnp.asarray(schedule.timesteps)[i])
      return sched.step(st, model_out, i, x)

    latents, _ = jax.lax.fori_loop(0, schedule.num_steps, body, (latents, state))

Schedulers (reference classes in brackets):

* ``unipc``  [``FlowUniPCMultistepScheduler``]: bh2 predictor-corrector, order 2; shift at ``set_timesteps``.
* ``dpmpp``  [``FlowDPMSolverMultistepScheduler`` + ``get_sampling_sigmas``]: DPM-Solver++ 2M.
* ``euler``  [diffusers ``FlowMatchEulerDiscreteScheduler``]: double config shift, ignores the pipeline shift.

The scheduler objects are frozen dataclasses (hashable, so they can be static jit arguments). The step runs in
float32; the step index ``i`` replaces the reference's internal counter (which starts at the first timestep
passed to ``step``).
"""

from __future__ import annotations

from gen3r_jax.errors import Gen3RInputError, fmt_list
from gen3r_jax.sampling.schedulers import dpmpp as _dpmpp
from gen3r_jax.sampling.schedulers import euler as _euler
from gen3r_jax.sampling.schedulers import unipc as _unipc
from gen3r_jax.sampling.schedulers.base import scan_steps
from gen3r_jax.sampling.schedulers.dpmpp import DPMppState, FlowDPMpp
from gen3r_jax.sampling.schedulers.euler import EulerState, FlowEuler
from gen3r_jax.sampling.schedulers.schedules import (Schedule, dpmpp_schedule, euler_schedule,
                                                     get_sampling_sigmas, shift_sigmas, unipc_schedule)
from gen3r_jax.sampling.schedulers.unipc import FlowUniPC, UniPCState

SCHEDULERS = {"unipc": FlowUniPC, "dpmpp": FlowDPMpp, "euler": FlowEuler}

# diffusers ``_class_name`` in ``scheduler/scheduler_config.json`` -> builder
_CLASS_NAMES = {
    "FlowUniPCMultistepScheduler": _unipc.from_config,
    "FlowDPMSolverMultistepScheduler": _dpmpp.from_config,
    "FlowMatchEulerDiscreteScheduler": _euler.from_config,
}


def get_scheduler(name: str, **config):
  """A scheduler by short name (``unipc``, ``dpmpp``, ``euler``) with optional constructor overrides."""
  if name not in SCHEDULERS:
    raise Gen3RInputError(f"unknown scheduler {name!r}; choose one of {fmt_list(SCHEDULERS)}.")
  try:
    return SCHEDULERS[name](**config)
  except TypeError as e:
    raise Gen3RInputError(f"scheduler {name!r}: bad option ({e}).") from None


def scheduler_from_config(cfg: dict):
  """Build from the checkpoint's ``scheduler/scheduler_config.json`` contents (dispatch on ``_class_name``)."""
  cls = cfg.get("_class_name")
  if cls not in _CLASS_NAMES:
    raise Gen3RInputError(
        f"scheduler_config.json: unsupported _class_name {cls!r}; supported: {fmt_list(_CLASS_NAMES)}.")
  return _CLASS_NAMES[cls](cfg)


__all__ = [
    "SCHEDULERS", "Schedule", "FlowUniPC", "FlowDPMpp", "FlowEuler", "UniPCState", "DPMppState", "EulerState",
    "get_scheduler", "scheduler_from_config", "scan_steps", "unipc_schedule", "dpmpp_schedule",
    "euler_schedule", "get_sampling_sigmas", "shift_sigmas",
]
