"""Causal 3D convolution with an explicit temporal feature cache (Wan's ``CausalConv3d`` / ``CACHE_T = 2``).

PyTorch's Wan VAE pads ``2 * p_t`` frames in front (none behind) and, when it processes a video in time chunks,
replaces that zero padding by the last frames of the previous chunk's *input* ("feature cache"). If a chunk has
a single frame, Wan prepends the previous cache's last frame, so the cache always holds the last ``2 * p_t``
input frames seen so far, zeros at the start. This module makes that cache an explicit array:

* ``conv(x)`` runs on a whole clip with zero causal padding.
* ``conv.cached(x, cache)`` runs on one chunk and returns ``(y, new_cache)``; ``cache`` is ``[B, ctx, H, W, C]``
  with ``ctx = 2 * p_t`` (all zeros for the first chunk, see :meth:`init_cache`).

Running a clip chunk by chunk with ``cached`` gives exactly the full-clip result, which is what lets the VAEs
scan over chunks with bounded memory.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.nn.linear import Conv
from gen3r_jax.nn.params import Axes


class CausalConv3d(nnx.Module):
  """``[B, T, H, W, Cin] -> [B, T', H', W', Cout]``; kernel stored as ``[kt, kh, kw, Cin, Cout]``.

  ``padding`` is PyTorch's ``(p_t, p_h, p_w)``: ``2 * p_t`` frames of causal padding, ``p_h``/``p_w``
  symmetric spatial zero padding.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int] | int, *,
               strides: Sequence[int] | int = 1, padding: Sequence[int] | int = 0,
               dtype=jnp.float32, param_dtype=jnp.float32, axes: Axes | None = None, rngs: nnx.Rngs):
    kernel_size = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
    padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
    self.context = 2 * padding[0]
    self.in_features, self.out_features = in_features, out_features
    self.conv = Conv(in_features, out_features, kernel_size, strides=strides,
                     padding=((0, 0), (padding[1], padding[1]), (padding[2], padding[2])),
                     dtype=dtype, param_dtype=param_dtype, axes=axes, rngs=rngs)

  def init_cache(self, x: jax.Array) -> jax.Array:
    """Zero cache for a clip whose chunks look like ``x`` ``[B, t, H, W, Cin]``."""
    b, _, h, w, c = x.shape
    return jnp.zeros((b, self.context, h, w, c), x.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.context:
      x = jnp.pad(x, ((0, 0), (self.context, 0), (0, 0), (0, 0), (0, 0)))
    return self.conv(x)

  def cached(self, x: jax.Array, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One chunk with the previous chunk's cache; returns ``(y, new_cache)``."""
    if not self.context:
      return self.conv(x), cache
    xc = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
    return self.conv(xc), xc[:, -self.context:]
