"""Dense and convolution layers (channels-last) with logical axis names and a compute dtype.

Weights are stored in JAX layout: Dense ``[in, out]``, ConvNd ``[*kernel, in, out]`` (HWIO / THWIO).
The converter transposes PyTorch weights once, offline.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.nn.fp8 import fp8_dot
from gen3r_jax.nn.params import Axes, make_param, torch_uniform


class Dense(nnx.Module):
  """``y = x @ W + b`` computed in ``dtype`` with float32 accumulation.

  ``fp8=True``: the product runs on float8 e4m3 operands with dynamic scales (:func:`gen3r_jax.nn.fp8.fp8_dot`;
  opt-in, approximate); the bias and the output dtype are unchanged. The parameters are the same either way.
  """

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
               axes: Axes = ("embed", "mlp"), dtype=jnp.float32, param_dtype=jnp.float32, fp8: bool = False,
               rngs: nnx.Rngs):
    self.in_features, self.out_features = in_features, out_features
    self.dtype = dtype
    self.fp8 = fp8
    init = torch_uniform(in_features)
    self.kernel = make_param(rngs, init, (in_features, out_features), axes, param_dtype)
    self.bias = make_param(rngs, init, (out_features,), (axes[-1],), param_dtype) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype
    if self.fp8:
      y = fp8_dot(x.astype(dtype), self.kernel[...])
    else:
      y = jnp.dot(x.astype(dtype), self.kernel[...].astype(dtype),
                  preferred_element_type=jnp.float32 if dtype == jnp.float32 else None)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y.astype(dtype)


def _dim_numbers(nd: int):
  spatial = "THW"[-nd:] if nd <= 3 else None
  lhs = "N" + spatial + "C"
  rhs = spatial + "IO"
  return jax.lax.conv_dimension_numbers((1,) * (nd + 2), (1,) * (nd + 2), (lhs, rhs, lhs))


class Conv(nnx.Module):
  """N-d convolution on channels-last input ``[B, *spatial, C]`` with PyTorch-style symmetric zero padding.

  ``padding`` is either an int/tuple of per-dimension symmetric pads (as ``torch.nn.ConvNd``) or an explicit
  sequence of ``(low, high)`` pairs.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int], *,
               strides: Sequence[int] | int = 1, padding=0, use_bias: bool = True,
               axes: Axes | None = None, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kernel_size = tuple(kernel_size)
    nd = len(kernel_size)
    self.nd = nd
    self.kernel_size = kernel_size
    self.strides = (strides,) * nd if isinstance(strides, int) else tuple(strides)
    if isinstance(padding, int):
      padding = ((padding, padding),) * nd
    elif all(isinstance(p, int) for p in padding):
      padding = tuple((p, p) for p in padding)
    self.padding = tuple(tuple(p) for p in padding)
    self.dtype = dtype
    axes = axes or (None,) * nd + ("conv_in", "conv_out")
    fan_in = in_features * math.prod(kernel_size)
    init = torch_uniform(fan_in)
    self.kernel = make_param(rngs, init, (*kernel_size, in_features, out_features), axes, param_dtype)
    self.bias = make_param(rngs, init, (out_features,), (axes[-1],), param_dtype) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), self.kernel[...].astype(dtype), window_strides=self.strides,
        padding=self.padding, dimension_numbers=_dim_numbers(self.nd),
        preferred_element_type=jnp.float32 if dtype == jnp.float32 else None)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y.astype(dtype)
