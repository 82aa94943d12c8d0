"""Camera / depth geometry around VGGT: pose encodings, unprojection, depth masks, scene scale, token lists.

* :func:`pose_encoding_to_extri_intri` (jnp, jit-able): ``[..., 9]`` -> extrinsic ``[..., 3, 4]`` (camera from
  world, OpenCV) and intrinsic ``[..., 3, 3]`` (principal point ``(W/2, H/2)``, float32).
* :func:`unproject_depth_map_to_point_map` / :func:`depth_point_masks` (numpy on the host, float64 points exactly
  as the reference, which also runs in numpy): pixel grid without a +0.5 offset, camera coordinates rounded to
  float32, world points in float64.
* :func:`scene_scale` (jnp): ``0.8 * median(depth)`` with torch's LOWER median.
* :func:`convert_to_token_list` (jnp): Gen3R's decoded geometry tokens -> the 4 layer token lists of the heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import check_array, require


def quat_to_mat(q: jax.Array) -> jax.Array:
  """Quaternion XYZW (scalar last, not renormalised: ``two_s = 2 / |q|^2``) -> rotation ``[..., 3, 3]``."""
  i, j, k, r = (q[..., n] for n in range(4))
  two_s = 2.0 / jnp.sum(q * q, axis=-1)
  o = jnp.stack([
      1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
      two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
      two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)], axis=-1)
  return o.reshape(q.shape[:-1] + (3, 3))


def pose_encoding_to_extri_intri(pose_enc: jax.Array, image_hw: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """``absT_quaR_FoV`` encoding ``[..., 9]`` -> (extrinsic ``[..., 3, 4]``, intrinsic ``[..., 3, 3]`` float32)."""
  t, quat = pose_enc[..., :3], pose_enc[..., 3:7]
  fov_h, fov_w = pose_enc[..., 7], pose_enc[..., 8]
  extrinsic = jnp.concatenate([quat_to_mat(quat), t[..., None]], axis=-1)
  h, w = image_hw
  fy = (h / 2.0) / jnp.tan(fov_h / 2.0)
  fx = (w / 2.0) / jnp.tan(fov_w / 2.0)
  zero = jnp.zeros_like(fx, dtype=jnp.float32)
  one = jnp.ones_like(fx, dtype=jnp.float32)
  rows = [fx.astype(jnp.float32), zero, zero + w / 2, zero, fy.astype(jnp.float32), zero + h / 2, zero, zero, one]
  intrinsic = jnp.stack(rows, axis=-1).reshape(fx.shape + (3, 3))
  return extrinsic, intrinsic


def depth_point_masks(depth: np.ndarray, min_max_depth_mask: bool, eps: float = 1e-8) -> np.ndarray:
  """Valid-point mask of one depth map ``[H, W]``: ``depth > eps``, or with ``min_max_depth_mask``
  ``depth > max(eps, p0.1)`` and ``depth < min(p98, 50)`` (numpy's linear percentiles, per frame)."""
  if min_max_depth_mask:
    lo = max(eps, np.percentile(depth, 0.1))
    hi = min(np.percentile(depth, 98), 50.0)
    return (depth > lo) & (depth < hi)
  return depth > eps


def _frame_points(depth: np.ndarray, extrinsic: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
  h, w = depth.shape
  fu, fv, cu, cv = intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
  u, v = np.meshgrid(np.arange(w), np.arange(h))
  cam = np.stack(((u - cu) * depth / fu, (v - cv) * depth / fv, depth), axis=-1).astype(np.float32)
  r, t = extrinsic[:3, :3], extrinsic[:3, 3:]
  c2w = np.eye(4)                                  # float64, as the reference's closed-form inverse
  c2w[:3, :3] = r.T
  c2w[:3, 3:] = -np.matmul(r.T, t)
  return np.dot(cam, c2w[:3, :3].T) + c2w[:3, 3]   # [H, W, 3] float64


def unproject_depth_map_to_point_map(depth, extrinsic, intrinsic, *, min_max_depth_mask: bool = False
                                     ) -> tuple[np.ndarray, np.ndarray]:
  """World points ``[S, H, W, 3]`` (float64) and masks ``[S, H, W]`` (bool) from depth ``[S, H, W(, 1)]``,
  extrinsic ``[S, 3, 4]``, intrinsic ``[S, 3, 3]`` (inputs are converted to float32 numpy first)."""
  depth = np.asarray(depth, np.float32)
  extrinsic = np.asarray(extrinsic, np.float32)
  intrinsic = np.asarray(intrinsic, np.float32)
  if depth.ndim == 4:
    depth = depth[..., 0]
  require(depth.ndim == 3, f"depth: expected [S, H, W] or [S, H, W, 1], got shape {depth.shape}")
  require(extrinsic.shape == (depth.shape[0], 3, 4) and intrinsic.shape == (depth.shape[0], 3, 3),
          f"extrinsic/intrinsic must be [S, 3, 4] / [S, 3, 3] with S = {depth.shape[0]}, got "
          f"{extrinsic.shape} / {intrinsic.shape}")
  require(bool(np.all(intrinsic[:, 0, 1] == 0) and np.all(intrinsic[:, 1, 0] == 0)),
          "intrinsic matrices must have zero skew")
  pts = np.stack([_frame_points(d, e, k) for d, e, k in zip(depth, extrinsic, intrinsic)])
  masks = np.stack([depth_point_masks(d, min_max_depth_mask) for d in depth])
  return pts, masks


def scene_scale(depth: jax.Array) -> jax.Array:
  """``0.8 * torch.median(depth)`` over all values; torch's median is the LOWER middle value."""
  flat = jnp.sort(depth.reshape(-1))
  return 0.8 * flat[(flat.shape[0] - 1) // 2]


def convert_to_token_list(tokens: jax.Array, patch_size: int = 14) -> tuple[jax.Array, tuple[int, int]]:
  """Gen3R's decoded geometry tokens ``[B, F, h, w, 5D]`` -> head tokens ``[4, B, F, 5 + h*w, D]`` and the image
  size ``(h * patch_size, w * patch_size)``.

  Channels are ``[layer 4 | layer 11 | layer 17 | layer 23 | camera chunk]``; the camera chunk averaged over
  ``(h, w)`` fills the camera token and the 4 register slots of every layer.
  """
  check_array(tokens, "tokens", ndim=5, layout="[B, F, h, w, 5D]", floating=True)
  b, f, h, w, c = tokens.shape
  require(c % 5 == 0, f"tokens: the channel count {c} must be 5 * D (4 layers + the camera chunk)")
  d = c // 5
  special = jnp.mean(tokens[..., 4 * d:].astype(jnp.float32), axis=(2, 3)).astype(tokens.dtype)  # [B, F, D]
  special = jnp.broadcast_to(special[:, :, None], (b, f, 5, d))
  layers = [jnp.concatenate([special, tokens[..., i * d:(i + 1) * d].reshape(b, f, h * w, d)], axis=2)
            for i in range(4)]
  return jnp.stack(layers), (h * patch_size, w * patch_size)
