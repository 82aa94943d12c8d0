"""Camera conventions in one place: which way the camera axes point and which way a pose maps (docs/cameras.md).

Inside gen3r_jax every camera is **OpenCV**: camera axes x right, y down, z forward (the view direction), a pose is
camera-to-world ``c2w [4, 4]`` (``cameras.json`` ``frames[i].c2w``, the official training data's
``transforms.json`` ``transform_matrix``) or its inverse, world-to-camera ``w2c`` (``cameras.json`` /
``infer.py`` ``extrinsics``, COLMAP's ``images.txt`` pose). Intrinsics ``K [3, 3]`` are in pixels of the stored
frames. The one other convention we write is nerfstudio's (and NeRF's / Blender's): **OpenGL** camera axes
(x right, y up, z backward: the camera looks down -z), camera-to-world. Converting between the two flips the
camera's y and z axes: ``c2w_gl = c2w_cv @ diag(1, -1, -1, 1)`` (its own inverse). The world frame is never
changed.

numpy only; imports nothing from gen3r_jax (a bottom-layer helper beside ``errors``).
"""

from __future__ import annotations

import numpy as np


# camera y and z flipped: OpenCV <-> OpenGL camera axes (right-multiplied onto a camera-to-world pose)
FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])
OPENCV = "opencv"
OPENGL = "opengl"
AXES = (OPENCV, OPENGL)


def as_4x4(m) -> np.ndarray:
  """``[..., 3, 4]`` or ``[..., 4, 4]`` -> ``[..., 4, 4]`` float64 (bottom row ``0 0 0 1``)."""
  m = np.asarray(m, np.float64)
  if m.shape[-2:] == (4, 4):
    return m.copy()
  out = np.zeros(m.shape[:-2] + (4, 4))
  out[..., :3, :] = m
  out[..., 3, 3] = 1.0
  return out


def opencv_to_opengl(c2w) -> np.ndarray:
  """Camera-to-world with OpenCV camera axes -> with OpenGL camera axes (nerfstudio ``transform_matrix``)."""
  return as_4x4(c2w) @ FLIP_YZ


def opengl_to_opencv(c2w) -> np.ndarray:
  """Camera-to-world with OpenGL camera axes (nerfstudio) -> with OpenCV camera axes (gen3r_jax)."""
  return as_4x4(c2w) @ FLIP_YZ


def to_opencv(c2w, axes: str) -> np.ndarray:
  """Camera-to-world stored with ``axes`` (``"opencv"`` | ``"opengl"``) -> OpenCV camera axes."""
  if axes not in AXES:
    raise ValueError(f"camera axes must be one of {AXES}, got {axes!r}")
  return opengl_to_opencv(c2w) if axes == OPENGL else as_4x4(c2w)


def invert_rigid(m) -> np.ndarray:
  """Inverse of rigid ``[..., 4, 4]`` transforms (``c2w`` <-> ``w2c``): ``[R t]^-1 = [R^T, -R^T t]``."""
  m = as_4x4(m)
  out = np.zeros_like(m)
  rt = np.swapaxes(m[..., :3, :3], -1, -2)
  out[..., :3, :3] = rt
  out[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, m[..., :3, 3])
  out[..., 3, 3] = 1.0
  return out


def rotmat_to_qvec(r) -> np.ndarray:
  """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` as ``(w, x, y, z)`` with ``w >= 0``
  (COLMAP's ``QW QX QY QZ``). Shepperd's method: the largest of the four candidates is divided by, so it is
  accurate for every rotation."""
  r = np.asarray(r, np.float64)
  m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
  cand = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
  k = np.argmax(cand, -1)
  s = np.sqrt(np.maximum(np.take_along_axis(cand, k[..., None], -1)[..., 0], 1e-300)) * 2   # 4 * |q_k|
  d = lambda i, j: r[..., i, j]  # noqa: E731
  qs = [np.stack([s / 4, (d(2, 1) - d(1, 2)) / s, (d(0, 2) - d(2, 0)) / s, (d(1, 0) - d(0, 1)) / s], -1),
        np.stack([(d(2, 1) - d(1, 2)) / s, s / 4, (d(0, 1) + d(1, 0)) / s, (d(0, 2) + d(2, 0)) / s], -1),
        np.stack([(d(0, 2) - d(2, 0)) / s, (d(0, 1) + d(1, 0)) / s, s / 4, (d(1, 2) + d(2, 1)) / s], -1),
        np.stack([(d(1, 0) - d(0, 1)) / s, (d(0, 2) + d(2, 0)) / s, (d(1, 2) + d(2, 1)) / s, s / 4], -1)]
  q = np.choose(k[..., None], qs)
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  return np.where(q[..., :1] < 0, -q, q)


def qvec_to_rotmat(q) -> np.ndarray:
  """Quaternions ``(w, x, y, z)`` ``[..., 4]`` (normalised here) -> rotation matrices ``[..., 3, 3]``."""
  q = np.asarray(q, np.float64)
  w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
  return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                   np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                   np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


__all__ = ("FLIP_YZ", "OPENCV", "OPENGL", "AXES", "as_4x4", "opencv_to_opengl", "opengl_to_opencv", "to_opencv",
           "invert_rigid", "rotmat_to_qvec", "qvec_to_rotmat")
