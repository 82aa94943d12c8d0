"""Conditioning embeddings of the Wan DiT: timestep (sinusoidal + MLPs), text (MLP), CLIP image tokens (MLPProj).

The official timestep sinusoid is computed in float64 (``t`` up to 1000 rad * frequency 1). A plain float32
``t * freq`` loses ~6e-5 rad there, so :func:`sinusoidal_embedding` works in *turns* with an exact split product:
``t = t1 + t2`` and ``freq / 2pi = g1 + g2 + g3`` with 12-bit ``t1, t2, g1, g2`` (every partial product exact in
float32), the integer number of turns of the largest product removed exactly, and only the small remainder
multiplied by 2pi. Float32 only (no x64), error ~1e-7 rad for any ``|t| < 2^20``.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.models.config import dtype_of
from gen3r_jax.nn.linear import Dense
from gen3r_jax.nn.norms import LayerNorm

_MASK12 = np.uint32(0xFFFFF000)  # keep the sign, exponent and the top 11 stored mantissa bits (12 significant)


def _split12_np(x: np.ndarray) -> np.ndarray:
  return (np.asarray(x, np.float32).view(np.uint32) & _MASK12).view(np.float32)


def _split12(x: jax.Array) -> jax.Array:
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(_MASK12)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


def sinusoid_turn_parts(freq_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Host float64 ``freq / 2pi`` split into float32 ``g1 + g2 + g3`` (``g1``, ``g2`` with 12 significant bits)."""
  half = freq_dim // 2
  g = np.power(10000.0, -np.arange(half, dtype=np.float64) / half) / (2.0 * np.pi)
  g1 = _split12_np(g)
  r = g - g1.astype(np.float64)
  g2 = _split12_np(r)
  g3 = (r - g2.astype(np.float64)).astype(np.float32)
  return g1, g2, g3


def sinusoidal_embedding(t: jax.Array, freq_dim: int) -> jax.Array:
  """``[cos(t f), sin(t f)]`` (cos first), ``f = 10000^(-j/half)``: ``t [B] -> [B, freq_dim]`` float32."""
  if freq_dim % 2:
    raise ValueError(f"freq_dim must be even, got {freq_dim}")
  g1, g2, g3 = (jnp.asarray(g)[None, :] for g in sinusoid_turn_parts(freq_dim))
  t = t.astype(jnp.float32)[:, None]                # [B, 1]
  t1 = _split12(t)
  t2 = t - t1                                       # exact, <= 12 significant bits
  big = t1 * g1                                     # exact
  turns = (big - jnp.round(big)) + (t1 * g2 + t2 * g1) + (t2 * g2 + t * g3)  # [B, half], |turns| < 1
  phase = turns * jnp.float32(2.0 * np.pi)
  return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)


class TimeEmbedding(nnx.Module):
  """``e = Linear-SiLU-Linear(sinusoid(t))`` ``[B, dim]`` and ``e0 = Linear(SiLU(e))`` ``[B, 6, dim]``, in float32."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    pd = dtype_of(cfg.param_dtype)
    f32 = jnp.float32
    self.freq_dim, self.dim = cfg.freq_dim, cfg.dim
    self.fc1 = Dense(cfg.freq_dim, cfg.dim, axes=(None, "embed"), dtype=f32, param_dtype=pd, rngs=rngs)
    self.fc2 = Dense(cfg.dim, cfg.dim, axes=("mlp", "embed"), dtype=f32, param_dtype=pd, rngs=rngs)
    self.proj = Dense(cfg.dim, 6 * cfg.dim, axes=("embed", "mlp"), dtype=f32, param_dtype=pd, rngs=rngs)

  def __call__(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    e = self.fc2(jax.nn.silu(self.fc1(sinusoidal_embedding(t, self.freq_dim))))  # [B, dim]
    e0 = self.proj(jax.nn.silu(e))                                               # [B, 6*dim]
    return e, e0.reshape(e0.shape[0], 6, self.dim)


class TextEmbedding(nnx.Module):
  """``Linear -> GELU(tanh) -> Linear`` on zero-padded text ``[B, text_len, text_dim] -> [B, text_len, dim]``."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    self.fc1 = Dense(cfg.text_dim, cfg.dim, axes=(None, "embed"), **kw)
    self.fc2 = Dense(cfg.dim, cfg.dim, axes=("mlp", "embed"), **kw)

  def __call__(self, context: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(context), approximate=True))


class ImageEmbedding(nnx.Module):
  """``MLPProj``: LayerNorm -> Linear -> GELU(erf) -> Linear -> LayerNorm, ``[B, 257, 1280] -> [B, 257, dim]``."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    pd = dtype_of(cfg.param_dtype)
    kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=pd, rngs=rngs)
    c = cfg.clip_dim
    self.norm_in = LayerNorm(c, eps=cfg.img_emb_eps, param_dtype=pd, rngs=rngs)
    self.fc1 = Dense(c, c, axes=("embed", "mlp"), **kw)
    self.fc2 = Dense(c, cfg.dim, axes=("mlp", "embed"), **kw)
    self.norm_out = LayerNorm(cfg.dim, eps=cfg.img_emb_eps, param_dtype=pd, rngs=rngs)

  def __call__(self, clip_fea: jax.Array) -> jax.Array:
    x = self.fc1(self.norm_in(clip_fea))
    return self.norm_out(self.fc2(jax.nn.gelu(x, approximate=False)))
