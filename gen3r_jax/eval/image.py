"""Image metrics: PSNR and SSIM, jit-compiled and batched over frames.

Inputs are channels-last frames ``[F, H, W, C]`` in ``[0, data_range]`` (``data_range`` defaults to 1.0, as the
paper's videos are scored in ``[0, 1]``). Both functions return one value per frame ``[F]``; the evaluation
driver reports the mean over frames.

SSIM (Wang et al. 2004): an 11-tap Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, biased local
(co)variances ``E[xy] - E[x]E[y]``, mean over channels and pixels. The two reference libraries differ in which
pixels of the SSIM map they average, so the convention is a named setting (``SSIM_CONVENTIONS``):

* ``"torchmetrics"`` (default): torchmetrics' ``structural_similarity_index_measure`` (1.4.3, the version Gen3R
  pins, and later): both images are reflect-padded by ``(window - 1) // 2``, the map is computed at every pixel
  of the original size (the window reads reflected pixels near the border) and averaged over the whole map; the
  local variances are clamped at 0. Matches ``torchmetrics`` to a few 1e-6 (float32 moments on both sides).
* ``"skimage"``: scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=...)`` (channel axis last): the map is averaged over the valid region
  only (``(window - 1) // 2`` pixels cropped on every side). Matches scikit-image to ~3e-7.

The two differ by up to ~5e-3 on small images (the border band is a larger share of the pixels), less at
560 x 560.

PSNR is ``10 log10(data_range^2 / MSE)`` per frame. (torchmetrics' ``PeakSignalNoiseRatio`` with ``dim=None``
would pool the MSE over the whole batch instead; we average per-frame PSNR, the usual choice for video.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import Gen3RInputError, require

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_CONVENTIONS = ("torchmetrics", "skimage")
DEFAULT_SSIM_CONVENTION = "torchmetrics"


def check_frames(pred, gt, name: str = "frames", min_size: int = 1) -> None:
  """Validate two frame stacks ``[F, H, W, C]`` of equal shape (raises :class:`Gen3RInputError`)."""
  for x, which in ((pred, "prediction"), (gt, "ground truth")):
    shape = tuple(getattr(x, "shape", ()))
    require(len(shape) == 4, f"{name}: the {which} must be [F, H, W, C], got shape {shape}.")
  require(pred.shape == gt.shape,
          f"{name}: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape "
          "(frame count, resolution or channels); resample one of them first.")
  require(pred.shape[0] > 0, f"{name}: no frames to score.")
  require(min(pred.shape[1:3]) >= min_size,
          f"{name}: frames of {pred.shape[1]}x{pred.shape[2]} are smaller than the {min_size}-pixel SSIM window.")


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """Normalised 1-D Gaussian taps ``[size]`` centred on the middle tap."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


def _blur_valid(x: jax.Array, taps: jax.Array) -> jax.Array:
  """Separable depthwise Gaussian filter, valid region only. ``[N, H, W, C] -> [N, H-k+1, W-k+1, C]``."""
  c = x.shape[-1]
  k = taps.shape[0]
  dn = ("NHWC", "HWIO", "NHWC")
  kh = jnp.tile(taps.reshape(k, 1, 1, 1), (1, 1, 1, c))  # [k, 1, 1, C]
  kw = jnp.tile(taps.reshape(1, k, 1, 1), (1, 1, 1, c))  # [1, k, 1, C]
  prec = jax.lax.Precision.HIGHEST
  y = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c,
                                   precision=prec)
  return jax.lax.conv_general_dilated(y, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c,
                                      precision=prec)


@functools.partial(jax.jit, static_argnames=("window", "sigma", "data_range", "convention"))
def _ssim(pred, gt, *, window: int, sigma: float, data_range: float, convention: str):
  taps = jnp.asarray(gaussian_window(window, sigma))
  x = pred.astype(jnp.float32)
  y = gt.astype(jnp.float32)
  if convention == "torchmetrics":  # reflect padding (no edge repeat, as torch's "reflect"): a same-size map
    p = (window - 1) // 2
    pad = ((0, 0), (p, p), (p, p), (0, 0))
    x, y = jnp.pad(x, pad, mode="reflect"), jnp.pad(y, pad, mode="reflect")
  c1 = (SSIM_K1 * data_range) ** 2
  c2 = (SSIM_K2 * data_range) ** 2
  # One filter pass over the five moment maps, stacked on the batch axis.  [5F, H', W', C]
  stats = _blur_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=0), taps)
  mx, my, mxx, myy, mxy = jnp.split(stats, 5, axis=0)
  vx = mxx - mx * mx
  vy = myy - my * my
  if convention == "torchmetrics":
    vx, vy = jnp.maximum(vx, 0.0), jnp.maximum(vy, 0.0)
  cxy = mxy - mx * my
  num = (2.0 * mx * my + c1) * (2.0 * cxy + c2)
  den = (mx * mx + my * my + c1) * (vx + vy + c2)
  return jnp.mean(num / den, axis=(1, 2, 3))  # [F]


def check_ssim_convention(convention: str) -> None:
  require(convention in SSIM_CONVENTIONS,
          f"ssim convention must be one of {', '.join(SSIM_CONVENTIONS)}, got {convention!r}.")


def ssim(pred, gt, *, data_range: float = 1.0, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
         convention: str = DEFAULT_SSIM_CONVENTION) -> jax.Array:
  """Per-frame SSIM of ``pred`` against ``gt``, both ``[F, H, W, C]`` in ``[0, data_range]``. Returns ``[F]``.

  ``convention``: ``"torchmetrics"`` (map over the reflect-padded image, averaged everywhere) or ``"skimage"``
  (valid region only); see the module docstring.
  """
  check_ssim_convention(convention)
  check_frames(pred, gt, "ssim", min_size=window)
  return _ssim(jnp.asarray(pred), jnp.asarray(gt), window=int(window), sigma=float(sigma),
               data_range=float(data_range), convention=convention)


@functools.partial(jax.jit, static_argnames=("data_range",))
def _psnr(pred, gt, *, data_range: float):
  err = pred.astype(jnp.float32) - gt.astype(jnp.float32)
  mse = jnp.mean(err * err, axis=(1, 2, 3))  # [F]
  return 10.0 * jnp.log10(data_range ** 2 / mse)


def psnr(pred, gt, *, data_range: float = 1.0) -> jax.Array:
  """Per-frame PSNR in dB of ``pred`` against ``gt`` (``[F, H, W, C]``). Identical frames give ``inf``."""
  check_frames(pred, gt, "psnr")
  if data_range <= 0:
    raise Gen3RInputError(f"psnr: data_range must be positive, got {data_range}.")
  return _psnr(jnp.asarray(pred), jnp.asarray(gt), data_range=float(data_range))
