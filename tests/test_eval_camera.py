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


def _noisy(gt, seed):
  rng = np.random.default_rng(seed)
  pred = gt.copy()
  pred[:, :3, :3] = Rotation.from_rotvec(0.2 * rng.normal(size=(len(gt), 3))).as_matrix() @ pred[:, :3, :3]
  pred[:, :3, 3] += 0.3 * rng.normal(size=(len(gt), 3))
  return pred


def _reference_errors(w2c_pred, w2c_gt, convention):
  """Independent NumPy/SciPy implementation of each convention's per-pair errors (np.linalg.inv, SciPy angles).

  "vggt": relative = E_i inv(E_j) on the poses as given (facebookresearch/vggt evaluation/test_co3d.py,
  se3_to_relative_pose_error). "vggt_early": E_k <- E_k inv(E_0), then relative = inv(E_i) E_j.
  """
  def rel(e):
    n = len(e)
    if convention == "vggt_early":
      e = np.stack([e[k] @ np.linalg.inv(e[0]) for k in range(n)])
      return [np.linalg.inv(e[i]) @ e[j] for i in range(n) for j in range(i + 1, n)]
    return [e[i] @ np.linalg.inv(e[j]) for i in range(n) for j in range(i + 1, n)]
  e_r, e_t = [], []
  for a, b in zip(rel(w2c_gt), rel(w2c_pred)):
    e_r.append(np.degrees(Rotation.from_matrix(a[:3, :3].T @ b[:3, :3]).magnitude()))
    ta, tb = a[:3, 3] / np.linalg.norm(a[:3, 3]), b[:3, 3] / np.linalg.norm(b[:3, 3])
    e = np.degrees(np.arccos(np.clip(abs(ta @ tb), -1, 1)))
    e_t.append(min(e, abs(180 - e)))
  return np.array(e_r), np.array(e_t)


@pytest.mark.parametrize("convention", ["vggt", "vggt_early"])
def test_both_conventions_match_an_independent_implementation(convention):
  gt = _trajectory(7, seed=4)
  pred = _noisy(gt, 5)
  e_r, e_t = camera.relative_pose_errors(pred, gt, convention)
  ref_r, ref_t = _reference_errors(pred, gt, convention)
  np.testing.assert_allclose(e_r, ref_r, atol=1e-5)
  np.testing.assert_allclose(e_t, ref_t, atol=1e-5)
  m = camera.camera_metrics(pred, gt, convention=convention)
  assert m["convention"] == convention and m["relative_pose"] == camera.CONVENTIONS[convention]
  assert m["auc@30"] == pytest.approx(camera.auc(ref_r, ref_t, 30), abs=1e-9)


def test_default_convention_is_current_vggt_and_differs_from_the_early_one():
  gt = _trajectory(8, seed=6)
  pred = _noisy(gt, 7)
  assert camera.DEFAULT_CONVENTION == "vggt"
  default = camera.camera_metrics(pred, gt)
  assert default["convention"] == "vggt"
  assert default == camera.camera_metrics(pred, gt, convention="vggt")
  now, early = camera.relative_pose_errors(pred, gt), camera.relative_pose_errors(pred, gt, "vggt_early")
  assert np.abs(now[0] - early[0]).max() > 5 and np.abs(now[1] - early[1]).max() > 5
  # Both stay invariant to the prediction's world frame and scale.
  rw, tw, s = Rotation.random(random_state=8).as_matrix(), np.array([0.3, 2.0, -1.0]), 4.0
  c2w = camera.inverse_se3(pred)
  c2w[:, :3, :3] = rw @ c2w[:, :3, :3]
  c2w[:, :3, 3] = s * c2w[:, :3, 3] @ rw.T + tw
  for conv in camera.CONVENTIONS:
    moved = camera.relative_pose_errors(camera.inverse_se3(c2w), gt, conv)
    ref = camera.relative_pose_errors(pred, gt, conv)
    np.testing.assert_allclose(moved[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(moved[1], ref[1], atol=1e-5)
  with pytest.raises(Gen3RInputError, match="camera convention must be one of vggt, vggt_early"):
    camera.camera_metrics(pred, gt, convention="opencv")
