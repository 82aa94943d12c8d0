"""Camera metrics: AUC on hand-computed error lists, angles against SciPy, invariances, bad input."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.eval import camera


def _trajectory(n=6, seed=0):
  rng = np.random.default_rng(seed)
  w2c = np.tile(np.eye(4), (n, 1, 1))
  w2c[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
  w2c[:, :3, 3] = rng.normal(size=(n, 3))
  return w2c


def test_auc_hand_computed():
  # max(e_R, e_t) per pair = [0.5, 2.5, 7, 40]. tau = 5: bins [0,1) [1,2) [2,3) [3,4) [4,5] hold 1, 0, 1, 0, 0
  # pairs, so the cumulative fractions are 1/4, 1/4, 2/4, 2/4, 2/4 and their mean is 0.4.
  r = np.array([0.5, 2.5, 1.0, 40.0])
  t = np.array([0.1, 0.0, 7.0, 3.0])
  assert camera.auc(r, t, 5) == pytest.approx((0.25 + 0.25 + 0.5 + 0.5 + 0.5) / 5)
  # tau = 10: 7 joins at bin [7, 8): cumulative .25 .25 .5 .5 .5 .5 .5 .75 .75 .75
  assert camera.auc(r, t, 10) == pytest.approx((0.25 * 2 + 0.5 * 5 + 0.75 * 3) / 10)
  assert camera.auc(np.zeros(7), np.zeros(7), 30) == 1.0
  assert camera.auc(np.full(3, 31.0), np.zeros(3), 30) == 0.0
  # Exactly tau falls in the last (closed) histogram bin, as numpy.histogram counts it.
  assert camera.auc(np.array([30.0]), np.array([0.0]), 30) == pytest.approx(1 / 30)


def test_rotation_error_matches_scipy_geodesic_angle():
  r1 = Rotation.random(40, random_state=1)
  r2 = Rotation.random(40, random_state=2)
  ref = np.degrees((r1.inv() * r2).magnitude())
  ours = camera.rotation_errors(r1.as_matrix(), r2.as_matrix())
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  # Near 180 degrees the quaternion candidates must stay accurate.
  flip = Rotation.from_rotvec([0, 0, np.radians(179.9)]).as_matrix()
  assert camera.rotation_errors(np.eye(3)[None], flip[None])[0] == pytest.approx(179.9, abs=1e-4)


def test_translation_error_is_direction_only_and_sign_ambiguous():
  t = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  tp = np.array([[5.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  e = camera.translation_errors(t, tp)
  assert e[0] == pytest.approx(0.0, abs=1e-5)
  assert e[1] == pytest.approx(90.0, abs=1e-5)
  assert e[2] == pytest.approx(0.0, abs=1e-5)  # opposite direction counts as 0 (min(e, |180 - e|))
  tp2 = np.array([[np.cos(np.radians(20)), np.sin(np.radians(20)), 0.0]])
  assert camera.translation_errors(t[:1], tp2)[0] == pytest.approx(20.0, abs=1e-5)


def test_perfect_prediction_up_to_similarity_scores_auc_one():
  w2c = _trajectory(6)
  # Same cameras in another world frame and scale: X' = s Rw X + tw.
  s, rw, tw = 3.0, Rotation.random(random_state=9).as_matrix(), np.array([1.0, -2.0, 0.5])
  c2w = camera.inverse_se3(w2c)
  c2w_p = c2w.copy()
  c2w_p[:, :3, :3] = rw @ c2w[:, :3, :3]
  c2w_p[:, :3, 3] = s * c2w[:, :3, 3] @ rw.T + tw
  m = camera.camera_metrics(camera.inverse_se3(c2w_p), w2c)
  assert m["num_pairs"] == 15
  assert m["auc@30"] == 1.0 and m["auc@5"] == 1.0
  assert m["rot_err_mean_deg"] < 1e-3 and m["trans_err_mean_deg"] < 1e-3


def test_relative_errors_follow_vggt_pairing():
  gt = _trajectory(4, seed=3)
  pred = gt.copy()
  pred[2, :3, :3] = Rotation.from_euler("z", 10, degrees=True).as_matrix() @ pred[2, :3, :3]
  e_r, e_t = camera.relative_pose_errors(pred, gt)
  i, j = camera.pair_index(4)
  assert list(zip(i, j)) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
  touched = (i == 2) | (j == 2)
  np.testing.assert_allclose(e_r[touched], 10.0, atol=1e-4)
  np.testing.assert_allclose(e_r[~touched], 0.0, atol=1e-4)


def test_camera_bad_inputs():
  w2c = _trajectory(5)
  with pytest.raises(Gen3RInputError, match="frame counts must match"):
    camera.camera_metrics(w2c[:4], w2c)
  with pytest.raises(Gen3RInputError, match="at least 2 frames"):
    camera.camera_metrics(w2c[:1], w2c[:1])
  with pytest.raises(Gen3RInputError, match=r"\[F, 4, 4\]"):
    camera.camera_metrics(w2c[:, :3, :3], w2c)
  with pytest.raises(Gen3RInputError, match="non-empty"):
    camera.auc(np.zeros(0), np.zeros(0))
