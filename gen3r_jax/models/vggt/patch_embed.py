"""DINOv2 ViT with registers as VGGT's patch embed (``dinov2_vitl14_reg``): only ``x_norm_patchtokens`` is used.

``[N, H, W, 3]`` normalised images -> patch conv (``p x p`` stride ``p``) -> prepend cls, add the (interpolated)
positional embedding, insert the register tokens after cls -> blocks (LayerNorm eps 1e-6, LayerScale, exact GELU,
no qk-norm, no RoPE) -> final LayerNorm -> patch tokens ``[N, h*w, C]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.models.config import dtype_of
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.vggt.layers import Block
from gen3r_jax.nn.linear import Conv
from gen3r_jax.nn.norms import LayerNorm
from gen3r_jax.nn.params import make_param
from gen3r_jax.nn.resample import resize
from gen3r_jax.nn.stack import scan_layers, stack


def _normal(std):
  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.normal(key, shape, dtype)
  return init


class DinoPatchEmbed(nnx.Module):
  """``[N, H, W, 3] -> [N, (H/p)*(W/p), C]`` (DINOv2 ``forward_features(x)["x_norm_patchtokens"]``)."""

  def __init__(self, cfg: VGGTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c, p = cfg.embed_dim, cfg.patch_size
    dtype, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    self.proj = Conv(3, c, (p, p), strides=p, padding=0, dtype=dtype, param_dtype=pdt, rngs=rngs,
                     axes=(None, None, "conv_in", "embed"))
    self.cls_token = make_param(rngs, _normal(1e-6), (c,), ("embed",), pdt)                      # [C]
    self.pos_embed = make_param(rngs, _normal(0.02), (1 + cfg.pos_grid ** 2, c), (None, "embed"), pdt)
    self.register_tokens = make_param(rngs, _normal(1e-6), (cfg.pe_num_register_tokens, c), (None, "embed"), pdt)
    self.blocks = stack(lambda r: Block(
        c, cfg.pe_num_heads, mlp_ratio=cfg.pe_mlp_ratio, norm_eps=1e-6, qkv_bias=cfg.qkv_bias,
        proj_bias=cfg.proj_bias, ffn_bias=cfg.ffn_bias, qk_norm=False, init_values=cfg.pe_init_values,
        impl=cfg.attention, dtype=dtype, param_dtype=pdt, rngs=r), cfg.pe_depth, rngs)
    self.norm = LayerNorm(c, eps=1e-6, rngs=rngs, param_dtype=pdt)

  def interpolate_pos_encoding(self, h: int, w: int) -> jax.Array:
    """Positional embedding ``[1 + h*w, C]`` (float32) for an ``h x w`` patch grid (row 0: cls).

    Bicubic with antialias (PyTorch ``_upsample_bicubic2d_aa``), to an explicit size when the interpolate offset
    is 0 (Gen3R's VGGT), else with ``scale_factor = (n + offset) / M`` as DINOv2's historical kludge.
    """
    cfg = self.cfg
    pos = self.pos_embed[...].astype(jnp.float32)
    m = cfg.pos_grid
    if h * w == m * m and h == w:
      return pos
    grid = pos[1:].reshape(m, m, -1)                                       # [M, M, C]
    if cfg.pe_interpolate_offset:
      sf = ((h + cfg.pe_interpolate_offset) / m, (w + cfg.pe_interpolate_offset) / m)
      out = resize(grid, (int(m * sf[0]), int(m * sf[1])), "bicubic", antialias=cfg.pe_interpolate_antialias,
                   scale_factor=sf)
    else:
      out = resize(grid, (h, w), "bicubic", antialias=cfg.pe_interpolate_antialias)
    if out.shape[:2] != (h, w):
      raise ValueError(f"pos-embed interpolation gave {out.shape[:2]}, expected {(h, w)}")
    return jnp.concatenate([pos[:1], out.reshape(h * w, -1)], axis=0)

  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    n, hh, ww, _ = x.shape
    h, w = hh // cfg.patch_size, ww // cfg.patch_size
    t = self.proj(x).reshape(n, h * w, cfg.embed_dim)                      # [N, h*w, C]
    cls = jnp.broadcast_to(self.cls_token[...].astype(t.dtype), (n, 1, cfg.embed_dim))
    t = jnp.concatenate([cls, t], axis=1)                                  # [N, 1 + h*w, C]
    t = (t.astype(jnp.float32) + self.interpolate_pos_encoding(h, w)[None]).astype(t.dtype)
    reg = jnp.broadcast_to(self.register_tokens[...].astype(t.dtype), (n, cfg.pe_num_register_tokens,
                                                                       cfg.embed_dim))
    t = jnp.concatenate([t[:, :1], reg, t[:, 1:]], axis=1)                 # [N, 1 + R + h*w, C]
    t = scan_layers(self.blocks, t, remat=cfg.remat)
    t = self.norm(t)
    return t[:, 1 + cfg.pe_num_register_tokens:]                           # [N, h*w, C]
