"""3D Gaussian-splat PLY initialised from a coloured point cloud, in the layout of the reference 3D Gaussian
Splatting code (Kerbl et al. 2023, ``GaussianModel.save_ply``), which splat viewers (SuperSplat, the antimatter15
WebGL viewer, gsplat's and nerfstudio's loaders) read.

    n = write_splat_ply("scene.ply", xyz, rgb)          # xyz [N, 3] float, rgb [N, 3] uint8

Binary little-endian, one ``vertex`` element, every property ``float``, in this order:

=========================  ===================================================================================
``x y z``                  the point
``nx ny nz``               zeros (unused by splatting; the reference writes them)
``f_dc_0 f_dc_1 f_dc_2``   degree-0 spherical-harmonics coefficient of the colour: ``(rgb / 255 - 0.5) / C0``,
                           ``C0 = 0.28209479177387814`` (``RGB2SH``)
``f_rest_0 ..``            higher SH bands, zeros; only with ``sh_degree > 0`` (``3 * ((d + 1)^2 - 1)`` values:
                           45 for degree 3, what the reference trainer's ``load_ply`` expects)
``opacity``                ``logit(opacity)`` (default opacity 0.1, the reference initialisation)
``scale_0 scale_1 scale_2``  ``log`` of the local point spacing, isotropic: the root mean square distance to the
                           ``k = 3`` nearest other points (the reference ``distCUDA2``), squared distance floored
                           at ``1e-7``
``rot_0 rot_1 rot_2 rot_3``  the identity rotation ``(w, x, y, z) = (1, 0, 0, 0)``
=========================  ===================================================================================

Nearest neighbours come from ``scipy.spatial.cKDTree`` (scipy is a dependency of JAX). No model runs here.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from gen3r_jax.atomic import atomic_path
from gen3r_jax.errors import require
from gen3r_jax.ply import vertex_ply_bytes


SH_C0 = 0.28209479177387814
MIN_DIST2 = 1e-7


def attribute_names(sh_degree: int = 0) -> list[str]:
  """The vertex properties in file order (module docstring)."""
  rest = 3 * ((sh_degree + 1) ** 2 - 1)
  return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(rest)]
          + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def rgb_to_sh(rgb) -> np.ndarray:
  """uint8 (or [0, 1] float) colours -> degree-0 SH coefficients."""
  c = np.asarray(rgb)
  c = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else c.astype(np.float64)
  return (c - 0.5) / SH_C0


def knn_spacing(points, k: int = 3) -> np.ndarray:
  """``[N]`` root mean square distance of each point to its ``k`` nearest other points (squared distance floored
  at ``MIN_DIST2``); a single point gets ``sqrt(MIN_DIST2)``."""
  p = np.asarray(points, np.float64).reshape(-1, 3)
  n = len(p)
  k = min(int(k), n - 1)
  if k < 1:
    return np.full(n, np.sqrt(MIN_DIST2))
  d, _ = cKDTree(p).query(p, k=k + 1, workers=-1)       # column 0: the point itself (or a duplicate, also 0)
  d2 = np.maximum(np.mean(np.square(d[:, 1:]), axis=1), MIN_DIST2)
  return np.sqrt(d2)


def splat_vertices(points, colors, *, opacity: float = 0.1, k: int = 3, sh_degree: int = 0) -> np.ndarray:
  """The structured vertex array of the file (module docstring)."""
  p = np.asarray(points, np.float32).reshape(-1, 3)
  c = np.asarray(colors).reshape(-1, 3)
  require(len(p) > 0, "splat export: no valid points to initialise Gaussians from.")
  require(len(c) == len(p), f"splat export: {len(p)} points but {len(c)} colours.")
  require(bool(np.isfinite(p).all()), "splat export: points contain NaN or inf; pass the valid points only.")
  require(0.0 < opacity < 1.0, f"splat export: opacity must lie in (0, 1), got {opacity!r}.")
  require(isinstance(sh_degree, int) and 0 <= sh_degree <= 3, f"sh_degree must be 0..3, got {sh_degree!r}.")
  names = attribute_names(sh_degree)
  v = np.zeros(len(p), np.dtype([(n, "<f4") for n in names]))
  v["x"], v["y"], v["z"] = p.T
  sh = rgb_to_sh(c)
  for i in range(3):
    v[f"f_dc_{i}"] = sh[:, i]
  v["opacity"] = np.log(opacity / (1.0 - opacity))
  scale = np.log(knn_spacing(p, k))
  for i in range(3):
    v[f"scale_{i}"] = scale
  v["rot_0"] = 1.0
  return v


def write_splat_ply(path: str, points, colors, *, opacity: float = 0.1, k: int = 3, sh_degree: int = 0) -> int:
  """Write the splat PLY atomically; returns the Gaussian count."""
  v = splat_vertices(points, colors, opacity=opacity, k=k, sh_degree=sh_degree)
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(vertex_ply_bytes(v))
  return int(len(v))


__all__ = ("SH_C0", "attribute_names", "rgb_to_sh", "knn_spacing", "splat_vertices", "write_splat_ply")
