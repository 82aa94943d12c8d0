"""One Wan DiT block (self-attention with 3D RoPE, i2v cross-attention, FFN, 6-way modulation) and the head.

Precision follows the official code: the residual stream and the modulation are float32 (``e0`` is float32, so
``x + y * gate`` promotes), norms/RoPE/softmax in float32, projections in the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from gen3r_jax.models.config import dtype_of
from gen3r_jax.nn.attention import attention
from gen3r_jax.nn.linear import Dense
from gen3r_jax.nn.norms import LayerNorm, RMSNorm, layer_norm
from gen3r_jax.nn.params import make_param
from gen3r_jax.nn.rope import apply_rope


def _dense_kw(cfg, rngs, fp8: bool = False):
  return dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), fp8=fp8, rngs=rngs)


def _block_dense_kw(cfg, rngs):
  """The blocks' projections and FFN run in FP8 with ``cfg.gemm == "fp8"`` (the embeddings and the head, ~1 % of
  the FLOPs and the most sensitive layers, stay in the compute dtype)."""
  return _dense_kw(cfg, rngs, fp8=cfg.gemm == "fp8")


def _qk_norm(cfg, rngs):
  return RMSNorm(cfg.dim, eps=cfg.eps, param_dtype=dtype_of(cfg.param_dtype), rngs=rngs) if cfg.qk_norm else None


def _norm(norm, x):
  return x if norm is None else norm(x)


class SelfAttention(nnx.Module):
  """``[B, L, D] -> [B, L, D]``; q/k RMS-normed over the full dim, then split into heads and rotated."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    kw = _block_dense_kw(cfg, rngs)
    self.cfg = cfg
    self.q = Dense(cfg.dim, cfg.dim, axes=("embed", "heads"), **kw)
    self.k = Dense(cfg.dim, cfg.dim, axes=("embed", "heads"), **kw)
    self.v = Dense(cfg.dim, cfg.dim, axes=("embed", "heads"), **kw)
    self.o = Dense(cfg.dim, cfg.dim, axes=("heads", "embed"), **kw)
    self.norm_q = _qk_norm(cfg, rngs)
    self.norm_k = _qk_norm(cfg, rngs)

  def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    cfg = self.cfg
    b, l, _ = x.shape
    dt = dtype_of(cfg.dtype)
    shp = (b, l, cfg.num_heads, cfg.head_dim)
    # names: what remat="attention" keeps (gen3r_jax.nn.stack.SAVED_NAMES)
    q = checkpoint_name(apply_rope(_norm(self.norm_q, self.q(x)).reshape(shp), *rope).astype(dt), "attn_q")
    k = checkpoint_name(apply_rope(_norm(self.norm_k, self.k(x)).reshape(shp), *rope).astype(dt), "attn_k")
    v = checkpoint_name(self.v(x).reshape(shp), "attn_v")                        # [B, L, H, Dh]
    y = attention(q, k, v, implementation=cfg.attention)                          # [B, L, H, Dh]
    return checkpoint_name(self.o(y.reshape(b, l, cfg.dim)), "attn_proj")


class I2VCrossAttention(nnx.Module):
  """``o(attn(q, k_txt, v_txt) + attn(q, k_img, v_img))``; no RoPE, no mask (text padding is attended)."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    kw = _block_dense_kw(cfg, rngs)
    self.cfg = cfg
    for name in ("q", "k", "v", "k_img", "v_img"):
      setattr(self, name, Dense(cfg.dim, cfg.dim, axes=("embed", "heads"), **kw))
    self.o = Dense(cfg.dim, cfg.dim, axes=("heads", "embed"), **kw)
    self.norm_q = _qk_norm(cfg, rngs)
    self.norm_k = _qk_norm(cfg, rngs)
    self.norm_k_img = _qk_norm(cfg, rngs)

  def __call__(self, x: jax.Array, txt: jax.Array, img: jax.Array) -> jax.Array:
    cfg = self.cfg
    b, l, _ = x.shape
    heads = lambda a: a.reshape(b, a.shape[1], cfg.num_heads, cfg.head_dim)
    q = heads(_norm(self.norm_q, self.q(x)))                                    # [B, L, H, Dh]
    y_txt = attention(q, heads(_norm(self.norm_k, self.k(txt))), heads(self.v(txt)),
                      implementation=cfg.attention)
    y_img = attention(q, heads(_norm(self.norm_k_img, self.k_img(img))), heads(self.v_img(img)),
                      implementation=cfg.attention)
    return checkpoint_name(self.o((y_txt + y_img).reshape(b, l, cfg.dim)), "cross_proj")


class FeedForward(nnx.Module):
  def __init__(self, cfg, *, rngs: nnx.Rngs):
    kw = _block_dense_kw(cfg, rngs)
    self.fc1 = Dense(cfg.dim, cfg.ffn_dim, axes=("embed", "mlp"), **kw)
    self.fc2 = Dense(cfg.ffn_dim, cfg.dim, axes=("mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return checkpoint_name(self.fc2(jax.nn.gelu(self.fc1(x), approximate=True)), "ffn_out")


def _modulation_init(dim):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype) / jnp.sqrt(jnp.float32(dim)).astype(dtype)
  return init


class DiTBlock(nnx.Module):
  """``x [B, L, D]`` float32 residual stream; ``e0 [B, 6, D]`` float32 time modulation."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pd = dtype_of(cfg.param_dtype)
    self.self_attn = SelfAttention(cfg, rngs=rngs)
    self.norm3 = LayerNorm(cfg.dim, eps=cfg.eps, param_dtype=pd, rngs=rngs) if cfg.cross_attn_norm else None
    self.cross_attn = I2VCrossAttention(cfg, rngs=rngs)
    self.ffn = FeedForward(cfg, rngs=rngs)
    self.modulation = make_param(rngs, _modulation_init(cfg.dim), (6, cfg.dim), (None, "embed"), pd)

  def __call__(self, x: jax.Array, e0: jax.Array, rope, txt: jax.Array, img: jax.Array) -> jax.Array:
    eps, dt = self.cfg.eps, dtype_of(self.cfg.dtype)
    e = self.modulation[...].astype(jnp.float32)[None] + e0                    # [B, 6, D]
    shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (e[:, i:i + 1] for i in range(6))
    h = layer_norm(x, None, None, eps) * (1 + scale_sa) + shift_sa
    x = x + self.self_attn(h.astype(dt), rope).astype(jnp.float32) * gate_sa
    h = _norm(self.norm3, x)
    x = x + self.cross_attn(h.astype(dt), txt, img).astype(jnp.float32)
    h = layer_norm(x, None, None, eps) * (1 + scale_ff) + shift_ff
    return x + self.ffn(h.astype(dt)).astype(jnp.float32) * gate_ff              # [B, L, D] float32


class Head(nnx.Module):
  """``head(norm(x) * (1 + m1) + m0)`` with ``m = modulation + e`` (the time *embedding*, not ``e0``)."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pd = dtype_of(cfg.param_dtype)
    out = cfg.out_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    self.head = Dense(cfg.dim, out, axes=("embed", None), **_dense_kw(cfg, rngs))
    self.modulation = make_param(rngs, _modulation_init(cfg.dim), (2, cfg.dim), (None, "embed"), pd)

  def __call__(self, x: jax.Array, e: jax.Array) -> jax.Array:
    m = self.modulation[...].astype(jnp.float32)[None] + e[:, None]             # [B, 2, D]
    h = layer_norm(x, None, None, self.cfg.eps) * (1 + m[:, 1:2]) + m[:, 0:1]
    return self.head(h.astype(dtype_of(self.cfg.dtype))).astype(jnp.float32)     # [B, L, p*p*p*C]

