"""VGGT aggregator: DINOv2 patch tokens + camera/register tokens -> alternating frame / global attention.

Images ``[B, S, H, W, 3]`` in [0, 1] -> ImageNet normalisation -> DINOv2 patch tokens ``[B*S, P', C]`` ->
prepend the camera token and the register tokens (index 0 of the ``[2, n, C]`` parameters for frame 0, index 1
for the other frames) -> ``depth`` pairs of (frame block on ``[B*S, P, C]``, global block on ``[B, S*P, C]``) with
2D RoPE (patch positions ``(row + 1, col + 1)``, special tokens ``(0, 0)``) and q/k LayerNorm.

Layer ``i``'s output is ``concat(frame_i, global_i)`` ``[B, S, P, 2C]``. The pairs run as one scan over the two
stacks (:func:`gen3r_jax.nn.stack.scan`); only the requested layers are kept, so memory stays bounded by ``K + 1``
layer outputs.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.models.config import dtype_of
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.vggt.layers import Block, rope_tables
from gen3r_jax.models.vggt.patch_embed import DinoPatchEmbed, _normal
from gen3r_jax.nn.params import make_param
from gen3r_jax.nn.stack import scan, stack

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: jax.Array) -> jax.Array:
  """``(x - mean) / std`` with ImageNet statistics, channels-last, float32 math as the reference buffers."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return ((images.astype(jnp.float32) - mean) / std).astype(images.dtype)


def token_positions(h: int, w: int, num_special: int) -> np.ndarray:
  """RoPE positions ``[num_special + h*w, 2]`` (y, x): special tokens at 0, patch (r, c) at (r + 1, c + 1)."""
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  patch = np.stack([yy.reshape(-1), xx.reshape(-1)], axis=-1) + 1
  return np.concatenate([np.zeros((num_special, 2), np.int64), patch], axis=0)


class Aggregator(nnx.Module):
  def __init__(self, cfg: VGGTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c = cfg.embed_dim
    dtype, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    self.patch_embed = DinoPatchEmbed(cfg, rngs=rngs)
    self.camera_token = make_param(rngs, _normal(1e-6), (2, 1, c), (None, None, "embed"), pdt)
    self.register_token = make_param(rngs, _normal(1e-6), (2, cfg.num_register_tokens, c), (None, None, "embed"),
                                     pdt)

    def block(r):
      return Block(c, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, norm_eps=1e-5, qkv_bias=cfg.qkv_bias,
                   proj_bias=cfg.proj_bias, ffn_bias=cfg.ffn_bias, qk_norm=cfg.qk_norm,
                   init_values=cfg.init_values, impl=cfg.attention, dtype=dtype, param_dtype=pdt, rngs=r)

    self.frame_blocks = stack(block, cfg.depth, rngs)
    self.global_blocks = stack(block, cfg.depth, rngs)

  def special_tokens(self, b: int, s: int, dtype) -> jax.Array:
    """Camera + register tokens ``[B, S, 1 + R, C]`` (index 0 for frame 0, index 1 for frames 1..S-1)."""
    tok = jnp.concatenate([self.camera_token[...], self.register_token[...]], axis=1).astype(dtype)  # [2, 1+R, C]
    per_frame = jnp.concatenate([tok[:1], jnp.broadcast_to(tok[1:], (s - 1,) + tok.shape[1:])], axis=0)
    return jnp.broadcast_to(per_frame[None], (b,) + per_frame.shape)

  def __call__(self, images: jax.Array, layers: Sequence[int] | None = None) -> jax.Array:
    """``images [B, S, H, W, 3]`` in [0, 1] -> the selected layer outputs ``[K, B, S, P, 2C]``.

    ``layers`` defaults to ``cfg.intermediate_layer_idx`` (the layers the heads read). Patch tokens start at
    ``cfg.patch_start_idx``.
    """
    cfg = self.cfg
    layers = tuple(cfg.intermediate_layer_idx if layers is None else layers)
    b, s, hh, ww, _ = images.shape
    h, w = hh // cfg.patch_size, ww // cfg.patch_size
    dtype = dtype_of(cfg.dtype)
    x = normalize_images(images).astype(dtype).reshape(b * s, hh, ww, 3)
    patch = self.patch_embed(x).reshape(b, s, h * w, cfg.embed_dim)         # [B, S, h*w, C]
    tokens = jnp.concatenate([self.special_tokens(b, s, patch.dtype), patch], axis=2)  # [B, S, P, C]
    head_dim = cfg.embed_dim // cfg.num_heads
    cos, sin = rope_tables(token_positions(h, w, cfg.patch_start_idx), head_dim, cfg.rope_freq)  # [P, D]
    rope_frame = (jnp.asarray(cos), jnp.asarray(sin))
    rope_global = (jnp.asarray(np.tile(cos, (s, 1))), jnp.asarray(np.tile(sin, (s, 1))))         # [S*P, D]
    return self.run_blocks(tokens, layers, rope_frame, rope_global)

  def run_blocks(self, tokens: jax.Array, layers: tuple[int, ...], rope_frame, rope_global) -> jax.Array:
    """The alternating-attention scan on ``tokens [B, S, P, C]``; returns ``[K, B, S, P, 2C]``."""
    b, s, p, c = tokens.shape

    def body(pair, x):
      frame, glob = pair
      x = frame(x.reshape(b * s, p, c), rope_frame).reshape(b, s, p, c)
      f_out = x
      x = glob(x.reshape(b, s * p, c), rope_global).reshape(b, s, p, c)
      return x, jnp.concatenate([f_out, x], axis=-1)                        # [B, S, P, 2C]

    _, kept = scan((self.frame_blocks, self.global_blocks), body, tokens, remat=self.cfg.remat, collect=layers)
    return kept
