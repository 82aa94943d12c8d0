"""Image resampling with PyTorch's exact semantics, channels-last (``[..., H, W, C]``).

* :func:`nearest_exact`: ``F.interpolate(mode="nearest-exact")``: ``src = min(floor((dst + 0.5) * s), in - 1)``
  with ``s = in / out`` (``size=``) or ``s = 1 / scale_factor`` (``scale_factor=``), computed in float32.
* :func:`resize`: ``mode="bilinear" | "bicubic"`` with ``align_corners=False`` and ``antialias`` on or off, or
  ``mode="bilinear", align_corners=True`` (``src = dst * (in - 1) / (out - 1)``; VGGT's DPT heads).
  Without antialias this is ``upsample_bilinear2d`` / ``upsample_bicubic2d`` (cubic ``a = -0.75``, edge taps
  clamped to the border); with antialias it is ``_upsample_{bilinear,bicubic}2d_aa`` (PIL style: support
  widened by the scale when downsampling, cubic ``a = -0.5``, taps clipped to the image and renormalised).

The separable ``[out, in]`` weight matrices (:mod:`gen3r_jax.resize_weights`: PyTorch's float32 CPU arithmetic, bit
for bit) are built once on the host and applied as two small matmuls, which XLA fuses well and which are exact for
any size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gen3r_jax.resize_weights import nearest_exact_indices, resize_matrix


def nearest_exact(x: jax.Array, out_hw: tuple[int, int],
                  scale_factor: tuple[float, float] | None = None) -> jax.Array:
  """Nearest-exact resize of ``[..., H, W, C]`` to ``out_hw``."""
  h, w = x.shape[-3], x.shape[-2]
  sf = scale_factor or (None, None)
  iy = nearest_exact_indices(h, out_hw[0], sf[0])
  ix = nearest_exact_indices(w, out_hw[1], sf[1])
  return jnp.take(jnp.take(x, iy, axis=-3), ix, axis=-2)


def resize(x: jax.Array, out_hw: tuple[int, int], mode: str = "bilinear", *, antialias: bool = False,
           scale_factor: tuple[float, float] | None = None, align_corners: bool = False) -> jax.Array:
  """Resize ``[..., H, W, C]`` to ``out_hw`` as ``torch.nn.functional.interpolate`` does."""
  h, w = x.shape[-3], x.shape[-2]
  sf = scale_factor or (None, None)
  my = jnp.asarray(resize_matrix(h, out_hw[0], mode, antialias=antialias, scale_factor=sf[0],
                                 align_corners=align_corners), jnp.float32)
  mx = jnp.asarray(resize_matrix(w, out_hw[1], mode, antialias=antialias, scale_factor=sf[1],
                                 align_corners=align_corners), jnp.float32)
  xf = x.astype(jnp.float32)
  hp = jax.lax.Precision.HIGHEST
  y = jnp.einsum("oh,...hwc->...owc", my, xf, precision=hp)
  y = jnp.einsum("pw,...owc->...opc", mx, y, precision=hp)
  return y.astype(x.dtype)


__all__ = ("nearest_exact", "resize", "nearest_exact_indices", "resize_matrix")
