"""Flow schedulers: schedules, the jittable step (fori_loop vs host loop), configs and input errors.

Numerical parity with the official schedulers is checked by the ``schedulers`` fixture (tests/test_parity.py).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling.schedulers import (FlowDPMpp, FlowEuler, FlowUniPC, get_scheduler, scan_steps,
                                           scheduler_from_config)
from tests.conftest import fixture_path

KINDS = ("unipc", "dpmpp", "euler")


def _inputs(n, shape=(1, 2, 3, 4, 8), seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape).astype(np.float32)
  outs = rng.standard_normal((n,) + shape).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(outs)


@pytest.mark.parametrize("kind", KINDS)
def test_fori_loop_under_jit_matches_host_loop(kind):
  sched = get_scheduler(kind)
  schedule = sched.set_timesteps(6, shift=5.0)
  x, outs = _inputs(6)

  # host loop: eager step calls with Python step indices
  state, xs = sched.init_state(schedule.sigmas, x), x
  host = []
  for i in range(schedule.num_steps):
    xs, state = sched.step(state, outs[i], i, xs)
    host.append(np.asarray(xs))

  @jax.jit
  def loop(x0, outs):
    def body(i, carry):
      xi, st = carry
      return sched.step(st, outs[i], i, xi)
    return jax.lax.fori_loop(0, 6, body, (x0, sched.init_state(schedule.sigmas, x0)))[0]

  final = np.asarray(loop(x, outs))
  np.testing.assert_allclose(final, host[-1], rtol=1e-6, atol=1e-6)
  traj = np.asarray(scan_steps(sched, schedule.sigmas, x, outs))
  np.testing.assert_allclose(traj, np.stack(host), rtol=1e-6, atol=1e-6)
  assert np.all(np.isfinite(traj))          # inf/NaN of unused branches (sigma 0, warm-up) never leak
  assert not np.allclose(host[0], host[-1])


def test_unipc_schedule_quirks():
  s = FlowUniPC().set_timesteps(8, shift=5)
  assert s.timesteps.dtype == np.int64 and s.sigmas.dtype == np.float32
  np.testing.assert_allclose(s.sigmas[0], 5 * 0.999 / (1 + 4 * 0.999), rtol=1e-7)   # not 1: 0.999 shifted
  assert s.timesteps[0] == 999 and s.sigmas[-1] == 0.0 and s.sigmas.shape == (9,)
  # truncation, not rounding: sigma 0.74969983 -> 749
  assert s.timesteps[5] == int(np.floor(float(s.sigmas[5]) * 1000))
  # a constructor shift shifts twice
  s2 = FlowUniPC(shift=5.0).set_timesteps(8, shift=5)
  assert s2.sigmas[0] > s.sigmas[0]


def test_dpmpp_and_euler_schedules():
  d = FlowDPMpp().set_timesteps(8, shift=5)
  assert d.sigmas[0] == 1.0 and d.timesteps[0] == 1000 and d.timesteps.dtype == np.int64
  e = FlowEuler().set_timesteps(8, shift=1.0)
  assert e.timesteps.dtype == np.float32
  np.testing.assert_array_equal(e.timesteps, FlowEuler().set_timesteps(8, shift=5.0).timesteps)  # shift ignored
  np.testing.assert_array_equal(e.timesteps, e.sigmas[:-1] * np.float32(1000))


def test_unipc_orders():
  p, c = FlowUniPC().orders(8)
  np.testing.assert_array_equal(p, [1, 2, 2, 2, 2, 2, 2, 1])   # warm-up and lower_order_final
  np.testing.assert_array_equal(c, [0, 1, 2, 2, 2, 2, 2, 2])   # no corrector at step 0
  _, c = FlowUniPC(disable_corrector=(0, 3)).orders(8)
  np.testing.assert_array_equal(c, [0, 0, 2, 2, 0, 2, 2, 2])


@pytest.mark.parametrize("kind", ["dpmpp", "euler"])
def test_final_step_lands_on_x0(kind):
  sched = get_scheduler(kind)
  sigmas = sched.set_timesteps(4, 5.0).sigmas
  x, outs = _inputs(1)
  st = sched.init_state(sigmas, x)
  prev, _ = sched.step(st, outs[0], 3, x)          # last step: sigma_next = 0
  np.testing.assert_allclose(np.asarray(prev), np.asarray(x - sigmas[3] * outs[0]), atol=1e-6)


def test_scheduler_from_checkpoint_config():
  path = os.path.join(fixture_path("pipeline_tiny"), "checkpoint", "scheduler", "scheduler_config.json")
  with open(path) as f:
    cfg = json.load(f)
  assert scheduler_from_config(cfg) == FlowUniPC()
  with pytest.raises(Gen3RInputError, match="unsupported _class_name"):
    scheduler_from_config({**cfg, "_class_name": "DDIMScheduler"})
  with pytest.raises(Gen3RInputError, match="thresholding"):
    scheduler_from_config({**cfg, "thresholding": True})
  with pytest.raises(Gen3RInputError, match="solver_order 3"):
    scheduler_from_config({**cfg, "solver_order": 3})


def test_input_errors():
  with pytest.raises(Gen3RInputError, match="unknown scheduler 'ddim'"):
    get_scheduler("ddim")
  with pytest.raises(Gen3RInputError, match="bad option"):
    get_scheduler("euler", solver_order=2)
  for bad in (0, -3, 2.5, True):
    with pytest.raises(Gen3RInputError, match="num_inference_steps must be a positive integer"):
      FlowUniPC().set_timesteps(bad, 5.0)
  for bad in (0, -1.0, float("nan")):
    with pytest.raises(Gen3RInputError, match="shift must be a finite positive number"):
      FlowDPMpp().set_timesteps(8, bad)
  # the reference looks up its start index by timestep and breaks when the first two coincide
  with pytest.raises(Gen3RInputError, match="first two integer timesteps coincide"):
    FlowUniPC().set_timesteps(251, 5.0)
  FlowUniPC().set_timesteps(250, 5.0)


def test_unipc_reproduces_denoise_loop_from_recorded_guidance():
  # the denoise_loop_tiny fixture records the guided noise the official loop fed to UniPC (4 steps, shift 5)
  from gen3r_jax.testing.fixture import Fixture
  fx = Fixture.open(fixture_path("denoise_loop_tiny"))
  sched = get_scheduler("unipc")
  schedule = sched.set_timesteps(fx.config["num_inference_steps"], fx.config["shift"])
  np.testing.assert_array_equal(schedule.timesteps, fx.tensor("timesteps"))
  traj = scan_steps(sched, schedule.sigmas, jnp.asarray(fx.tensor("latents_init")),
                    jnp.asarray(fx.tensor("guided_noise_pred_per_step")))
  np.testing.assert_allclose(np.asarray(traj), fx.tensor("latents_per_step"), atol=2.2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_inputs_keep_dtype(kind):
  sched = get_scheduler(kind)
  schedule = sched.set_timesteps(3, 5.0)
  x, outs = _inputs(3)
  xb, ob = x.astype(jnp.bfloat16), outs.astype(jnp.bfloat16)
  traj = scan_steps(sched, schedule.sigmas, xb, ob)
  assert traj.dtype == jnp.bfloat16
  ref = scan_steps(sched, schedule.sigmas, xb.astype(jnp.float32), ob.astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(traj.astype(jnp.float32)), np.asarray(ref), atol=0.05, rtol=0.02)
