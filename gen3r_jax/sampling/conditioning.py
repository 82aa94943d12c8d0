"""Conditioning tensors of the Gen3R pipeline, channels-last: rays, Plücker maps, camera latents, control video,
masks and the CLIP input. Pure array functions (the reference's inline code in ``Gen3RPipeline.__call__``,
``compute_rays`` and ``infer.py``).

Shapes (F frames ``1 + 4k``, f = ``(F + 3) // 4`` latent frames, latent size ``h x w`` per half):

* :func:`compute_rays` ``c2w [F, 4, 4], K [F, 3, 3] -> rays_o, rays_d [F, H, W, 3]``: pixel centres
  ``(x + 0.5, y + 0.5)``, ``d = ((x + .5 - cx) / (fx + 1e-8), (y + .5 - cy) / (fy + 1e-8), 1) @ R^T``
  normalised AFTER the rotation by ``norm + 1e-8``; ``o`` = camera centre.
* :func:`plucker` ``-> [F, H, W, 6]`` = ``(o x d, d)``.
* :func:`camera_latents` ``[B, F, H, W, 6] -> [B, f, H, 2W, 24]``: the first frame repeated 4x, frames grouped
  by 4; channel ``c * 4 + k`` of latent frame ``j`` = Plücker channel ``c`` of padded frame ``4j + k``
  (original frame ``max(4j + k - 3, 0)``); duplicated along width for the appearance | geometry halves.
* :func:`control_video` ``[B, n, H, W, 3] -> [B, F, H, W, 3]``: 1 image -> first frame then zeros; 2 images
  -> first, zeros, last (at frame F - 1); F images -> unchanged.
* :func:`control_masks` ``-> [B, f, h, 2w, 4]``: 1 on the LEFT (appearance) half of the conditioning frames,
  0 on the geometry half and on other frames; first frame repeated 4x, channel = frame within the group.
  :func:`frame_masks` does the same from a per-example frame selection ``[B, F]`` (stage-2 training).
* :func:`clip_image_input` ``[..., H, W, 3]`` in [0, 1] ``-> [..., H, W, 3]`` in [-1, 1]: ``x * 255`` in the
  input's dtype, TRUNCATED to uint8 (``astype(np.uint8)``), ``/ 255``, ``(v - 0.5) / 0.5``.

The reference hard-codes batch 1 in the camera-latent and mask rearrangements; these functions accept any B.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import check_array, fmt_list, require
from gen3r_jax.sampling.cameras import check_num_frames

TASKS = ("1view", "2view", "allview")


def compute_rays(c2w, K, h: int, w: int) -> tuple[jax.Array, jax.Array]:
  """Ray origins and unit directions ``[F, H, W, 3]`` (float32) for camera-to-world ``c2w [F, 4, 4]`` and
  pixel intrinsics ``K [F, 3, 3]``."""
  check_array(c2w, "c2w", ndim=3, layout="[F, 4, 4]", dims={1: 4, 2: 4})
  check_array(K, "K", ndim=3, layout="[F, 3, 3]", dims={0: c2w.shape[0], 1: 3, 2: 3})
  return _rays(jnp.asarray(c2w, jnp.float32), jnp.asarray(K, jnp.float32), int(h), int(w))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _rays(c2w: jax.Array, K: jax.Array, h: int, w: int) -> tuple[jax.Array, jax.Array]:
  fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]            # [F, 1, 1]
  cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
  x = (jnp.arange(w, dtype=jnp.float32)[None, None, :] + 0.5 - cx) / (fx + 1e-8)   # [F, 1, W]
  y = (jnp.arange(h, dtype=jnp.float32)[None, :, None] + 0.5 - cy) / (fy + 1e-8)   # [F, H, 1]
  r = c2w[:, :3, :3, None, None]                                      # [F, 3, 3, 1, 1]
  # d_world_j = x R_j0 + y R_j1 + R_j2, one [F, H, W] plane per component, stacked last. Written out: no matmul
  # (no reduced-precision matmul on accelerators), and no [F, H, W, 3, 3] broadcast, on which XLA's GPU fusion
  # pass spent 5 s of compile (0.2 s now; H100, 2026-11-26).
  d = [x * r[:, j, 0] + y * r[:, j, 1] + r[:, j, 2] for j in range(3)]  # 3 x [F, H, W]
  norm = jnp.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) + 1e-8
  d = jnp.stack([c / norm for c in d], axis=-1)                       # [F, H, W, 3]
  o = jnp.broadcast_to(c2w[:, None, None, :3, 3], d.shape)
  return o, d


def plucker(c2w, K, h: int, w: int) -> jax.Array:
  """Plücker embedding ``[F, H, W, 6]`` = ``(o x d, d)``."""
  o, d = compute_rays(c2w, K, h, w)
  return jnp.concatenate([jnp.cross(o, d), d], axis=-1)


def check_task(task: str) -> str:
  require(task in TASKS, f"unknown task {task!r}: choose one of {fmt_list(TASKS)} (first frame, first + last "
                         "frames, or all frames).")
  return task


def task_plucker(c2w, K, h: int, w: int, *, cameras: str, task: str) -> jax.Array:
  """``infer.py``: the Plücker map, replaced by zeros for ``cameras == 'free'`` or the ``allview`` task."""
  check_task(task)
  p = plucker(c2w, K, h, w)
  if cameras == "free" or task == "allview":
    p = jnp.zeros_like(p)
  return p


def _pad_first_frame(x: jax.Array) -> jax.Array:
  """``[B, F, ...] -> [B, F + 3, ...]`` with the first frame repeated 4x."""
  return jnp.concatenate([jnp.repeat(x[:, :1], 4, axis=1), x[:, 1:]], axis=1)


def camera_latents(plucker_maps) -> jax.Array:
  """``[B, F, H, W, 6] -> [B, f, H, 2W, 24]`` (channel ``c * 4 + k``; width duplicated)."""
  check_array(plucker_maps, "control_cameras (Plücker maps)", ndim=5, layout="[B, F, H, W, 6]", dims={4: 6})
  b, f, h, w, c = plucker_maps.shape
  check_num_frames(f)
  x = _pad_first_frame(jnp.asarray(plucker_maps))                    # [B, F + 3, H, W, 6]
  x = x.reshape(b, (f + 3) // 4, 4, h, w, c)                          # [B, f, k, H, W, c]
  x = jnp.transpose(x, (0, 1, 3, 4, 5, 2)).reshape(b, (f + 3) // 4, h, w, c * 4)
  return jnp.concatenate([x, x], axis=3)                              # [B, f, H, 2W, 24]


def control_index(num_control: int, num_frames: int) -> tuple[int, ...]:
  """Frames that carry a conditioning image: ``(0,)``, ``(0, F - 1)`` or all ``F`` (the pipeline's rule)."""
  f = check_num_frames(num_frames)
  require(num_control in (1, 2, f) and (num_control != 2 or f >= 2),
          f"got {num_control} conditioning images for num_frames={f}: give 1 (first frame), 2 (first and last "
          f"frames) or {f} (all frames).")
  if num_control == 1:
    return (0,)
  if num_control == 2:
    return (0, f - 1)
  return tuple(range(f))


def control_masks(num_control: int, num_frames: int, latent_hw: tuple[int, int], batch: int = 1) -> jax.Array:
  """Binary masks ``[B, f, h, 2w, 4]`` (float32) concatenated after the 16 control-latent channels."""
  selected = np.zeros((batch, num_frames), np.float32)
  selected[:, list(control_index(num_control, num_frames))] = 1.0
  return frame_masks(selected, latent_hw)


def frame_masks(selected, latent_hw: tuple[int, int]) -> jax.Array:
  """Per-example masks: ``selected [B, F]`` (1 on the conditioning frames) -> ``[B, f, h, 2w, 4]`` float32
  (traceable; the appearance half carries the frame's value, the geometry half is 0)."""
  h, w = int(latent_hw[0]), int(latent_hw[1])
  sel = jnp.asarray(selected, jnp.float32)
  b, f = sel.shape
  m = jnp.broadcast_to(sel[:, :, None, None], (b, f, h, w))
  m = _pad_first_frame(jnp.concatenate([m, jnp.zeros_like(m)], axis=3))   # [B, F + 3, h, 2w]
  return m.reshape(b, (f + 3) // 4, 4, h, 2 * w).transpose(0, 1, 3, 4, 2)


def control_video(images, num_frames: int) -> jax.Array:
  """Zero-filled conditioning video ``[B, n, H, W, 3] -> [B, F, H, W, 3]`` (values in [0, 1])."""
  check_array(images, "control_images", ndim=5, layout="[B, n, H, W, 3]", dims={4: 3})
  b, n, h, w, c = images.shape
  control_index(n, num_frames)
  images = jnp.asarray(images)
  if n == num_frames:
    return images
  if n == 1:
    return jnp.concatenate([images, jnp.zeros((b, num_frames - 1, h, w, c), images.dtype)], axis=1)
  zeros = jnp.zeros((b, num_frames - 2, h, w, c), images.dtype)
  return jnp.concatenate([images[:, :1], zeros, images[:, -1:]], axis=1)


def clip_image_input(first_frame) -> jax.Array:
  """CLIP input from the first conditioning frame ``[..., H, W, 3]`` in [0, 1] -> float32 in [-1, 1].

  ``x * 255`` is computed in the input's dtype (bfloat16 in the released ``infer.py``), then truncated to
  uint8 (values are clipped to [0, 255] first, which changes nothing for inputs in [0, 1]).
  """
  check_array(first_frame, "first control frame", floating=True)
  require(first_frame.shape[-1] == 3, f"first control frame: expected [..., H, W, 3], got {first_frame.shape}.")
  x = jnp.asarray(first_frame)
  u8 = jnp.floor(jnp.clip((x * 255).astype(jnp.float32), 0.0, 255.0)).astype(jnp.int32)
  return jnp.asarray(_UINT8_TO_CLIP)[u8]


# to_tensor (u / 255) then (v - 0.5) / 0.5, in float32 exactly as torchvision does it (a table, so that no
# compiler rewrite of the division can change the last bit)
_UINT8_TO_CLIP = (np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
