"""Normalisation layers. All statistics are computed in float32 and the result is cast back to the input dtype.

* :class:`ChannelRMSNorm`: Wan VAE's ``RMS_norm`` = ``F.normalize(x, dim=channels) * sqrt(C) * gamma``
  (``x / max(||x||_2, 1e-12)``), over the last (channel) axis.
* :class:`RMSNorm`: ``x * rsqrt(mean(x^2) + eps) * weight`` (Wan DiT, umT5).
* :class:`LayerNorm`: standard layer norm with optional scale/bias (VGGT, CLIP, DiT). The statistics are taken
  on values shifted by the row's first element (``x - x[..., :1]``; the result is shift-invariant), then centred
  for the variance. Without the shift, ``mean(x)`` of a row of one repeated large value is off by a rounding
  error ``d`` (e.g. 1e6 over 1000 elements: d = 0.06), and ``(x - mean) / sqrt(d^2 + eps)`` returns +-1 where
  PyTorch (Welford) returns 0; with it, such a row gives exactly 0, and rows with a large common offset keep
  their precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.nn.params import make_param, ones_init, zeros_init


def channel_rms_norm(x: jax.Array, gamma: jax.Array | None, eps: float = 1e-12) -> jax.Array:
  xf = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
  y = xf / jnp.maximum(norm, eps) * jnp.sqrt(jnp.float32(x.shape[-1]))
  if gamma is not None:
    y = y * gamma.astype(jnp.float32)
  return y.astype(x.dtype)


def rms_norm(x: jax.Array, weight: jax.Array | None, eps: float) -> jax.Array:
  xf = x.astype(jnp.float32)
  y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  if weight is not None:
    y = y * weight.astype(jnp.float32)
  return y.astype(x.dtype)


def layer_norm(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, eps: float) -> jax.Array:
  xf = x.astype(jnp.float32)
  xs = xf - xf[..., :1]  # shifted data: exact zeros for a constant row, no cancellation for a large offset
  xc = xs - jnp.mean(xs, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(xc), axis=-1, keepdims=True)
  y = xc * jax.lax.rsqrt(var + eps)
  if scale is not None:
    y = y * scale.astype(jnp.float32)
  if bias is not None:
    y = y + bias.astype(jnp.float32)
  return y.astype(x.dtype)


class ChannelRMSNorm(nnx.Module):
  """Wan VAE ``RMS_norm`` over channels (``gamma`` only; Wan's bias is always 0 and not stored)."""

  def __init__(self, dim: int, *, eps: float = 1e-12, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.eps = eps
    self.gamma = make_param(rngs, ones_init, (dim,), ("norm",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return channel_rms_norm(x, self.gamma[...], self.eps)


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, *, eps: float = 1e-6, use_scale: bool = True, rngs: nnx.Rngs,
               param_dtype=jnp.float32):
    self.eps = eps
    self.weight = make_param(rngs, ones_init, (dim,), ("norm",), param_dtype) if use_scale else None

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, None if self.weight is None else self.weight[...], self.eps)


class LayerNorm(nnx.Module):
  def __init__(self, dim: int, *, eps: float = 1e-5, use_scale: bool = True, use_bias: bool = True,
               rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.eps = eps
    self.scale = make_param(rngs, ones_init, (dim,), ("norm",), param_dtype) if use_scale else None
    self.bias = make_param(rngs, zeros_init, (dim,), ("norm",), param_dtype) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    return layer_norm(x, None if self.scale is None else self.scale[...],
                      None if self.bias is None else self.bias[...], self.eps)
