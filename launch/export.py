"""Export a sample or reconstruction output directory to COLMAP, nerfstudio or a 3D Gaussian-splat PLY.

    python launch/export.py outputs/palace --format colmap                 # -> outputs/palace/colmap/
    python launch/export.py outputs/palace --format nerfstudio --out /data/gen3r/generated/palace
    python launch/export.py outputs/recon --format colmap,nerfstudio,splat --max_points 300000

Formats, folders and conventions: :mod:`gen3r_jax.apps.export` and ``docs/cameras.md``. Bad input (a directory
that is not a complete output directory, an unknown format) prints one ``error:`` line and exits with status 2
before anything is written; each export folder is swapped in complete.
"""

from __future__ import annotations

import sys

from absl import app, flags

_FORMAT = flags.DEFINE_string("format", None, "colmap | nerfstudio | splat (comma-separated for several)")
_OUT = flags.DEFINE_string("out", None, "destination folder (default: <output dir>/<format>; with several formats "
                           "<out>/<format>)")
_MAX_POINTS = flags.DEFINE_integer("max_points", 1_000_000, "subsample the points to at most this many (0: all)")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the point subsampling")
_OPACITY = flags.DEFINE_float("splat_opacity", 0.1, "initial opacity of every Gaussian (splat)")
_SH_DEGREE = flags.DEFINE_integer("splat_sh_degree", 0, "spherical-harmonics degree of the splat PLY (0: DC only; "
                                  "3 writes the 45 zero f_rest_* the reference trainer's load_ply expects)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars on a terminal (false: plain lines)")


def main(argv) -> int:
  from gen3r_jax.apps.cli import run_tool
  from gen3r_jax.apps.export import export_output_dir
  if len(argv) != 2:
    print("error: pass exactly one output directory: python launch/export.py <output dir> --format colmap",
          file=sys.stderr)
    return 2
  return run_tool(export_output_dir, argv[1], _FORMAT.value, _OUT.value, max_points=_MAX_POINTS.value,
                  seed=_SEED.value, opacity=_OPACITY.value, sh_degree=_SH_DEGREE.value, progress=_PROGRESS.value)


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
