"""Stage-1 loss terms against direct numpy transcriptions of the official definitions (loss_utils.py, diffusers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen3r_jax.training import losses as L


def test_smooth_l1_matches_torch_definition():
  x = np.array([-1.0, -0.2, -0.05, 0.0, 0.1, 0.149, 0.151, 3.0], np.float32)
  beta = 0.15
  ref = np.where(np.abs(x) < beta, 0.5 * x * x / beta, np.abs(x) - 0.5 * beta)
  np.testing.assert_allclose(L.smooth_l1(jnp.asarray(x), jnp.zeros_like(x), beta), ref, rtol=1e-6)


def test_camera_loss_weights_iterations_and_components():
  rng = np.random.default_rng(0)
  pred = rng.normal(size=(4, 2, 3, 9)).astype(np.float32)
  gt = rng.normal(size=(4, 2, 3, 9)).astype(np.float32)
  d = np.abs(pred - gt)
  ref = 0.0
  for i, w in enumerate([0.6 ** 3, 0.6 ** 2, 0.6, 1.0]):
    ref += w * (d[i, ..., :3].mean() + d[i, ..., 3:7].mean() + 0.5 * d[i, ..., 7:].mean())
  np.testing.assert_allclose(L.camera_loss(jnp.asarray(pred), jnp.asarray(gt)), ref / 4, rtol=1e-6)


def test_camera_loss_fixes_nan_and_clamps_at_100():
  pred = np.zeros((4, 1, 1, 9), np.float32)
  gt = np.zeros_like(pred)
  pred[..., 0] = np.nan          # translation error NaN -> 0
  pred[..., 3] = 1e4             # rotation error clamped to 100
  got = float(L.camera_loss(jnp.asarray(pred), jnp.asarray(gt)))
  ref = sum(w * 100.0 / 4 for w in [0.216, 0.36, 0.6, 1.0]) / 4
  assert got == pytest.approx(ref, rel=1e-5)


def test_regression_loss_is_clamped_euclidean_not_squared():
  pred = np.zeros((1, 1, 2, 2, 3), np.float32)
  gt = np.zeros_like(pred)
  gt[0, 0, 0, 0] = [3.0, 4.0, 0.0]       # 5
  gt[0, 0, 0, 1] = [300.0, 0.0, 0.0]     # clamped to 100
  gt[0, 0, 1, 0] = [np.nan, 0.0, 0.0]    # NaN -> 0
  assert float(L.regression_loss(jnp.asarray(pred), jnp.asarray(gt))) == pytest.approx(105.0 / 4)


def test_regression_loss_gradient_is_zero_not_nan_at_zero_error():
  x = jnp.zeros((1, 1, 2, 2, 1))
  g = jax.grad(lambda p: L.regression_loss(p, jnp.zeros_like(p)))(x)
  assert np.all(np.isfinite(g)) and np.all(g == 0)


def test_cosine_similarity_clamps_each_norm_at_eps():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  y = jnp.array([[4.0, 3.0], [1.0, 0.0]])
  np.testing.assert_allclose(L.cosine_similarity(x, y), [24.0 / 25.0, 0.0], atol=1e-7)


def test_kl_sums_channels_frames_height_and_keeps_width():
  rng = np.random.default_rng(1)
  q = rng.normal(size=(2, 3, 4, 5, 8)).astype(np.float32)   # [B, T, H, W, 2z], z = 4
  p = rng.normal(size=(2, 3, 4, 5, 8)).astype(np.float32)
  q[..., 4] = 40.0                                          # logvar beyond +20 is clamped
  got = np.asarray(L.kl_to(jnp.asarray(q), jnp.asarray(p)))
  assert got.shape == (2, 5)
  # diffusers in torch layout [B, C, T, H, W], sum over dims (1, 2, 3)
  qt, pt = np.transpose(q, (0, 4, 1, 2, 3)), np.transpose(p, (0, 4, 1, 2, 3))
  mq, lq = qt[:, :4].astype(np.float64), np.clip(qt[:, 4:], -30, 20).astype(np.float64)
  mp, lp = pt[:, :4].astype(np.float64), np.clip(pt[:, 4:], -30, 20).astype(np.float64)
  el = (mq - mp) ** 2 / np.exp(lp) + np.exp(lq) / np.exp(lp) - 1.0 - lq + lp
  np.testing.assert_allclose(got, 0.5 * el.sum(axis=(1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("target, current, weight", [
    (6.58, 1324.1, 1e-3),    # the fixture's case: floor(log10(0.00497)) = -3
    (1.0, 0.5, 1.0),         # KL below the target: 1
    (1.0, 1.0, 1.0),         # not strictly greater: 1
    (1.0, 100.0, 1e-2),      # exact power of ten: floor(-2) = -2
    (1.0, 99.99, 1e-2),
    (1.0, 100.01, 1e-3),
])
def test_adaptive_weight_power_of_ten(target, current, weight):
  got = L.adaptive_weight(jnp.float32(target), jnp.float32(current))
  assert float(got) == pytest.approx(weight, rel=1e-6)


def test_adaptive_weight_has_no_gradient():
  g = jax.grad(lambda k: L.adaptive_weight(jnp.float32(1.0), k) * k)(jnp.float32(500.0))
  assert float(g) == pytest.approx(1e-3)


def test_loss_config_from_fixture_reads_weights(fixtures_dir):
  import json
  import os
  from tests.conftest import fixture_path
  with open(os.path.join(fixture_path("training_stage1_tiny"), "fixture.json")) as f:
    cfg = L.Stage1LossConfig.from_fixture(json.load(f)["config"])
  assert (cfg.recon_loss_weight, cfg.similarity_loss_weight, cfg.align_kl_loss_weight) == (0.5, 0.1, 2.0)
  assert (cfg.camera_gamma, cfg.weight_focal, cfg.depth_point_hard_max) == (0.6, 0.5, 100.0)
  with pytest.raises(ValueError, match="L1 camera loss"):
    L.Stage1LossConfig.from_fixture({"camera_loss": {"loss_type": "l2"}})
