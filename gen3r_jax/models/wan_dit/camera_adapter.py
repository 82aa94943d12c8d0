"""Camera control adapter of the Wan2.1-Fun Control-Camera DiT (VideoX-Fun ``SimpleAdapter``).

Plücker camera latents ``[B, F, 8h', 8w', 24]`` -> frames folded into batch -> pixel-unshuffle by 8 (torch channel
order ``c * 64 + i * 8 + j``) -> 2x2 stride-2 conv -> residual blocks (conv3x3 -> ReLU -> conv3x3, + input)
-> ``[B, F, h'/2, w'/2, dim]``, added to the patch-embedded tokens.
"""

from __future__ import annotations

import jax
from flax import nnx

from gen3r_jax.models.config import dtype_of
from gen3r_jax.nn.linear import Conv


def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
  """``torch.nn.PixelUnshuffle(r)`` channels-last: ``[N, H, W, C] -> [N, H/r, W/r, C*r*r]`` (order c, i, j)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // r, r, w // r, r, c)         # [N, h, i, w, j, C]
  x = x.transpose(0, 1, 3, 5, 2, 4)                 # [N, h, w, C, i, j]
  return x.reshape(n, h // r, w // r, c * r * r)


class ResidualBlock(nnx.Module):
  """``x + conv2(relu(conv1(x)))`` with 3x3 convs, padding 1."""

  def __init__(self, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(padding=1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = Conv(dim, dim, (3, 3), **kw)
    self.conv2 = Conv(dim, dim, (3, 3), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x + self.conv2(jax.nn.relu(self.conv1(x)))


class CameraAdapter(nnx.Module):
  """``SimpleAdapter(in_dim, dim, kernel_size=2, stride=2)``: ``[B, F, H, W, Cin] -> [B, F, H/(2r), W/(2r), dim]``."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    dtype, param_dtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    self.factor = cfg.control_unshuffle
    cin = cfg.in_dim_control_adapter * self.factor ** 2
    self.conv = Conv(cin, cfg.dim, (2, 2), strides=2, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.residual_blocks = nnx.List([
        ResidualBlock(cfg.dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        for _ in range(cfg.control_residual_blocks)])

  def __call__(self, y_camera: jax.Array) -> jax.Array:
    b, f, h, w, c = y_camera.shape
    x = pixel_unshuffle(y_camera.reshape(b * f, h, w, c), self.factor)  # [B*F, H/8, W/8, 64*C]
    x = self.conv(x)                                                     # [B*F, H/16, W/16, dim]
    for blk in self.residual_blocks:
      x = blk(x)
    return x.reshape(b, f, *x.shape[1:])                                 # [B, F, h, w, dim]
