"""Transformer pieces shared by DINOv2, the aggregator and the camera trunk: MLP, attention with optional
q/k LayerNorm and 2D RoPE, and the pre-norm LayerScale block (stacked and scanned with
:mod:`gen3r_jax.nn.stack`).

Tokens are ``[B, N, C]``; attention works on ``[B, N, H, D]`` through :func:`gen3r_jax.nn.attention.attention`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.nn.attention import attention
from gen3r_jax.nn.linear import Dense
from gen3r_jax.nn.norms import LayerNorm
from gen3r_jax.nn.params import make_param


def gelu(x: jax.Array) -> jax.Array:
  """``nn.GELU()`` (exact erf form), computed in float32."""
  return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


class Mlp(nnx.Module):
  """``fc1 -> GELU -> fc2`` (``[..., C] -> [..., C_out]``)."""

  def __init__(self, dim: int, hidden: int, out: int | None = None, *, bias: bool = True, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.fc1 = Dense(dim, hidden, use_bias=bias, axes=("embed", "mlp"), dtype=dtype, param_dtype=param_dtype,
                     rngs=rngs)
    self.fc2 = Dense(hidden, out or dim, use_bias=bias, axes=("mlp", "embed"), dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x):
    return self.fc2(gelu(self.fc1(x)))


def rope_tables(pos: np.ndarray, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
  """cos/sin tables ``[N, head_dim]`` of VGGT's 2D RoPE for integer positions ``pos`` ``[N, 2]`` (y, x).

  The head dim is split in a y half and an x half; each half of size ``d`` uses frequencies
  ``1 / base^(arange(0, d, 2) / d)`` duplicated ``[f, f]`` (rotate-half convention). Computed in float32 as
  the reference does.
  """
  d = head_dim // 2
  exponents = np.arange(0, d, 2, dtype=np.float32) / np.float32(d)
  inv_freq = (np.float32(1.0) / np.power(np.float32(base), exponents)).astype(np.float32)
  tabs = []
  for axis in (0, 1):
    ang = pos[:, axis].astype(np.float32)[:, None] * inv_freq[None, :]   # [N, d/2]
    ang = np.concatenate([ang, ang], axis=-1)                             # [N, d]
    tabs.append(ang)
  ang = np.concatenate(tabs, axis=-1)                                     # [N, head_dim]
  return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """2D RoPE on ``x`` ``[B, N, H, D]`` with tables ``[N, D]`` (float32 math)."""
  xf = x.astype(jnp.float32)
  d = x.shape[-1] // 2
  q = d // 2

  def rot_half(h):  # (h1, h2) -> (-h2, h1)
    return jnp.concatenate([-h[..., q:], h[..., :q]], axis=-1)

  rot = jnp.concatenate([rot_half(xf[..., :d]), rot_half(xf[..., d:])], axis=-1)
  c, s = cos[None, :, None, :], sin[None, :, None, :]
  return (xf * c + rot * s).astype(x.dtype)


class Attention(nnx.Module):
  """Fused-qkv multi-head self-attention; optional LayerNorm on q and k (over head dim, eps 1e-5) before RoPE."""

  def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, proj_bias: bool = True,
               qk_norm: bool = False, impl: str = "auto", dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.num_heads, self.head_dim, self.impl = num_heads, dim // num_heads, impl
    self.qkv = Dense(dim, 3 * dim, use_bias=qkv_bias, axes=("embed", "mlp"), dtype=dtype,
                     param_dtype=param_dtype, rngs=rngs)
    self.q_norm = LayerNorm(self.head_dim, eps=1e-5, rngs=rngs, param_dtype=param_dtype) if qk_norm else None
    self.k_norm = LayerNorm(self.head_dim, eps=1e-5, rngs=rngs, param_dtype=param_dtype) if qk_norm else None
    self.proj = Dense(dim, dim, use_bias=proj_bias, axes=("mlp", "embed"), dtype=dtype,
                      param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)  # [B, N, 3, H, D]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    o = attention(q, k, v, implementation=self.impl)                    # [B, N, H, D]
    return self.proj(o.reshape(b, n, c))


class LayerScale(nnx.Module):
  def __init__(self, dim: int, init_value: float, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.gamma = make_param(rngs, lambda k, s, d: jnp.full(s, init_value, d), (dim,), ("norm",), param_dtype)

  def __call__(self, x):
    return x * self.gamma[...].astype(x.dtype)


class Block(nnx.Module):
  """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, norm_eps: float = 1e-5,
               qkv_bias: bool = True, proj_bias: bool = True, ffn_bias: bool = True, qk_norm: bool = False,
               init_values: float | None = None, impl: str = "auto", dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = LayerNorm(dim, eps=norm_eps, rngs=rngs, param_dtype=param_dtype)
    self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, impl=impl,
                          **kw)
    self.ls1 = LayerScale(dim, init_values, param_dtype=param_dtype, rngs=rngs) if init_values else None
    self.norm2 = LayerNorm(dim, eps=norm_eps, rngs=rngs, param_dtype=param_dtype)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias, **kw)
    self.ls2 = LayerScale(dim, init_values, param_dtype=param_dtype, rngs=rngs) if init_values else None

  def __call__(self, x: jax.Array, rope=None) -> jax.Array:
    y = self.attn(self.norm1(x), rope)
    x = x + (self.ls1(y) if self.ls1 is not None else y)
    y = self.mlp(self.norm2(x))
    return x + (self.ls2(y) if self.ls2 is not None else y)
