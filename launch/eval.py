"""Evaluate one Gen3R sample against its ground-truth scene: image, point-cloud and camera metrics.

    python launch/eval.py --pred out/sample_000 --gt data/re10k/scene_000
    python launch/eval.py --pred out/s --gt data/co3d/s --metrics=pointcloud,camera --gt_stride=2
    python launch/eval.py --pred out/s --gt data/s --lpips_weights=lpips_alex.pth --exclude_frames=0,48
    python launch/eval.py --pred out/s --gt data/s --ssim=skimage --camera_convention=vggt_early

Prints a table and writes the full result (per-frame values included) as JSON, by default to
``<pred>/eval_metrics.json``. Formats, protocols and every default are described in ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

_PRED = flags.DEFINE_string("pred", None, "sample output directory (rgb.mp4, depth.npz, cameras.json, ...)")
_GT = flags.DEFINE_string("gt", None, "ground-truth scene folder (images/, transforms.json, depths/)")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "where to write the JSON (default <pred>/eval_metrics.json)")
_METRICS = flags.DEFINE_list("metrics", ["image", "pointcloud", "camera"], "metric families to compute")
_LPIPS_WEIGHTS = flags.DEFINE_string("lpips_weights", None,
                                     "LPIPS AlexNet weights (file, or 'torchvision_alexnet.pth,lpips_alex.pth')")
_EXCLUDE = flags.DEFINE_list("exclude_frames", [], "prediction frames not scored by the image metrics, e.g. 0,48")
_GT_START = flags.DEFINE_integer("gt_start", None, "first ground-truth frame (when cameras.json has no source_index)")
_GT_STRIDE = flags.DEFINE_integer("gt_stride", None, "ground-truth frame stride (when cameras.json has none)")
_PC_PROTOCOL = flags.DEFINE_enum("pc_protocol", "both", ["official", "corrected", "both"],
                                 "point-cloud protocol: the repository's ('official') or the fixed one")
_PC_MASK = flags.DEFINE_enum("pc_mask", "valid", ["valid", "none"],
                             "valid: score pixels with GT depth and a valid prediction; none: every pixel")
_VOXEL = flags.DEFINE_float("voxel_size", 0.005, "voxel edge before FPS, in ground-truth units")
_NUM_POINTS = flags.DEFINE_integer("num_points", 20000, "FPS points per cloud")
_DEPTH_PNG_SCALE = flags.DEFINE_float("depth_png_scale", 1000.0, "16-bit depth PNG value per GT unit")
_NN_CHUNK = flags.DEFINE_integer("nn_chunk", 512, "query rows per nearest-neighbour block")
_SSIM = flags.DEFINE_enum("ssim", "torchmetrics", ["torchmetrics", "skimage"],
                          "SSIM convention: torchmetrics (map over the reflect-padded image, averaged everywhere) "
                          "or skimage (valid region only)")
_CAMERA_CONVENTION = flags.DEFINE_enum("camera_convention", "vggt", ["vggt", "vggt_early"],
                                       "relative poses: vggt = E_i inv(E_j) (current VGGT evaluation code); "
                                       "vggt_early = inv(E_i) E_j after making each trajectory relative to its "
                                       "first camera (an early copy)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars on a terminal (false: plain lines)")
_PC_NONFINITE = flags.DEFINE_enum("pc_nonfinite", "exclude", ["exclude", "miss", "error"],
                                  "predicted pixels with NaN/inf points (always counted and warned): exclude "
                                  "them from both clouds, score them as misses (their GT points stay), or stop")


def main(argv) -> int:
  del argv
  from gen3r_jax.apps.cli import setup_console
  setup_console(progress=_PROGRESS.value)
  from gen3r_jax.errors import Gen3RInputError
  from gen3r_jax.apps.evaluate import EvalOptions, evaluate, format_table

  if not _PRED.value or not _GT.value:
    print("error: --pred and --gt are required (see --helpfull)", file=sys.stderr)
    return 2
  try:
    protocols = ("official", "corrected") if _PC_PROTOCOL.value == "both" else (_PC_PROTOCOL.value,)
    opts = EvalOptions(
        metrics=tuple(_METRICS.value), lpips_weights=_LPIPS_WEIGHTS.value,
        exclude_frames=tuple(int(i) for i in _EXCLUDE.value), gt_start=_GT_START.value,
        gt_stride=_GT_STRIDE.value, pc_protocols=protocols, pc_mask=_PC_MASK.value, voxel_size=_VOXEL.value,
        num_points=_NUM_POINTS.value, depth_png_scale=_DEPTH_PNG_SCALE.value, nn_chunk=_NN_CHUNK.value,
        ssim_convention=_SSIM.value, camera_convention=_CAMERA_CONVENTION.value,
        pc_nonfinite=_PC_NONFINITE.value)
    result = evaluate(_PRED.value, _GT.value, opts, progress=True)
  except (Gen3RInputError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(format_table(result))
  out = _OUTPUT_JSON.value or os.path.join(_PRED.value, "eval_metrics.json")
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
