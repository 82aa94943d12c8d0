"""Gen3R's geometry decode path: geometry latents -> adapter -> VGGT heads -> depth, points, cameras.

The geometry half of the official ``Gen3RPipeline.decode_latents`` (run by ``infer.py`` with
``min_max_depth_mask=True``), as a plain function of arrays and models::

    out = decode_geometry(adapter, vggt, z_geo)     # z_geo [B, t, 70, 70, 16] (normalised, channels-last)
    out["depth"] [B, F, H, W, 1]       out["depth_conf"] [B, F, H, W]        (F = 1 + 4(t - 1), H = W = 560)
    out["points"] [B, F, H, W, 3]      out["points_conf"] [B, F, H, W]       (VGGT's point head)
    out["pose_enc"] [B, F, 9]          out["extrinsics"] [B, F, 3, 4] (world-to-camera, OpenCV)
    out["intrinsics"] [B, F, 3, 3]     out["c2w"] [B, F, 4, 4] (float64, host)
    out["pcds"] [B, F, H, W, 3] float64 (depth unprojection)   out["masks"] [B, F, H, W] bool

Stages:

1. ``adapter.decode(z_geo)`` -> tokens ``[B, F, 40, 40, 5D]`` (``D = 2 * vggt embed_dim``; jitted by the adapter);
2. one jit over the heads only (the aggregator is never used, so a VGGT whose aggregator was never
   loaded works): :func:`convert_to_token_list` (the 5th chunk averaged into the camera + 4 register slots),
   camera head (all refinement iterations), ``pose_encoding_to_extri_intri`` at ``(h * 14, w * 14)``, the DPT
   depth and point heads (in chunks of ``frames_chunk_size`` frames);
3. on the host in numpy (float64 points, as the reference): depth unprojection per batch element and the
   per-frame percentile masks (``depth > max(1e-8, p0.1)`` and ``depth < min(p98, 50)``; with
   ``min_max_depth_mask=False`` only ``depth > 1e-8``). The reference squeezes a batch of one; here each batch
   element is unprojected on its own.

Outputs of step 2 are float32 whatever the compute dtype of the models. Inputs are checked before any jit.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.models.geometry_adapter.model import TOKEN_GRID
from gen3r_jax.nn.jit import FAST_COMPILE, module_jit
from gen3r_jax.models.vggt.geometry import (convert_to_token_list, pose_encoding_to_extri_intri,
                                            unproject_depth_map_to_point_map)

SPECIAL_TOKENS = 5  # camera + 4 registers, filled by convert_to_token_list


def check_models(adapter, vggt) -> None:
  """The adapter's decoded channels must be the 5 token chunks (``5 * 2 * embed_dim``) VGGT's heads read."""
  d = 2 * vggt.cfg.embed_dim
  require(adapter.cfg.output_dim == 5 * d,
          f"geometry adapter output_dim {adapter.cfg.output_dim} does not match VGGT: its heads read 5 chunks of "
          f"2 * embed_dim = {d} channels ({5 * d} in all); load the adapter and VGGT of the same release.")
  require(vggt.cfg.patch_start_idx == SPECIAL_TOKENS,
          f"VGGT has {vggt.cfg.num_register_tokens} register tokens, but Gen3R's decoded token lists carry a camera "
          f"token + 4 registers ({SPECIAL_TOKENS} special tokens) that the DPT heads skip; use num_register_tokens=4.")


def check_latents(adapter, z_geo, image_hw: tuple[int, int] | None, patch_size: int, grid: int = TOKEN_GRID
                  ) -> None:
  """Shape checks of ``z_geo`` (the adapter's) and of an explicit ``image_hw`` against the ``grid`` of decoded
  tokens."""
  if hasattr(z_geo, "ndim") and z_geo.ndim == 5 and z_geo.shape[-1] != adapter.cfg.z_dim \
      and z_geo.shape[1] == adapter.cfg.z_dim:
    raise Gen3RInputError(
        f"z_geo: got shape {tuple(z_geo.shape)}, which looks like PyTorch's [B, C, t, h, w]; JAX latents are "
        "channels-last [B, t, 70, 70, 16]: use z.transpose(0, 2, 3, 4, 1).")
  if hasattr(z_geo, "ndim") and z_geo.ndim == 5 and z_geo.shape[3] == 2 * z_geo.shape[2]:
    raise Gen3RInputError(
        f"z_geo: got shape {tuple(z_geo.shape)}, twice as wide as high: these look like the joint [wan | geometry] "
        "latents; pass only the geometry (width-right) half, e.g. split_joint_latents(latents)[1].")
  adapter.check_latents(z_geo)
  if image_hw is not None:
    want = (grid * patch_size, grid * patch_size)
    require(tuple(int(v) for v in image_hw) == want,
            f"image_hw {tuple(image_hw)} does not match the decoded token grid: {grid}x{grid} tokens of patch "
            f"{patch_size} give {want[0]}x{want[1]} images (leave image_hw out to use it).")


def split_joint_latents(latents) -> tuple[jax.Array, jax.Array]:
  """``[B, t, 70, 140, 16]`` joint latents -> (Wan half, geometry half), each ``[B, t, 70, 70, 16]``
  (the official ``latents.chunk(2, dim=-1)`` on the width axis)."""
  require(hasattr(latents, "ndim") and latents.ndim == 5 and latents.shape[3] % 2 == 0,
          f"latents: expected [B, t, h, 2w, C] joint latents with an even width, got "
          f"{tuple(getattr(latents, 'shape', ()))}.")
  w = latents.shape[3] // 2
  return latents[:, :, :, :w], latents[:, :, :, w:]


@module_jit(static_argnames=("patch_size", "frames_chunk_size", "with_points"),
            compiler_options=FAST_COMPILE)  # no parameter copies out; 25 -> 6 s compile (gen3r_jax.nn.jit)
def run_heads(camera_head, depth_head, point_head, tokens: jax.Array, *, patch_size: int,
              frames_chunk_size: int | None = None, with_points: bool = True) -> dict[str, jax.Array]:
  """Decoded tokens ``[B, F, h, w, 5D]`` -> head outputs (float32; traced, unchecked).

  Returns ``special [B, F, 5, D]`` (camera + register tokens), ``pose_enc_list [iters, B, F, 9]``,
  ``pose_enc``, ``extrinsics [B, F, 3, 4]``, ``intrinsics [B, F, 3, 3]``, ``depth [B, F, H, W, 1]``,
  ``depth_conf [B, F, H, W]`` and, with ``with_points``, ``points [B, F, H, W, 3]``, ``points_conf``.
  """
  token_list, image_hw = convert_to_token_list(tokens, patch_size)        # [4, B, F, 5 + h*w, D]
  f32 = lambda x: x.astype(jnp.float32)                                   # noqa: E731
  pose = f32(camera_head(token_list[-1]))                                 # [iters, B, F, 9]
  extrinsics, intrinsics = pose_encoding_to_extri_intri(pose[-1], image_hw)
  depth, depth_conf = depth_head(token_list, image_hw, frames_chunk_size)
  out = dict(special=f32(token_list[0, :, :, :5]), pose_enc_list=pose, pose_enc=pose[-1],
             extrinsics=f32(extrinsics), intrinsics=f32(intrinsics), depth=f32(depth), depth_conf=f32(depth_conf))
  if with_points:
    points, points_conf = point_head(token_list, image_hw, frames_chunk_size)
    out.update(points=f32(points), points_conf=f32(points_conf))
  return out


def extrinsics_to_c2w(extrinsics: np.ndarray) -> np.ndarray:
  """World-to-camera ``[..., 3, 4]`` -> camera-to-world ``[..., 4, 4]`` (float64, closed form ``[R^T | -R^T t]``)."""
  e = np.asarray(extrinsics, np.float64)
  r, t = e[..., :3, :3], e[..., :3, 3:]
  rt = np.swapaxes(r, -1, -2)
  c2w = np.zeros(e.shape[:-2] + (4, 4))
  c2w[..., :3, :3] = rt
  c2w[..., :3, 3:] = -rt @ t
  c2w[..., 3, 3] = 1.0
  return c2w


def unproject_batch(depth, extrinsics, intrinsics, *, min_max_depth_mask: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Host unprojection of ``depth [B, F, H, W(, 1)]`` with per-frame cameras -> (``pcds [B, F, H, W, 3]``
  float64, ``masks [B, F, H, W]`` bool), each batch element exactly as the reference's squeezed call."""
  depth, extrinsics, intrinsics = (np.asarray(a, np.float32) for a in (depth, extrinsics, intrinsics))
  outs = [unproject_depth_map_to_point_map(d, e, k, min_max_depth_mask=min_max_depth_mask)
          for d, e, k in zip(depth, extrinsics, intrinsics)]
  return np.stack([p for p, _ in outs]), np.stack([m for _, m in outs])


def decode_geometry(adapter, vggt, z_geo, *, image_hw: tuple[int, int] | None = None,
                    min_max_depth_mask: bool = True, frames_chunk_size: int | None = None,
                    points: bool = True, unproject: bool = True, return_tokens: bool = False) -> dict:
  """Decode geometry latents ``z_geo [B, t, 70, 70, z]`` (normalised, channels-last) to depth, points, cameras.

  Args:
    adapter: a :class:`~gen3r_jax.models.geometry_adapter.model.GeometryAdapter`.
    vggt: a :class:`~gen3r_jax.models.vggt.VGGT` (only its camera / depth / point heads are used).
    z_geo: the geometry half of the final latents (see :func:`split_joint_latents`).
    image_hw: optional check of the output size; it is always the token grid times the patch size (560x560).
    min_max_depth_mask: the per-frame percentile depth mask of ``infer.py`` (else ``depth > 1e-8``).
    frames_chunk_size: frames per DPT-head chunk (``vggt.cfg.frames_chunk_size`` when None; 0 = all at once).
    points: also run VGGT's point head (``points`` / ``points_conf``).
    unproject: also unproject depth on the host (``pcds`` / ``masks``).
    return_tokens: also return the decoded adapter tokens ``[B, F, 40, 40, 5D]`` (large at full size).

  Returns:
    a dict of arrays (module docstring), plus ``special`` ``[B, F, 5, D]`` and ``pose_enc_list``
    ``[iters, B, F, 9]``; head outputs are jax arrays, ``pcds`` / ``masks`` / ``c2w`` numpy.
  """
  check_models(adapter, vggt)
  p = vggt.cfg.patch_size
  check_latents(adapter, z_geo, image_hw, p)
  require(frames_chunk_size is None or (isinstance(frames_chunk_size, int) and frames_chunk_size >= 0),
          f"frames_chunk_size must be a non-negative integer or None, got {frames_chunk_size!r}.")
  tokens = adapter.decode(jnp.asarray(z_geo))                             # [B, F, 40, 40, 5D]
  out = run_heads(vggt.camera_head, vggt.depth_head, vggt.point_head, tokens, patch_size=p,
                  frames_chunk_size=frames_chunk_size, with_points=points)
  out["c2w"] = extrinsics_to_c2w(np.asarray(out["extrinsics"]))
  if return_tokens:
    out["tokens"] = tokens
  if unproject:
    out["pcds"], out["masks"] = unproject_batch(out["depth"], out["extrinsics"], out["intrinsics"],
                                                min_max_depth_mask=min_max_depth_mask)
  return out
