"""Host-side pictures of a sample (numpy + PIL): depth colourisation, point-cloud top view, contact sheets.

Depth colourisation (:func:`colorize_depth`)
--------------------------------------------
* Colormap: Google's *Turbo* (perceptual rainbow, Mikhailov 2019, Apache-2.0), evaluated with its published
  degree-5 polynomial approximation (:func:`turbo`; no matplotlib needed), looked up in a 1025-entry
  uint8 table (:func:`turbo_lut`).
* Normalisation is robust and shared by every frame of the clip, so colours do not flicker: over the valid
  pixels (finite, depth > 0, and ``valid`` when given) of ALL frames we take the ``lo``/``hi`` percentiles
  (default 2 / 98) of inverse depth ``1 / d`` (disparity, which spends the colours where the eye looks: near
  surfaces; a far outlier or the sky cannot squash the range), map ``t = (1/d - p_lo) / (p_hi - p_lo)``
  clipped to ``[0, 1]`` and drawn with ``turbo(0.05 + 0.9 t)``: NEAR = red, FAR = blue (the outer 5 % of the
  colormap, nearly black in the polynomial, are skipped so that no valid pixel looks invalid). Invalid pixels
  are black. A constant depth maps to the middle of the colormap (green).

Top view (:func:`top_view`): points are projected on the world x-z plane (OpenCV axes of the first camera:
x right, z forward, y down), z forward pointing up the image, with a fixed aspect ratio; points are drawn from
the lowest (largest y) to the highest so upper surfaces stay visible.
"""

from __future__ import annotations

import functools

from PIL import Image
import numpy as np


TURBO_LO, TURBO_HI = 0.05, 0.95  # part of the colormap used for depth (far, near)

# Turbo polynomial coefficients (constant, x, ..., x^5) for red, green, blue.
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
], np.float64)  # [3, 6]


def turbo(t) -> np.ndarray:
  """Turbo colormap of ``t`` (any shape, clipped to [0, 1]) -> float32 RGB in [0, 1], shape ``[*t.shape, 3]``.

  Horner's rule per channel in float32 (a 49 x 560 x 560 clip is 15 M values: no ``[N, 6]`` power table).
  """
  x = np.clip(np.asarray(t, np.float32), 0.0, 1.0)
  out = np.empty(x.shape + (3,), np.float32)
  for c in range(3):
    acc = np.full(x.shape, _TURBO[c, -1], np.float32)
    for coef in _TURBO[c, -2::-1]:
      acc = acc * x + np.float32(coef)
    out[..., c] = acc
  return np.clip(out, 0.0, 1.0)


def depth_valid(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
  """Pixels with a usable depth: finite, > 0, and ``valid`` when given."""
  ok = np.isfinite(depth) & (depth > 0)
  return ok if valid is None else ok & np.asarray(valid, bool)


def depth_range(depth: np.ndarray, valid: np.ndarray | None = None, *, lo: float = 2.0,
                hi: float = 98.0) -> tuple[float, float] | None:
  """The ``lo`` / ``hi`` percentiles of inverse depth over the valid pixels (``None`` when there are none)."""
  d = np.asarray(depth, np.float32)
  ok = depth_valid(d, valid)
  if not ok.any():
    return None
  p_lo, p_hi = np.percentile(1.0 / d[ok], [lo, hi])
  return float(p_lo), float(p_hi)


@functools.lru_cache(maxsize=4)
def turbo_lut(n: int = 1025) -> np.ndarray:
  """uint8 ``[n, 3]`` table of :func:`turbo` at ``i / (n - 1)`` (1025 entries: 0.5 is exact)."""
  return np.round(turbo(np.linspace(0.0, 1.0, n)) * 255.0).astype(np.uint8)


def colorize_depth(depth: np.ndarray, valid: np.ndarray | None = None, *, lo: float = 2.0, hi: float = 98.0,
                   bounds: tuple[float, float] | None = None) -> np.ndarray:
  """Depth ``[..., H, W]`` -> uint8 RGB ``[..., H, W, 3]`` (module docstring: Turbo, inverse-depth percentiles).

  ``bounds`` (from :func:`depth_range`) overrides the percentiles, e.g. to colour a few frames as the clip.
  """
  d = np.asarray(depth, np.float32)
  ok = depth_valid(d, valid)
  out = np.zeros(d.shape + (3,), np.uint8)
  bounds = bounds if bounds is not None else depth_range(d, ok, lo=lo, hi=hi)
  if bounds is None or not ok.any():
    return out
  inv = 1.0 / d[ok]
  p_lo, p_hi = bounds
  t = np.clip((inv - p_lo) / (p_hi - p_lo), 0.0, 1.0) if p_hi > p_lo else np.full_like(inv, 0.5)
  lut = turbo_lut()
  out[ok] = lut[np.round((TURBO_LO + (TURBO_HI - TURBO_LO) * t) * (len(lut) - 1)).astype(np.int64)]
  return out


def top_view(points: np.ndarray, colors: np.ndarray, size: tuple[int, int], bounds: np.ndarray,
             background: int = 32) -> np.ndarray:
  """Rasterise points ``[N, 3]`` (uint8 ``colors [N, 3]``) seen from above into a uint8 ``[h, w, 3]`` image.

  ``bounds = [[x_min, z_min], [x_max, z_max]]`` (shared by the frames of a contact sheet); points outside are
  dropped. One pixel per point, the highest (smallest y) wins.
  """
  h, w = size
  img = np.full((h, w, 3), background, np.uint8)
  (x0, z0), (x1, z1) = np.asarray(bounds, np.float64)
  span = max(x1 - x0, z1 - z0, 1e-12)
  scale = min(w - 1, h - 1) / span
  off_u = (w - 1 - (x1 - x0) * scale) / 2.0  # centre the box
  off_v = (h - 1 - (z1 - z0) * scale) / 2.0
  p = np.asarray(points, np.float64)
  u = np.round(off_u + (p[:, 0] - x0) * scale).astype(np.int64)
  v = np.round(h - 1 - off_v - (p[:, 2] - z0) * scale).astype(np.int64)  # far (large z) at the top
  keep = (u >= 0) & (u < w) & (v >= 0) & (v < h)
  order = np.argsort(-p[keep, 1], kind="stable")  # largest y (lowest) first, highest drawn last
  img[v[keep][order], u[keep][order]] = np.asarray(colors)[keep][order]
  return img


def top_view_bounds(points: np.ndarray, pct: float = 1.0) -> np.ndarray:
  """Robust x-z box of points ``[N, 3]``: ``[[x_lo, z_lo], [x_hi, z_hi]]`` at the ``pct`` / ``100 - pct``
  percentiles (a unit box round the origin when there are no points)."""
  if len(points) == 0:
    return np.array([[-1.0, -1.0], [1.0, 1.0]])
  xz = np.asarray(points, np.float64)[:, [0, 2]]
  return np.percentile(xz, [pct, 100.0 - pct], axis=0)


def resize_tile(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of a uint8 ``[H, W, 3]`` image to ``size = (h, w)`` (no-op when already that size)."""
  if img.shape[:2] == tuple(size):
    return img
  return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))


def contact_sheet(rows: list[list[np.ndarray]], gap: int = 4, background: int = 255) -> np.ndarray:
  """Grid of equally sized uint8 tiles ``[h, w, 3]`` with ``gap`` pixels between and around them.

  Output ``[R * h + (R + 1) * gap, C * w + (C + 1) * gap, 3]`` for R rows of C tiles.
  """
  h, w = rows[0][0].shape[:2]
  r, c = len(rows), len(rows[0])
  sheet = np.full((r * h + (r + 1) * gap, c * w + (c + 1) * gap, 3), background, np.uint8)
  for i, row in enumerate(rows):
    for j, tile in enumerate(row):
      y, x = gap + i * (h + gap), gap + j * (w + gap)
      sheet[y:y + h, x:x + w] = tile
  return sheet
