"""PSNR / SSIM against closed forms, an independent NumPy SSIM (direct windowed sums, no separability), and the
two reference libraries whose conventions ``ssim`` offers (torchmetrics, scikit-image)."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.eval import image


def _smooth_frames(rng, f, h, w, c=3):
  yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  out = []
  for _ in range(f):
    a, b, ph = rng.uniform(1, 4, 3)
    base = 0.5 + 0.4 * np.sin(a * xx * 3 + b * yy * 2 + ph)
    out.append(np.stack([np.clip(base + 0.05 * rng.normal(size=(h, w)), 0, 1) for _ in range(c)], -1))
  return np.stack(out).astype(np.float32)


def _ssim_numpy(x, y, data_range=1.0, k=11, sigma=1.5):
  """Wang et al. 2004 with a 2-D Gaussian window, valid region, biased moments; per frame."""
  g = np.exp(-((np.arange(k) - (k - 1) / 2) ** 2) / (2 * sigma ** 2))
  win = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  vals = []
  for f in range(x.shape[0]):
    per_c = []
    for ch in range(x.shape[-1]):
      a = x[f, :, :, ch].astype(np.float64)
      b = y[f, :, :, ch].astype(np.float64)
      wa, wb = sliding_window_view(a, (k, k)), sliding_window_view(b, (k, k))
      mu_a = np.einsum("ijkl,kl->ij", wa, win)
      mu_b = np.einsum("ijkl,kl->ij", wb, win)
      s_aa = np.einsum("ijkl,kl->ij", wa * wa, win) - mu_a ** 2
      s_bb = np.einsum("ijkl,kl->ij", wb * wb, win) - mu_b ** 2
      s_ab = np.einsum("ijkl,kl->ij", wa * wb, win) - mu_a * mu_b
      m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
      per_c.append(m.mean())
    vals.append(np.mean(per_c))
  return np.array(vals)


def test_psnr_closed_form_and_numpy():
  rng = np.random.default_rng(0)
  gt = np.full((2, 16, 20, 3), 0.5, np.float32)
  pred = gt + 0.1  # MSE = 0.01 -> PSNR = 20 dB exactly
  np.testing.assert_allclose(np.asarray(image.psnr(pred, gt)), [20.0, 20.0], atol=1e-4)
  x, y = _smooth_frames(rng, 3, 24, 28), _smooth_frames(rng, 3, 24, 28)
  mse = ((x.astype(np.float64) - y) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(np.asarray(image.psnr(x, y)), 10 * np.log10(1.0 / mse), rtol=1e-5)
  # data_range: the same error at range 255 scores 20 log10(255) higher.
  np.testing.assert_allclose(np.asarray(image.psnr(x * 255, y * 255, data_range=255.0)),
                             10 * np.log10(1.0 / mse), rtol=1e-4)


def test_ssim_matches_numpy_reference():
  rng = np.random.default_rng(1)
  x = _smooth_frames(rng, 3, 26, 31)
  y = np.clip(x + 0.08 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  ours = np.asarray(image.ssim(x, y, convention="skimage"))  # the valid-region mean of the numpy reference
  ref = _ssim_numpy(x, y)
  assert ours.shape == (3,)
  np.testing.assert_allclose(ours, ref, atol=2e-5)
  assert 0.2 < ours.min() < ours.max() < 0.99
  np.testing.assert_allclose(np.asarray(image.ssim(x, x)), 1.0, atol=1e-5)


def test_gaussian_window_is_normalised_and_symmetric():
  g = image.gaussian_window()
  assert g.shape == (11,) and abs(g.sum() - 1) < 1e-6
  np.testing.assert_allclose(g, g[::-1])
  assert np.argmax(g) == 5


def test_image_bad_inputs():
  a = np.zeros((3, 16, 16, 3), np.float32)
  with pytest.raises(Gen3RInputError, match="differ in shape"):
    image.psnr(a, a[:2])
  with pytest.raises(Gen3RInputError, match=r"\[F, H, W, C\]"):
    image.ssim(a[0], a[0])
  with pytest.raises(Gen3RInputError, match="smaller than"):
    image.ssim(a[:, :8, :8], a[:, :8, :8])
  with pytest.raises(Gen3RInputError, match="ssim convention must be one of torchmetrics, skimage"):
    image.ssim(a, a, convention="matlab")


def _ssim_pair(seed, f, h, w):
  rng = np.random.default_rng(seed)
  x = _smooth_frames(rng, f, h, w)
  y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  return x, y


def test_ssim_skimage_convention_matches_scikit_image():
  from skimage.metrics import structural_similarity
  for h, w in ((16, 20), (40, 33)):
    x, y = _ssim_pair(2, 2, h, w)
    ref = [structural_similarity(x[f], y[f], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=-1) for f in range(len(x))]
    np.testing.assert_allclose(np.asarray(image.ssim(x, y, convention="skimage")), ref, atol=1e-6)


def test_ssim_torchmetrics_convention_matches_torchmetrics_and_is_the_default():
  import torch
  from torchmetrics.functional.image import structural_similarity_index_measure
  for h, w in ((16, 20), (40, 33)):
    x, y = _ssim_pair(3, 2, h, w)
    ref = structural_similarity_index_measure(torch.from_numpy(x).permute(0, 3, 1, 2),
                                              torch.from_numpy(y).permute(0, 3, 1, 2), data_range=1.0,
                                              reduction="none").numpy()
    ours = np.asarray(image.ssim(x, y, convention="torchmetrics"))
    np.testing.assert_allclose(ours, ref, atol=3e-6)  # float32 moments, both sides
    np.testing.assert_array_equal(np.asarray(image.ssim(x, y)), ours)
  # The conventions differ by the border band (what the option is for): clearly more than their tolerance here.
  skimage_mean = np.asarray(image.ssim(x, y, convention="skimage"))
  assert np.abs(skimage_mean - ours).max() > 1e-3
