"""The CFG denoising loop: fixture parity through the production function, one compile per run, the scanned
variant agrees, guidance off, and bad inputs fail before compiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.convert.core import load_torch_weights
from gen3r_jax.convert.tables.wan_dit import table
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import abstract_model
from gen3r_jax.sampling import denoise as dn
from gen3r_jax.testing.cases import denoise_loop as case
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path


@pytest.fixture(scope="module")
def setup():
  fx = Fixture.open(fixture_path("denoise_loop_tiny"))
  cfg = WanDiTConfig.from_fixture(fx.config["transformer"])
  model = abstract_model(cfg)
  load_torch_weights(model, table(cfg), fx.weights_source())
  # committed parameters, as a loaded checkpoint has them (the step must still compile only once)
  nnx.update(model, jax.device_put(nnx.state(model), jax.devices()[0]))
  sched = case.scheduler_of(fx.config["scheduler"])
  schedule = sched.set_timesteps(int(fx.config["num_inference_steps"]), float(fx.config["shift"]))
  ctx = dn.cfg_context([fx.tensor("pos_context0")], [fx.tensor("neg_context0")], cfg)
  kw = dict(context=ctx, clip_fea=jnp.asarray(fx.tensor("clip_context")), y=case.cl(fx.tensor("control_latents")),
            y_camera=case.cl(fx.tensor("camera_latents")))
  return fx, model, sched, schedule, kw, case.cl(fx.tensor("latents_init"))


def test_loop_matches_fixture_and_compiles_once(setup):
  fx, model, sched, schedule, kw, x = setup
  before = dn.denoise_step._cache_size()
  out = dn.denoise(model, sched, schedule, x, guidance_scale=5.0, record=True, progress=False, **kw)
  assert dn.denoise_step._cache_size() - before == 1          # step index and timestep are traced: one compile
  atol, rtol = fx.tolerance()
  ref = fx.tensor("latents_per_step")
  np.testing.assert_allclose(case.pt(out.history), ref, atol=atol + rtol * np.abs(ref).max(), rtol=0)
  np.testing.assert_allclose(case.pt(out.guided), fx.tensor("guided_noise_pred_per_step"), atol=5 * atol, rtol=0)
  np.testing.assert_array_equal(np.asarray(out.latents), out.history[-1])
  assert np.asarray(x).shape == out.latents.shape                # the caller's latents were not donated away

  scan = dn.denoise_scan(model, sched, schedule, x, guidance_scale=5.0, **kw)
  np.testing.assert_allclose(scan.history, out.history, atol=1e-5, rtol=0)


def test_guidance_one_is_the_conditional_prediction(setup):
  _, model, sched, schedule, kw, x = setup
  pos_only = dict(kw, context=kw["context"][1:])
  off = dn.denoise(model, sched, schedule, x, guidance_scale=1.0, record=True, progress=False, **pos_only)
  # guidance 1 with CFG algebra: u + 1 * (c - u) = c, so the first guided noise equals the conditional one
  g = dn._guided_noise(model, x, jnp.float32(schedule.timesteps[0]), kw["context"], kw["clip_fea"], kw["y"],
                       kw["y_camera"], jnp.float32(1.0), True)
  np.testing.assert_allclose(off.guided[0], np.asarray(g), atol=1e-5, rtol=0)


def test_cfg_context_order_and_padding():
  cfg = WanDiTConfig.tiny()
  pos, neg = np.ones((3, cfg.text_dim), np.float32), 2 * np.ones((5, cfg.text_dim), np.float32)
  ctx = np.asarray(dn.cfg_context([pos], [neg], cfg))
  assert ctx.shape == (2, cfg.text_len, cfg.text_dim)
  assert (ctx[0, :5] == 2).all() and (ctx[0, 5:] == 0).all()     # negative (uncond) row first
  assert (ctx[1, :3] == 1).all() and (ctx[1, 3:] == 0).all()
  assert dn.cfg_context([pos], None, cfg).shape == (1, cfg.text_len, cfg.text_dim)


def test_bad_inputs_raise_before_compiling(setup):
  _, model, sched, schedule, kw, x = setup
  with pytest.raises(Gen3RInputError, match="context: 1 rows for 1 latents"):
    dn.denoise(model, sched, schedule, x, progress=False, **dict(kw, context=kw["context"][:1]))
  with pytest.raises(Gen3RInputError, match="latents"):
    dn.denoise(model, sched, schedule, jnp.moveaxis(x, -1, 1), progress=False, **kw)
  with pytest.raises(Gen3RInputError, match="y \\(control latents"):
    dn.denoise(model, sched, schedule, x, progress=False, **dict(kw, y=kw["y"][..., :4]))
