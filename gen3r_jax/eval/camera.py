"""Camera metrics as VGGT (evaluation/test_co3d.py) and the Gen3R paper compute them.

Poses are 4x4 world-to-camera matrices ``E`` (OpenCV axes). For every unordered pair ``i < j`` (VGGT's
``build_pair_index``, ``torch.combinations`` order) a relative pose is formed for ground truth and prediction
alike. How, is a named convention (:data:`CONVENTIONS`), because VGGT's script changed:

* ``"vggt"`` (default): ``E_i E_j^-1``, on the poses as given. This is the current
  ``facebookresearch/vggt`` ``evaluation/test_co3d.py`` (``se3_to_relative_pose_error``:
  ``gt_se3[i1].bmm(closed_form_inverse_se3(gt_se3[i2]))``).
* ``"vggt_early"``: each trajectory is first made relative to its first camera (``E_k <- E_k E_0^-1``), then
  ``E_i^-1 E_j`` (``closed_form_inverse_se3(se3[i1]).bmm(se3[i2])``), as an early copy of that script (still
  found in forks) did. Per-pair errors and AUC differ from ``"vggt"`` (on noisy random 8-camera trajectories by
  up to ~90 degrees for one pair and ~0.2 in AUC@30); both are invariant to the prediction's world frame and
  scale, and both give AUC 1 for a prediction that equals the ground truth up to a similarity.

Then, per pair:

* rotation error: geodesic angle between the two relative rotations through unit quaternions,
  ``arccos(1 - 2 max(1 - (q_pred . q_gt)^2, 1e-15))`` in degrees;
* translation error: angle between the two relative translations, normalised with ``+1e-15``,
  ``arccos(sqrt(1 - max(1 - (t_pred . t_gt)^2, 1e-15)))``, then ``min(e, |180 - e|)``; NaN/inf become 1e6.
  Direction only, so no scale alignment is needed.
* AUC@tau (``calculate_auc_np``): ``e = max(e_R, e_t)`` per pair; histogram over unit bins ``0..tau``; divided by
  the number of pairs; mean of the cumulative sum (the mean over thresholds 1..tau of the fraction of pairs
  below the threshold). The paper reports tau = 30; 5/10/15 are given for reference.

Everything runs in float64 NumPy: the work is tiny (F(F-1)/2 pairs of 3x3 matrices).
"""

from __future__ import annotations

import numpy as np

from gen3r_jax.camera_axes import as_4x4, invert_rigid, rotmat_to_qvec
from gen3r_jax.errors import require

AUC_THRESHOLDS = (5, 10, 15, 30)
# convention name -> the relative pose it forms (printed in the evaluation output)
CONVENTIONS: dict[str, str] = {
    "vggt": "E_i inv(E_j) (facebookresearch/vggt evaluation/test_co3d.py, current)",
    "vggt_early": "inv(E_i') E_j' with E_k' = E_k inv(E_0) (early copy of VGGT's test_co3d.py)",
}
DEFAULT_CONVENTION = "vggt"


def check_convention(convention: str) -> None:
  require(convention in CONVENTIONS,
          f"camera convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}.")


def _check_poses(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  require(x.ndim == 3 and x.shape[1:] in ((4, 4), (3, 4)),
          f"{name}: expected [F, 4, 4] (or [F, 3, 4]) world-to-camera matrices, got shape {x.shape}.")
  require(np.isfinite(x).all(), f"{name}: camera matrices contain NaN or infinite values.")
  return as_4x4(x)


# rigid inverse and rotation -> quaternion: the one implementation each, in the bottom-layer camera helpers
# (matrix_to_quaternion's sign is w >= 0; rotation_errors squares the dot product, so the sign never matters)
inverse_se3 = invert_rigid
matrix_to_quaternion = rotmat_to_qvec


def rotation_errors(r_gt: np.ndarray, r_pred: np.ndarray, eps: float = 1e-15) -> np.ndarray:
  """Geodesic angle in degrees between rotation matrices ``[N, 3, 3]`` (VGGT's ``rotation_angle``)."""
  q_gt, q_pred = matrix_to_quaternion(r_gt), matrix_to_quaternion(r_pred)
  loss = np.maximum(1.0 - np.sum(q_gt * q_pred, axis=-1) ** 2, eps)
  return np.degrees(np.arccos(np.clip(1.0 - 2.0 * loss, -1.0, 1.0)))


def translation_errors(t_gt: np.ndarray, t_pred: np.ndarray, eps: float = 1e-15,
                       default: float = 1e6) -> np.ndarray:
  """Angle in degrees between translation directions ``[N, 3]``, sign-ambiguous (VGGT's ``translation_angle``)."""
  a = t_pred / (np.linalg.norm(t_pred, axis=-1, keepdims=True) + eps)
  b = t_gt / (np.linalg.norm(t_gt, axis=-1, keepdims=True) + eps)
  loss = np.maximum(1.0 - np.sum(a * b, axis=-1) ** 2, eps)
  with np.errstate(invalid="ignore"):
    err = np.degrees(np.arccos(np.sqrt(1.0 - loss)))
  err = np.where(np.isfinite(err), err, default)
  return np.minimum(err, np.abs(180.0 - err))


def pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
  """All unordered pairs ``i < j`` of ``n`` frames, in ``torch.combinations`` order."""
  i, j = np.triu_indices(n, k=1)
  return i, j


def relative_poses(w2c: np.ndarray, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
  """Relative poses ``[P, 4, 4]`` of all pairs ``i < j`` of world-to-camera matrices ``[F, 4, 4]``."""
  check_convention(convention)
  i, j = pair_index(w2c.shape[0])
  if convention == "vggt":
    return w2c[i] @ inverse_se3(w2c[j])
  rel = w2c @ inverse_se3(w2c[:1])
  return inverse_se3(rel[i]) @ rel[j]


def relative_pose_errors(w2c_pred, w2c_gt, convention: str = DEFAULT_CONVENTION) -> tuple[np.ndarray, np.ndarray]:
  """Rotation and translation errors in degrees ``([P], [P])`` over all ``P = F(F-1)/2`` frame pairs."""
  check_convention(convention)
  pred = _check_poses(w2c_pred, "predicted cameras")
  gt = _check_poses(w2c_gt, "ground-truth cameras")
  require(pred.shape[0] == gt.shape[0],
          f"camera metrics: {pred.shape[0]} predicted and {gt.shape[0]} ground-truth cameras; the frame counts "
          "must match.")
  require(pred.shape[0] >= 2, "camera metrics: need at least 2 frames to form a relative pose.")
  rel_gt = relative_poses(gt, convention)
  rel_pred = relative_poses(pred, convention)
  e_r = rotation_errors(rel_gt[:, :3, :3], rel_pred[:, :3, :3])
  e_t = translation_errors(rel_gt[:, :3, 3], rel_pred[:, :3, 3])
  return e_r, e_t


def auc(r_err, t_err, max_threshold: int = 30) -> float:
  """VGGT's ``calculate_auc_np``: mean over thresholds 1..tau of the fraction of pairs with max error below it."""
  r_err = np.asarray(r_err, np.float64).reshape(-1)
  t_err = np.asarray(t_err, np.float64).reshape(-1)
  require(r_err.shape == t_err.shape and r_err.size > 0,
          f"auc: need equally long, non-empty error lists, got {r_err.size} and {t_err.size}.")
  require(int(max_threshold) == max_threshold and max_threshold > 0,
          f"auc: max_threshold must be a positive integer, got {max_threshold}.")
  e = np.maximum(r_err, t_err)
  hist, _ = np.histogram(e, bins=np.arange(int(max_threshold) + 1))
  return float(np.mean(np.cumsum(hist.astype(np.float64) / e.size)))


def camera_metrics(w2c_pred, w2c_gt, thresholds=AUC_THRESHOLDS,
                   convention: str = DEFAULT_CONVENTION) -> dict[str, float | int | str]:
  """AUC@tau for each threshold, RRA/RTA@30 (fractions below 30 degrees), the mean errors and the relative-pose
  convention used (``"convention"``, ``"relative_pose"``)."""
  e_r, e_t = relative_pose_errors(w2c_pred, w2c_gt, convention)
  out: dict[str, float | int | str] = {f"auc@{int(t)}": auc(e_r, e_t, int(t)) for t in thresholds}
  out.update({"rra@30": float(np.mean(e_r < 30)), "rta@30": float(np.mean(e_t < 30)),
              "rot_err_mean_deg": float(np.mean(e_r)), "trans_err_mean_deg": float(np.mean(e_t)),
              "num_pairs": int(e_r.size), "convention": convention, "relative_pose": CONVENTIONS[convention]})
  return out
