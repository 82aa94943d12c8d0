"""Read a sample or reconstruction output directory into arrays, for the viewer and the web app.

    scene = load_output_dir("outputs/palace")     # rgb, points, masks, confidence, cameras, metadata
    scene.rgb [F, H, W, 3] uint8    scene.points [F, H, W, 3]    scene.masks [F, H, W]    scene.c2w [F, 4, 4]

Both ``launch/sample.py`` and ``launch/reconstruct.py`` write the directory (format: :mod:`gen3r_jax.eval.io`,
writer :mod:`gen3r_jax.sampling.export`); it is read with the evaluation's reader
(:func:`gen3r_jax.eval.io.read_prediction`, which checks that the files agree on frames and size), plus what only
viewing needs: VGGT's depth confidence (``depth_conf`` in ``vggt_predictions.npz``, when present) and the
metadata of ``cameras.json`` (prompt, task, timings). A directory without the files a viewer needs (``rgb.mp4``,
``cameras.json`` and ``points.npz`` or ``depth.npz``) is a one-line :class:`Gen3RInputError` naming them.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.eval.io import read_prediction
from gen3r_jax.sampling.export import OUTPUT_NAMES

REQUIRED = ("rgb.mp4", "cameras.json")
GEOMETRY = ("points.npz", "depth.npz")      # one of them: points.npz, or depth.npz unprojected with the cameras
CONFIDENCE_FILE = "vggt_predictions.npz"


@dataclasses.dataclass
class Scene:
  """An output directory in memory (module docstring). ``files`` maps each output file present to its path."""
  path: str
  rgb: np.ndarray                   # [F, H, W, 3] uint8
  points: np.ndarray                # [F, H, W, 3] float32 world points
  masks: np.ndarray                 # [F, H, W] bool: the exported mask (depth percentiles), finite points only
  c2w: np.ndarray                   # [F, 4, 4] camera-to-world, OpenCV axes
  K: np.ndarray                     # [F, 3, 3] pixels of the H x W frames
  conf: np.ndarray | None = None    # [F, H, W] float32 VGGT depth confidence, when the directory has it
  depth: np.ndarray | None = None   # [F, H, W] float32
  meta: dict = dataclasses.field(default_factory=dict)
  files: dict = dataclasses.field(default_factory=dict)

  @property
  def num_frames(self) -> int:
    return int(self.rgb.shape[0])

  @property
  def size(self) -> tuple[int, int]:
    return int(self.rgb.shape[1]), int(self.rgb.shape[2])


def missing_files(path: str) -> list[str]:
  """The files a viewer needs that ``path`` lacks (``[]``: complete)."""
  have = lambda n: os.path.isfile(os.path.join(path, n))  # noqa: E731
  missing = [n for n in REQUIRED if not have(n)]
  if not any(have(n) for n in GEOMETRY):
    missing.append(" or ".join(GEOMETRY))
  return missing


def check_output_dir(path: str) -> str:
  """One-line :class:`Gen3RInputError` unless ``path`` is an output directory with the files a viewer needs."""
  require(isinstance(path, str) and path.strip() != "",
          "no output directory given: pass the folder written by launch/sample.py or launch/reconstruct.py.")
  require(os.path.isdir(path), f"output directory {path!r} not found: pass the folder written by launch/sample.py "
                               "or launch/reconstruct.py (their --config.out / --out).")
  missing = missing_files(path)
  require(not missing, f"{path!r} is not a complete output directory: missing {', '.join(missing)} (write one with "
                       "launch/sample.py or launch/reconstruct.py).")
  return path


def _confidence(path: str, shape: tuple[int, int, int]) -> np.ndarray | None:
  f = os.path.join(path, CONFIDENCE_FILE)
  if not os.path.isfile(f):
    return None
  with np.load(f) as z:
    if "depth_conf" not in z:
      return None
    conf = np.asarray(z["depth_conf"], np.float32)
  require(conf.shape == shape, f"{f}: depth_conf has shape {conf.shape}, the other files {shape}.")
  return conf


def load_output_dir(path: str) -> Scene:
  """Read an output directory (module docstring); bad or missing files are one-line :class:`Gen3RInputError`."""
  check_output_dir(path)
  try:
    pred = read_prediction(path)
  except (OSError, ValueError, KeyError) as e:       # a truncated video / npz, malformed JSON
    raise Gen3RInputError(f"cannot read output directory {path!r}: {str(e).splitlines()[0] if str(e) else e!r}"
                          ) from None
  points, valid = pred.world_points()
  rgb = np.round(np.clip(pred.rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
  with open(os.path.join(path, "cameras.json")) as f:
    cams = json.load(f)
  meta = {k: v for k, v in cams.items() if k not in ("frames", "extrinsics", "intrinsics")}
  files = {n: os.path.join(path, n) for n in OUTPUT_NAMES if os.path.isfile(os.path.join(path, n))}
  return Scene(path=path, rgb=rgb, points=points, masks=valid, c2w=pred.c2w, K=pred.K,
               conf=_confidence(path, tuple(valid.shape)), depth=pred.depth, meta=meta, files=files)


__all__ = ("Scene", "REQUIRED", "GEOMETRY", "missing_files", "check_output_dir", "load_output_dir")
