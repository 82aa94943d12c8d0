"""The stages of Gen3R sampling as plain functions of models and arrays (wired by ``sampling/pipeline.py``).

Shapes (channels-last; F frames ``1 + 4k``, f = ``(F + 3) // 4``, frames 560 x 560, latents 70 x 70 per half):

* :func:`encode_text`: prompt -> token ids ``[1, L]`` + mask, umT5 embeddings trimmed to their length ``[L_i, D]``.
* :func:`estimate_cameras`: conditioning images ``[1, V, H, W, 3]`` -> VGGT ``pose_enc [1, V, 9]``,
  ``intrinsics [1, V, 3, 3]``, ``depth [1, V, H, W, 1]`` and the scene scale ``0.8 * median(depth)``.
* :func:`trajectory`: cameras (built-in name / JSON path / dict) -> relative ``c2ws [F, 4, 4]``, ``Ks [F, 3, 3]``.
* :func:`camera_conditioning`: -> Plücker ``[1, F, H, W, 6]`` (zeros for ``free`` / ``allview``) and camera
  latents ``[1, f, H, 2W, 24]``.
* :func:`control_latents`: images -> zero-filled control video -> Wan VAE posterior (``mode`` or ``sample``)
  ``[1, f, 70, 70, 16]`` | zeros ``[.., 70, 16]`` along width, + masks -> ``[1, f, 70, 140, 20]``.
* :func:`clip_context`: first control frame -> CLIP tokens ``[1, 257, C]``.
* :func:`decode`: final latents ``[1, f, 70, 140, 16]`` -> rgb ``[1, F, H, W, 3]`` in [0, 1]
  (:func:`decode_rgb`) + the geometry outputs of :func:`~gen3r_jax.sampling.geometry_decode.decode_geometry`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import require
from gen3r_jax.nn.jit import FAST_COMPILE, module_jit
from gen3r_jax.models.vggt.geometry import pose_encoding_to_extri_intri
from gen3r_jax.models.clip.model import encode_videos
from gen3r_jax.models.umt5.t5 import encode_prompts
from gen3r_jax.models.wan_vae.vae import unit_to_vae_range
from gen3r_jax.sampling import conditioning as cond
from gen3r_jax.sampling.cameras import (BUILTIN_TRAJECTORIES, get_poses, resolve_cameras,
                                       scene_scale_from_depth)
from gen3r_jax.sampling.geometry_decode import decode_geometry, split_joint_latents

POSTERIORS = ("sample", "mode")
VGGT_HEADS = ("camera_head", "depth_head", "point_head")  # all the decode path needs of VGGT (no aggregator)


def encode_text(tokenizer, text_encoder, prompt: str, max_length: int = 512) -> dict:
  """``_get_t5_prompt_embeds`` for one prompt: ``{"input_ids" [1, L], "attention_mask" [1, L], "embeds"
  [L_i, D]}`` (padded to ``max_length`` with eos appended; the encoder runs on all positions with the mask)."""
  tok = tokenizer([prompt], max_length=max_length)
  embeds = encode_prompts(text_encoder, tok["input_ids"], tok["attention_mask"])[0]
  return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"], "embeds": embeds}


# module_jit: no parameter copies out (nnx.jit with graph updates would return every parameter, doubling the
# model's device memory during the call) and no Triton GEMM autotuning (26 -> 6 s compile, gen3r_jax.nn.jit)
@module_jit(compiler_options=FAST_COMPILE)
def _vggt_estimate(vggt, images):
  tokens = vggt.aggregator(images)                                         # [4, B, V, P, 2C]
  out = vggt.heads(tokens, images.shape[2:4], camera=True, depth=True, points=False)
  extrinsics, intrinsics = pose_encoding_to_extri_intri(out["pose_enc"], images.shape[2:4])
  f32 = lambda x: x.astype(jnp.float32)                                   # noqa: E731
  return dict(pose_enc=f32(out["pose_enc"]), extrinsics=f32(extrinsics), intrinsics=f32(intrinsics),
              depth=f32(out["depth"]))


def estimate_cameras(vggt, images) -> dict:
  """``infer.py``'s VGGT pass on the conditioning images ``[1, V, H, W, 3]`` in [0, 1] (camera + depth heads).

  Returns numpy ``pose_enc [1, V, 9]``, ``extrinsics``, ``intrinsics [1, V, 3, 3]``, ``depth [1, V, H, W, 1]``
  and ``scene_scale`` (``0.8 * torch.median(depth)``, the lower middle value).
  """
  out = {k: np.asarray(v) for k, v in _vggt_estimate(vggt, jnp.asarray(images, jnp.float32)).items()}
  out["scene_scale"] = scene_scale_from_depth(out["depth"])
  return out


def trajectory(cameras, num_frames: int, estimate: dict | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(c2ws_raw, c2ws [F, 4, 4] relative to the first camera, Ks [F, 3, 3])``; built-in trajectories use
  VGGT's first-frame intrinsics and scene scale (``estimate``)."""
  if isinstance(cameras, str) and cameras in BUILTIN_TRAJECTORIES:
    require(estimate is not None, f"camera trajectory {cameras!r} needs the VGGT estimate of the images.")
    raw = get_poses(cameras, num_frames, estimate["scene_scale"])
    c2ws, ks = resolve_cameras(cameras, num_frames, intrinsics=estimate["intrinsics"][0, 0],
                               scene_scale=estimate["scene_scale"])
    return raw, c2ws, ks
  c2ws, ks = resolve_cameras(cameras, num_frames)
  return c2ws, c2ws, ks


def camera_conditioning(c2ws, ks, size: int, *, cameras, task: str) -> tuple[jax.Array, jax.Array]:
  """Plücker maps ``[1, F, H, W, 6]`` (``infer.py``: zeros for ``free`` cameras or ``allview``) and the camera
  latents ``[1, f, H, 2W, 24]``."""
  name = cameras if isinstance(cameras, str) else "json"
  p = cond.task_plucker(np.asarray(c2ws, np.float32), np.asarray(ks, np.float32), size, size, cameras=name,
                        task=task)[None]
  return p, cond.camera_latents(p)


_vae_input = jax.jit(unit_to_vae_range)


def control_latents(vae, images, num_frames: int, *, posterior: str = "sample", key=None) -> jax.Array:
  """Control latents + masks ``[1, f, h, 2w, 20]`` from the conditioning images ``[1, n, H, W, 3]`` in [0, 1].

  ``posterior``: ``"sample"`` (the official ``latent_dist.sample()``; needs ``key``) or ``"mode"`` (the mean,
  what the parity fixture uses).
  """
  require(posterior in POSTERIORS, f"posterior must be one of {POSTERIORS}, got {posterior!r}.")
  n = images.shape[1]
  video = cond.control_video(jnp.asarray(images, jnp.float32), num_frames)          # [1, F, H, W, 3]
  dist = vae.encode(_vae_input(video))
  z = dist.mode() if posterior == "mode" else dist.sample(key)                         # [1, f, h, w, 16]
  z = z.astype(jnp.float32)
  latent_hw = (z.shape[2], z.shape[3])
  z = jnp.concatenate([z, jnp.zeros_like(z)], axis=3)                                 # [1, f, h, 2w, 16]
  masks = cond.control_masks(n, num_frames, latent_hw, batch=z.shape[0])              # [1, f, h, 2w, 4]
  return jnp.concatenate([z, masks], axis=-1)                                         # [1, f, h, 2w, 20]


def clip_context(clip, images) -> jax.Array:
  """CLIP tokens ``[1, 257, C]`` of the first conditioning frame (``images [1, n, H, W, 3]`` in [0, 1])."""
  x = cond.clip_image_input(jnp.asarray(images)[0, 0])                                # [H, W, 3] in [-1, 1]
  return encode_videos(clip, [x[None]]).astype(jnp.float32)


def decode_rgb(vae, z_app) -> jax.Array:
  """Appearance latents ``[B, t, 70, 70, 16]`` -> rgb ``[B, F, H, W, 3]`` in [0, 1] (float32)."""
  return _to_unit(vae.decode(z_app, clamp=True))


def decode(vae, geo_adapter, vggt, latents, *, min_max_depth_mask: bool = True) -> dict:
  """``Gen3RPipeline.decode_latents``: ``rgb [B, F, H, W, 3]`` in [0, 1] from the appearance half and the
  geometry outputs (``depth``, ``points``, ``extrinsics``, ``intrinsics``, ``c2w``, ``pcds``, ``masks``, ...)
  from the geometry half (only VGGT's heads are used)."""
  z_app, z_geo = split_joint_latents(latents)
  out = decode_geometry(geo_adapter, vggt, z_geo, min_max_depth_mask=min_max_depth_mask)
  out["rgb"] = decode_rgb(vae, z_app)
  return out


@jax.jit
def _to_unit(x):
  return jnp.clip(x.astype(jnp.float32) / 2 + 0.5, 0.0, 1.0)


__all__ = ("POSTERIORS", "encode_text", "estimate_cameras", "trajectory", "camera_conditioning",
           "control_latents", "clip_context", "decode", "decode_rgb", "VGGT_HEADS")
