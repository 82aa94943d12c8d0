"""Reconstruct a scene from images with VGGT: depth maps, cameras and a coloured point cloud.

    python launch/reconstruct.py --images photos/ --checkpoint ckpt/vggt_1b --out outputs/recon
    python launch/reconstruct.py --images a.png,b.png,c.png --checkpoint ckpt/vggt_1b --out outputs/recon \\
        --size 560 --frames_chunk 4 --dtype bfloat16

``--checkpoint`` is a VGGT converted with ``launch/convert.py --model vggt_1b``. Writes ``depth.npz`` /
``depth.mp4``, ``points.ply`` / ``points.npz``, ``cameras.json``, ``preview.png``, ``rgb.mp4`` and
``vggt_predictions.npz`` (see :mod:`gen3r_jax.apps.reconstruct`, where all the logic lives). Bad input
(no images, unreadable image, missing checkpoint, bad size, an output directory that cannot be created or
written) prints a one-line error and exits with status 2 before the model is loaded; the outputs are written
atomically, as a set, and a previous run's outputs in ``--out`` are replaced with a one-line warning.
"""

from __future__ import annotations

import sys

from absl import app, flags

_IMAGES = flags.DEFINE_string("images", None, "a folder of images or a comma-separated list of image files")
_CKPT = flags.DEFINE_string("checkpoint", None, "converted VGGT checkpoint folder (launch/convert.py)")
_OUT = flags.DEFINE_string("out", None, "output directory")
_SIZE = flags.DEFINE_integer("size", 518, "frame size, a multiple of 14 (518 for VGGT-1B, 560 as in Gen3R)")
_MODE = flags.DEFINE_enum("mode", "crop", ["crop", "pad"], "crop to a square, or pad the longer side with white")
_CHUNK = flags.DEFINE_integer("frames_chunk", None, "frames per DPT-head chunk (default: the model's, 8)")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_MASK = flags.DEFINE_bool("min_max_depth_mask", True, "drop points outside the per-frame 0.1 / 98 depth percentiles")
_MAX_POINTS = flags.DEFINE_integer("max_points", None, "subsample the PLY to at most this many points")
_EXPORT = flags.DEFINE_string("export_formats", "", "also export to these formats, comma-separated: colmap, "
                              "nerfstudio, splat (into <out>/<format>; see launch/export.py)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars on a terminal (false: plain lines)")
flags.mark_flags_as_required(["images", "checkpoint", "out"])


def main(argv) -> int:
  del argv
  from gen3r_jax.apps.cli import run_tool
  from gen3r_jax.apps.reconstruct import reconstruct
  return run_tool(reconstruct, _IMAGES.value, _CKPT.value, _OUT.value, size=_SIZE.value, mode=_MODE.value,
                  frames_chunk_size=_CHUNK.value, dtype=_DTYPE.value, min_max_depth_mask=_MASK.value,
                  max_points=_MAX_POINTS.value, export_formats=_EXPORT.value, progress=_PROGRESS.value)

if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
