"""VGGT (as vendored by Gen3R: aggregator + camera head + DPT depth/point heads; no track head).

    model = VGGT(VGGTConfig.vggt_1b(), rngs=nnx.Rngs(0))       # or VGGT.from_checkpoint(dir)
    out = model(images)                                         # images [B, S, H, W, 3] in [0, 1]
    out["pose_enc"] [B, S, 9]; out["depth"] [B, S, H, W, 1]; out["depth_conf"] [B, S, H, W];
    out["world_points"] [B, S, H, W, 3]; out["world_points_conf"] [B, S, H, W]

``validate_images`` runs on the host before anything is traced (``VGGT.__call__`` calls it, value checks only on
concrete arrays).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.nn.params import abstract_module

from gen3r_jax.errors import Gen3RInputError, check_array, require
from gen3r_jax.models.checkpoint import CheckpointMixin
from gen3r_jax.models.init import sharded_init
from gen3r_jax.models.vggt.aggregator import Aggregator
from gen3r_jax.models.vggt.camera_head import CameraHead
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.vggt.dpt_head import DPTHead
from gen3r_jax.parallel.rules import DEFAULT_RULES


def _is_tracer(x) -> bool:
  tracer = getattr(jax.core, "Tracer", None)
  return isinstance(x, tracer) if tracer is not None else "Tracer" in type(x).__name__


def validate_images(images, patch_size: int = 14, *, check_values: bool = True):
  """Check VGGT's input ``[B, S, H, W, 3]`` (or ``[S, H, W, 3]``) in [0, 1]; returns it with a batch axis."""
  if not hasattr(images, "shape"):
    raise Gen3RInputError(f"images: expected an array [B, S, H, W, 3], got {type(images).__name__}.")
  if len(images.shape) == 4:
    images = images[None]
  check_array(images, "images", ndim=5, layout="[B, S, H, W, 3]", floating=True)
  b, s, h, w, c = images.shape
  require(c == 3, f"images: expected 3 RGB channels in the last axis of [B, S, H, W, 3], got {c} (shape "
                  f"{tuple(images.shape)}); JAX inputs are channels-last: transpose a [B, S, 3, H, W] tensor with "
                  "x.transpose(0, 1, 3, 4, 2).")
  require(b > 0 and s > 0, f"images: need at least one batch element and one frame, got shape "
                           f"{tuple(images.shape)} (B = {b}, S = {s}).")
  require(h > 0 and w > 0 and h % patch_size == 0 and w % patch_size == 0,
          f"images: height and width must be positive multiples of the patch size {patch_size}, got {h}x{w}; "
          f"resize or crop to e.g. {max(patch_size, h // patch_size * patch_size)}x"
          f"{max(patch_size, w // patch_size * patch_size)} (Gen3R uses 560x560).")
  if check_values and not _is_tracer(images):
    lo, hi = float(jnp.min(images)), float(jnp.max(images))
    require(lo >= 0.0 and hi <= 1.0 and np.isfinite(lo) and np.isfinite(hi),
            f"images: values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]; VGGT normalises with ImageNet "
            "statistics itself: pass x / 255 for uint8 images or (x + 1) / 2 for videos in [-1, 1].")
  return images


class VGGT(nnx.Module, CheckpointMixin):
  Config = VGGTConfig

  def __init__(self, cfg: VGGTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.aggregator = Aggregator(cfg, rngs=rngs)
    self.camera_head = CameraHead(cfg, rngs=rngs)
    self.point_head = DPTHead(cfg, 4, cfg.point_activation, cfg.point_conf_activation, rngs=rngs)
    self.depth_head = DPTHead(cfg, 2, cfg.depth_activation, cfg.depth_conf_activation, rngs=rngs)

  def heads(self, tokens: jax.Array, image_hw: tuple[int, int], *, frames_chunk_size: int | None = None,
            camera: bool = True, depth: bool = True, points: bool = True) -> dict[str, jax.Array]:
    """Run the heads on the kept layers ``tokens [4, B, S, P, 2C]`` for images of size ``image_hw``."""
    out = {}
    if camera:
      pose = self.camera_head(tokens[-1])
      out["pose_enc_list"] = pose                                            # [iters, B, S, 9]
      out["pose_enc"] = pose[-1]
    if depth:
      out["depth"], out["depth_conf"] = self.depth_head(tokens, image_hw, frames_chunk_size)
    if points:
      out["world_points"], out["world_points_conf"] = self.point_head(tokens, image_hw, frames_chunk_size)
    return out

  def __call__(self, images: jax.Array, *, frames_chunk_size: int | None = None) -> dict[str, jax.Array]:
    """``images [B, S, H, W, 3]`` (or ``[S, H, W, 3]``) in [0, 1] -> predictions (see module docstring)."""
    images = validate_images(images, self.cfg.patch_size)
    return forward_jit(self, jnp.asarray(images), frames_chunk_size)

  def forward(self, images: jax.Array, frames_chunk_size: int | None = None) -> dict[str, jax.Array]:
    """Unchecked, untransformed forward (for use inside your own ``jit``)."""
    tokens = self.aggregator(images)                                         # [4, B, S, P, 2C]
    return self.heads(tokens, images.shape[2:4], frames_chunk_size=frames_chunk_size)


@functools.partial(nnx.jit, static_argnames=("frames_chunk_size",), graph_updates=False)  # no param copies
def forward_jit(model: VGGT, images: jax.Array, frames_chunk_size: int | None = None):
  return model.forward(images, frames_chunk_size)


def abstract_model(cfg: VGGTConfig) -> VGGT:
  """The model with ``ShapeDtypeStruct`` parameters (nothing allocated): fill it with ``load_torch_weights``."""
  return abstract_module(lambda: VGGT(cfg, rngs=nnx.Rngs(0)))


def create(cfg: VGGTConfig, *, seed: int = 0, mesh=None, rules=DEFAULT_RULES) -> VGGT:
  """Random-init model from one jitted init (eager ``nnx.vmap`` init is very slow); with ``mesh`` every
  parameter lands straight on its shard (:func:`gen3r_jax.models.init.sharded_init`)."""
  return sharded_init(lambda r: VGGT(cfg, rngs=r), seed=seed, mesh=mesh, rules=rules)
