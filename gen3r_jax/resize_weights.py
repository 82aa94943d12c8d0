"""PyTorch-exact interpolation weights on the host (numpy only, no JAX): the index map of
``F.interpolate(mode="nearest-exact")`` (:func:`nearest_exact_indices`) and the separable ``[out, in]`` matrices of
its bilinear / bicubic modes (:func:`resize_matrix`). :mod:`gen3r_jax.nn.resample` applies them to device arrays; the
data pipeline (:mod:`gen3r_jax.data.clips`) applies them sparsely to host frames.

The weights are computed the way PyTorch's float32 CPU kernels compute them (``UpSample.h``,
``UpSampleKernel.cpp``), not in float64: the scale ``in / out`` (or ``1 /
scale_factor``, divided in double), the source coordinate ``scale * (dst + 0.5) - 0.5``, the interpolation
fraction and the cubic coefficients are float32 values, with the operation order and the fused multiply-adds of
PyTorch's x86-64 build (``scale * (dst + 0.5) - 0.5`` is one FMA). A float64 source coordinate moves the
bilinear/bicubic weights by up to 3e-5 at 560 -> 1400 px (2.2e-4 on image values), the FMAs by 1.5e-5; as
built here the weight matrices equal torch 2.13's bit for bit on CPU (``tests/test_nn.py`` checks the images to
~1e-6, which leaves room for other builds' rounding).
"""

from __future__ import annotations

import numpy as np

_F32 = np.float32


def _fma(a, b, c) -> np.ndarray:
  """float32 ``a * b + c`` rounded once (the product of two float32 values is exact in float64)."""
  return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(_F32)


def _scale32(in_size: int, out_size: int, scale_factor: float | None) -> np.float32:
  """``area_pixel_compute_scale<float>`` without align_corners: ``float(1.0 / scale_factor)`` (the division in
  double, as ``compute_scales_value``) when a scale factor is given, else ``float(in) / float(out)``."""
  if scale_factor is not None and scale_factor > 0:
    return _F32(1.0 / float(scale_factor))
  return _F32(in_size) / _F32(out_size)


def _scale(in_size: int, out_size: int, scale_factor: float | None) -> float:
  return float(_scale32(in_size, out_size, scale_factor))


def nearest_exact_indices(in_size: int, out_size: int, scale_factor: float | None = None) -> np.ndarray:
  s = _scale32(in_size, out_size, scale_factor)
  dst = np.arange(out_size, dtype=np.float32)
  src = np.floor((dst + np.float32(0.5)) * s).astype(np.int64)
  return np.minimum(src, in_size - 1)


def _cubic1(x: np.ndarray, a: np.float32, fused: bool) -> np.ndarray:
  """``cubic_convolution1`` = ``((a + 2) x - (a + 3)) x x + 1`` for ``|x| <= 1``, float32."""
  if fused:  # as inlined in the antialias filter: two FMAs
    t = _fma(a + _F32(2), x, -(a + _F32(3)))
    return _fma((t * x).astype(_F32), x, _F32(1))
  return ((((a + _F32(2)) * x - (a + _F32(3))) * x) * x + _F32(1)).astype(_F32)


def _cubic2(x: np.ndarray, a: np.float32) -> np.ndarray:
  """``cubic_convolution2`` = ``((a x - 5a) x + 8a) x - 4a`` for ``1 <= |x| <= 2``, float32 (the first two steps
  fused; ``a x`` is exact for both kernels' ``a``, so where the last one is fused differs only by its rounding)."""
  t = _fma(a, x, -(_F32(5) * a))
  t = _fma(t, x, _F32(8) * a)
  return (t * x - _F32(4) * a).astype(_F32)


def _cubic2_fused(x: np.ndarray, a: np.float32) -> np.ndarray:
  t = _fma(a, x, -(_F32(5) * a))
  t = _fma(t, x, _F32(8) * a)
  return _fma(t, x, -(_F32(4) * a))


def _aa_filter(x: np.ndarray, mode: str) -> np.ndarray:
  """PyTorch's antialias filters in float32: triangle, or Keys cubic with ``a = -0.5``."""
  x = np.abs(x.astype(_F32))
  if mode == "bilinear":
    return np.where(x < 1, _F32(1) - x, _F32(0)).astype(_F32)
  a = _F32(-0.5)
  return np.where(x < 1, _cubic1(x, a, fused=True),
                  np.where(x < 2, _cubic2_fused(x, a), _F32(0))).astype(_F32)


def _aa_matrix(in_size: int, out_size: int, mode: str, scale_factor: float | None) -> np.ndarray:
  """``_compute_indices_min_size_weights_aa`` for float32 (its float/double promotions term by term)."""
  interp = 2 if mode == "bilinear" else 4
  scale = _scale32(in_size, out_size, scale_factor)
  support = _F32(interp * 0.5 * float(scale)) if scale >= 1.0 else _F32(interp * 0.5)
  max_taps = int(np.ceil(support)) * 2 + 1
  invscale = _F32(1.0 / float(scale)) if scale >= 1.0 else _F32(1.0)
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    center = _F32(float(scale) * (i + 0.5))
    xmin = max(int(float(_F32(center - support)) + 0.5), 0)
    xsize = min(int(float(_F32(center + support)) + 0.5), in_size) - xmin
    xsize = min(max(xsize, 0), max_taps)
    j = np.arange(xmin, xmin + xsize)
    arg = ((j.astype(_F32) - center).astype(np.float64) + 0.5) * float(invscale)
    w = _aa_filter(arg.astype(_F32), mode)
    total = _F32(0)
    for v in w:  # sequential float32 sum, as the kernel accumulates
      total = _F32(total + v)
    m[i, xmin:xmin + xsize] = (w / total).astype(_F32) if total != 0 else w
  return m


def _linear_matrix(in_size: int, out_size: int, mode: str, scale_factor: float | None) -> np.ndarray:
  """``upsample_{bilinear,bicubic}2d`` without align_corners, float32 weights ``[out, in]``."""
  m = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  if mode == "bilinear" and in_size == out_size:  # compute_source_index_and_lambda: a plain copy
    m[rows, rows] = 1.0
    return m.astype(_F32)
  scale = _scale32(in_size, out_size, scale_factor)
  src = _fma(scale, rows.astype(_F32) + _F32(0.5), _F32(-0.5))  # area_pixel_compute_source_index
  if mode == "bilinear":
    src = np.maximum(src, _F32(0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)  # guard_index_and_lambda
  lam = np.clip(src - i0.astype(_F32), _F32(0), _F32(1)).astype(_F32)
  if mode == "bilinear":
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    np.add.at(m, (rows, i0), (_F32(1) - lam).astype(_F32))
    np.add.at(m, (rows, i1), lam)
    return m.astype(_F32)
  a = _F32(-0.75)
  x2 = (_F32(1) - lam).astype(_F32)
  coeffs = (_cubic2((lam + _F32(1)).astype(_F32), a), _cubic1(lam, a, fused=False), _cubic1(x2, a, fused=False),
            _cubic2((x2 + _F32(1)).astype(_F32), a))
  for k, c in enumerate(coeffs):
    np.add.at(m, (rows, np.clip(i0 - 1 + k, 0, in_size - 1)), c)
  return m.astype(_F32)


def resize_matrix(in_size: int, out_size: int, mode: str, *, antialias: bool,
                  scale_factor: float | None = None, align_corners: bool = False) -> np.ndarray:
  """The float32 ``[out, in]`` matrix that PyTorch's 1-D pass of ``interpolate`` applies."""
  if mode not in ("bilinear", "bicubic"):
    raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
  if align_corners:
    if mode != "bilinear" or antialias:
      raise ValueError("align_corners=True is implemented for mode='bilinear' without antialias only")
    # PyTorch ignores scale_factor here: the source step is (in - 1) / (out - 1) (0 for a single output).
    m = np.zeros((out_size, in_size), np.float64)
    if in_size == out_size:
      m[np.arange(out_size), np.arange(out_size)] = 1.0
      return m.astype(_F32)
    step = np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.float32(0.0)
    for i in range(out_size):
      src = float(np.float32(step) * np.float32(i))
      i0 = min(int(np.floor(src)), in_size - 1)
      i1 = min(i0 + 1, in_size - 1)
      l1 = src - i0
      m[i, i0] += 1.0 - l1
      m[i, i1] += l1
    return m.astype(_F32)
  if antialias:
    return _aa_matrix(in_size, out_size, mode, scale_factor)
  return _linear_matrix(in_size, out_size, mode, scale_factor)


__all__ = ("nearest_exact_indices", "resize_matrix")
