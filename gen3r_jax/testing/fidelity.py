"""Reduced-precision fidelity: how far a bfloat16 run lands from the float32 reference, in metrics that mean
something for each output (not elementwise allclose).

    python -m gen3r_jax.testing.fidelity ../shared/fixtures/pipeline_tiny --dtype bfloat16 [--param-dtype bfloat16]
    python -m gen3r_jax.testing.fidelity ../shared/fixtures/wan_dit_tiny --dtype bfloat16

The float32 reference is the fixture itself: the official PyTorch float32 run, which the float32 port matches to
the parity tolerances (~1e-4, ``tests/test_parity.py``). rgb, depth and point maps are stored in float16 there
(a floor of ~5e-4 relative on those metrics).

* :func:`pipeline_metrics` (``pipeline_tiny``, the whole ``generate``): rgb PSNR (dB, images in [0, 1]) and
  max / mean absolute error; depth AbsRel (mean ``|d - d_ref| / d_ref``); point maps (VGGT's point head) and
  depth unprojections: mean ``||p - p_ref||`` over mean ``||p_ref||``; cameras: max rotation error (degrees,
  geodesic), max translation error over the trajectory's extent, max relative focal error; final latents:
  relative L2; point masks: fraction of flipped pixels.
* :func:`component_metrics` (any parity fixture): each output of the fixture's own parity case run at ``dtype``,
  ``max |ours - ref| / max |ref|`` and ``mean |ours - ref| / mean |ref|``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from gen3r_jax.apps.bundle import convert_bundle, load_bundle
from gen3r_jax.sampling.pipeline import generate
from gen3r_jax.testing.cases import pipeline as case
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import iter_checks


def run_pipeline(fx: Fixture, dtype: str = "bfloat16", param_dtype: str | None = None) -> dict:
  """``pipeline_tiny`` through the converter and :func:`generate` at ``dtype`` (compute) / ``param_dtype``."""
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = os.path.join(tmp, "bundle")
    convert_bundle(os.path.join(fx.path, "checkpoint"), ckpt, overrides=case.overrides(fx), log=lambda *a: None)
    bundle = load_bundle(ckpt, dtype=dtype, param_dtype=param_dtype)
  images = np.moveaxis(fx.tensor("control_images")[0].astype(np.float32), 1, -1)      # [V, H, W, 3]
  latents = np.moveaxis(fx.tensor("latents_init").astype(np.float32), 1, -1)          # [1, f, h, 2w, 16]
  return generate(bundle, images, fx.config["run"]["prompt"], case.options(fx), latents=latents, record=True,
                  progress=False)


def _f64(a) -> np.ndarray:
  return np.asarray(a, np.float64)


def rotation_error_deg(r, r_ref) -> np.ndarray:
  """Geodesic angle (degrees) between rotation matrices ``[..., 3, 3]``."""
  rel = np.einsum("...ij,...kj->...ik", _f64(r), _f64(r_ref))            # R R_ref^T
  cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
  return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def pipeline_metrics(fx: Fixture, out: dict) -> dict[str, float]:
  """Metrics of a recorded ``generate`` output (``record=True``) against the fixture (module docstring)."""
  dec = out["stages"]["decode"]
  m: dict[str, float] = {}
  rgb, ref = _f64(dec["rgb"]), _f64(fx.tensor("rgbs"))
  err = np.abs(rgb - ref)
  m["rgb_psnr_db"] = float(10 * np.log10(1.0 / max(np.mean(err ** 2), 1e-20)))
  m["rgb_max_abs"], m["rgb_mean_abs"] = float(err.max()), float(err.mean())
  d, d_ref = _f64(dec["depth"]), _f64(fx.tensor("depth_maps"))
  ok = d_ref > 1e-6
  m["depth_abs_rel"] = float(np.mean(np.abs(d - d_ref)[ok] / d_ref[ok]))
  for name, key in (("points", "point_maps_sub4"), ("pcds", "pcds_sub4")):
    ours, ref = _f64(dec[name])[:, :, 1::4, 1::4], _f64(fx.tensor(key))
    m[f"{name}_rel"] = float(np.mean(np.linalg.norm(ours - ref, axis=-1)) / np.mean(np.linalg.norm(ref, axis=-1)))
  e, e_ref = _f64(dec["extrinsics"]), _f64(fx.tensor("extrinsics"))
  m["camera_rot_deg"] = float(rotation_error_deg(e[..., :3, :3], e_ref[..., :3, :3]).max())
  extent = max(float(np.linalg.norm(e_ref[..., :3, 3], axis=-1).max()), 1e-6)
  m["camera_trans_rel"] = float(np.linalg.norm(e[..., :3, 3] - e_ref[..., :3, 3], axis=-1).max() / extent)
  k, k_ref = _f64(dec["intrinsics"]), _f64(fx.tensor("intrinsics"))
  m["focal_rel"] = float(np.max(np.abs(k[..., [0, 1], [0, 1]] - k_ref[..., [0, 1], [0, 1]])
                                / np.abs(k_ref[..., [0, 1], [0, 1]])))
  z = np.moveaxis(_f64(out["stages"]["latents_per_step"][-1]), -1, 1)
  z_ref = _f64(fx.tensor("final_latents"))
  m["latents_rel_l2"] = float(np.linalg.norm(z - z_ref) / np.linalg.norm(z_ref))
  masks, m_ref = np.asarray(dec["masks"]).astype(bool), fx.tensor("point_masks").astype(bool)
  m["mask_flip_fraction"] = float(np.mean(masks != m_ref))
  return m


def component_metrics(fx: Fixture, dtype: str = "bfloat16", only=None) -> dict[str, dict[str, float]]:
  """Every output of the fixture's parity case at ``dtype`` (``only``: stop after these names are seen)."""
  want = set(only or ())
  out = {}
  for check in iter_checks(fx, dtype):
    if check.kind != "allclose" or (want and check.name not in want):
      continue
    ref = _f64(check.ref if check.ref is not None else fx.tensor(check.name))
    ours = _f64(check.ours)
    err = np.abs(ours - ref)
    out[check.name] = {"max_rel": float(err.max() / max(np.abs(ref).max(), 1e-12)),
                       "mean_rel": float(err.mean() / max(np.abs(ref).mean(), 1e-12))}
    if want and want <= set(out):
      break
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("fixture_dir")
  ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  ap.add_argument("--param-dtype", default=None, choices=["float32", "bfloat16"],
                  help="pipeline_tiny only: parameter dtype (default: as converted, float32)")
  args = ap.parse_args(argv)
  fx = Fixture.open(args.fixture_dir)
  if fx.name == "pipeline_tiny":
    res = pipeline_metrics(fx, run_pipeline(fx, args.dtype, args.param_dtype))
  else:
    res = component_metrics(fx, args.dtype)
  print(json.dumps({"fixture": fx.name, "dtype": args.dtype, "param_dtype": args.param_dtype, "metrics": res},
                   indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
