"""Image resampling with PyTorch's exact semantics, channels-last (``[..., H, W, C]``).

* :func:`nearest_exact`: ``F.interpolate(mode="nearest-exact")``: ``src = min(floor((dst + 0.5) * s), in - 1)``
  with ``s = in / out`` (``size=``) or ``s = 1 / scale_factor`` (``scale_factor=``), computed in float32.
* :func:`resize`: ``mode="bilinear" | "bicubic"`` with ``align_corners=False`` and ``antialias`` on or off, or
  ``mode="bilinear", align_corners=True`` (``src = dst * (in - 1) / (out - 1)``; VGGT's DPT heads).
  Without antialias this is ``upsample_bilinear2d`` / ``upsample_bicubic2d`` (cubic ``a = -0.75``, edge taps
  clamped to the border); with antialias it is ``_upsample_{bilinear,bicubic}2d_aa`` (PIL style: support
  widened by the scale when downsampling, cubic ``a = -0.5``, taps clipped to the image and renormalised).

The separable weights are built once on the host in float64 (then cast to float32), and applied as two small
matmuls, which XLA fuses well and which are exact for any size.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


def _scale(in_size: int, out_size: int, scale_factor: float | None) -> float:
  if scale_factor is not None:
    return float(np.float32(1.0) / np.float32(scale_factor))
  return float(np.float32(in_size) / np.float32(out_size))


def nearest_exact_indices(in_size: int, out_size: int, scale_factor: float | None = None) -> np.ndarray:
  s = np.float32(_scale(in_size, out_size, scale_factor))
  dst = np.arange(out_size, dtype=np.float32)
  src = np.floor((dst + np.float32(0.5)) * s).astype(np.int64)
  return np.minimum(src, in_size - 1)


def nearest_exact(x: jax.Array, out_hw: tuple[int, int],
                  scale_factor: tuple[float, float] | None = None) -> jax.Array:
  """Nearest-exact resize of ``[..., H, W, C]`` to ``out_hw``."""
  h, w = x.shape[-3], x.shape[-2]
  sf = scale_factor or (None, None)
  iy = nearest_exact_indices(h, out_hw[0], sf[0])
  ix = nearest_exact_indices(w, out_hw[1], sf[1])
  return jnp.take(jnp.take(x, iy, axis=-3), ix, axis=-2)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  x = np.abs(x)
  return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resize_matrix(in_size: int, out_size: int, mode: str, *, antialias: bool,
                  scale_factor: float | None = None, align_corners: bool = False) -> np.ndarray:
  """The ``[out, in]`` matrix that PyTorch's 1-D pass of ``interpolate`` applies."""
  if mode not in ("bilinear", "bicubic"):
    raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
  if align_corners:
    if mode != "bilinear" or antialias:
      raise ValueError("align_corners=True is implemented for mode='bilinear' without antialias only")
    # PyTorch ignores scale_factor here: the source step is (in - 1) / (out - 1) (0 for a single output).
    m = np.zeros((out_size, in_size), np.float64)
    step = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0.0)
    for i in range(out_size):
      src = float(np.float32(step) * np.float32(i))
      i0 = min(int(np.floor(src)), in_size - 1)
      i1 = min(i0 + 1, in_size - 1)
      l1 = src - i0
      m[i, i0] += 1.0 - l1
      m[i, i1] += l1
    return m
  scale = _scale(in_size, out_size, scale_factor)
  m = np.zeros((out_size, in_size), np.float64)
  if antialias:
    interp = 2 if mode == "bilinear" else 4
    support = interp * 0.5 * scale if scale >= 1.0 else interp * 0.5
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(out_size):
      center = scale * (i + 0.5)
      xmin = max(int(center - support + 0.5), 0)
      xmax = min(int(center + support + 0.5), in_size)
      j = np.arange(xmin, xmax)
      t = (j - center + 0.5) * invscale
      w = np.maximum(0.0, 1.0 - np.abs(t)) if mode == "bilinear" else _cubic(t, -0.5)
      total = w.sum()
      m[i, xmin:xmax] = w / total if total != 0 else w
    return m
  for i in range(out_size):
    src = scale * (i + 0.5) - 0.5
    if mode == "bilinear":
      src = max(src, 0.0)
      i0 = min(int(np.floor(src)), in_size - 1)
      i1 = min(i0 + 1, in_size - 1)
      l1 = src - i0
      m[i, i0] += 1.0 - l1
      m[i, i1] += l1
    else:
      f = int(np.floor(src))
      t = src - f
      for k, w in zip(range(-1, 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)):
        m[i, min(max(f + k, 0), in_size - 1)] += w
  return m


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
