"""One reader for the output directory that ``launch/sample.py`` and ``launch/reconstruct.py`` write.

    scene = load_output_dir("outputs/palace")        # every file checked, then read
    scene.rgb [F, H, W, 3] uint8     scene.depth [F, H, W]     scene.points [F, H, W, 3]   scene.masks [F, H, W]
    scene.c2w [F, 4, 4] (OpenCV)     scene.K [F, 3, 3]         scene.confidence [F, H, W] or None
    scene.prompt, scene.meta, scene.kind ("sample" | "reconstruction"), scene.ply_path

The exports (:mod:`gen3r_jax.apps.export`), the viewer and the web app read an output directory only through
:func:`load_output_dir`, so they agree on what a complete directory is. The files and their format are defined in
:mod:`gen3r_jax.sampling.export` (writer) and :mod:`gen3r_jax.eval.io` (the evaluation's reader, which this one
wraps); camera conventions in :mod:`gen3r_jax.camera_axes` and ``docs/cameras.md``.

A directory missing a required file is a one-line :class:`Gen3RInputError` naming every missing file and the
fix, before anything is decoded; so is one whose files come from different runs (their run ids differ, e.g. a
run killed while moving its files in: :func:`check_one_run`), and one whose ``cameras.json`` describes frames of
another size than ``rgb.mp4`` (``K`` is in pixels of the frames it describes). ``confidence`` is VGGT's depth
confidence (``depth_conf`` of ``vggt_predictions.npz``, written by ``launch/reconstruct.py`` and
``launch/sample.py``; ``None`` for a directory without it, e.g. one written before the sampler saved it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import numpy as np

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.eval.io import read_prediction
from gen3r_jax.sampling.export import PREVIOUS, interrupted_stages, mixed_runs


# what every complete output directory holds (sampling and reconstruction alike)
REQUIRED = ("rgb.mp4", "cameras.json", "depth.npz", "points.npz")
OPTIONAL = ("points.ply", "vggt_predictions.npz", "prompt.txt", "preview.png", "depth.mp4")


@dataclasses.dataclass
class OutputDir:
  """A sample or reconstruction output directory in memory (module docstring)."""
  path: str | None
  rgb: np.ndarray                      # [F, H, W, 3] uint8
  depth: np.ndarray                    # [F, H, W] float32 z-depth
  points: np.ndarray                   # [F, H, W, 3] float32 world points
  masks: np.ndarray                    # [F, H, W] bool: pixels the run keeps (finite points only where True)
  c2w: np.ndarray                      # [F, 4, 4] float64 camera-to-world, OpenCV axes
  K: np.ndarray                        # [F, 3, 3] float64 intrinsics in pixels of the H x W frames
  source_indices: list[int] | None = None
  prompt: str | None = None
  meta: dict = dataclasses.field(default_factory=dict)
  confidence: np.ndarray | None = None  # [F, H, W] VGGT depth confidence (vggt_predictions.npz, when present)
  ply_path: str | None = None

  @property
  def num_frames(self) -> int:
    return int(self.rgb.shape[0])

  @property
  def height(self) -> int:
    return int(self.rgb.shape[1])

  @property
  def width(self) -> int:
    return int(self.rgb.shape[2])

  @property
  def kind(self) -> str:
    """``"reconstruction"`` (``launch/reconstruct.py``) or ``"sample"`` (``launch/sample.py``)."""
    return "reconstruction" if "VGGT" in str(self.meta.get("source", "")) else "sample"

  def valid(self) -> np.ndarray:
    """``[F, H, W]`` pixels whose point is kept and finite."""
    return self.masks & np.isfinite(self.points).all(-1)


def missing_files(path: str, required=REQUIRED) -> list[str]:
  return [n for n in required if not os.path.isfile(os.path.join(path, n))]


def check_output_dir(path: str, required=REQUIRED) -> str:
  """Raise a one-line :class:`Gen3RInputError` unless ``path`` is a directory holding every ``required`` file."""
  hint = "pass a directory written by launch/sample.py or launch/reconstruct.py"
  require(isinstance(path, str) and path.strip() != "", f"no output directory given; {hint}.")
  require(os.path.isdir(path), f"output directory {path!r} not found; {hint}.")
  missing = missing_files(path, required)
  if missing:
    raise Gen3RInputError(f"output directory {path!r} is incomplete: {', '.join(missing)} missing; {hint} (a run "
                          "that was killed before its export leaves the previous outputs, or none).")
  return path


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise Gen3RInputError(f"cannot read {path} ({e}); re-run the sampler / reconstruction that wrote it.") from None
  require(isinstance(data, dict), f"{path}: expected a JSON object.")
  return data


# what reading a damaged (truncated, overwritten) output file raises: numpy's zip reader, the video decoder, JSON
_DAMAGED = (OSError, ValueError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile)


def _read_files(path: str):
  pred = read_prediction(path)
  cams = _read_json(os.path.join(path, "cameras.json"))
  masks = pred.masks if pred.masks is not None else np.ones(pred.points.shape[:3], bool)
  conf = None
  vggt = os.path.join(path, "vggt_predictions.npz")
  if os.path.isfile(vggt):
    with np.load(vggt) as z:
      if "depth_conf" in z:
        conf = np.asarray(z["depth_conf"], np.float32).reshape(masks.shape)
  return pred, cams, masks, conf


def _damaged_file(path: str) -> str:
  """Which of the directory's array files fails to read in full (to name it in the error)."""
  for name in ("depth.npz", "points.npz", "vggt_predictions.npz"):
    f = os.path.join(path, name)
    if os.path.isfile(f):
      try:
        with np.load(f) as z:
          for key in z.files:
            z[key]
      except _DAMAGED:
        return name
  return "rgb.mp4 or cameras.json"


def check_one_run(path: str) -> None:
  """A one-line :class:`Gen3RInputError` when the output files of ``path`` come from different runs (their run
  ids differ: :func:`gen3r_jax.sampling.export.mixed_runs`), e.g. a run killed while moving its files in."""
  ids = mixed_runs(path)
  if ids is None:
    return
  groups: dict = {}
  for name, rid in ids.items():
    groups.setdefault(rid, []).append(name)
  parts = "; ".join(f"{', '.join(names)} {'of run ' + rid[:8] if rid else 'without a run id'}"
                    for rid, names in groups.items())
  stages = [s for s in interrupted_stages(path) if os.path.isdir(os.path.join(s, PREVIOUS))]
  where = (f"; the files of the previous run it displaced are in {os.path.join(stages[-1], PREVIOUS)}"
           if stages else "")
  raise Gen3RInputError(f"output directory {path!r} mixes files of different runs ({parts}): a run was killed "
                        f"while moving its files in, or files were copied in from another run; re-run the sampler / "
                        f"reconstruction into it{where}.")


def load_output_dir(path: str, required=REQUIRED) -> OutputDir:
  """Read a sample / reconstruction output directory (module docstring); checks the files agree on F, H, W, come
  from one run (:func:`check_one_run`) and that ``cameras.json``'s frame size is the video's.

  A damaged file (truncated by a full disk, half-copied) is a one-line :class:`Gen3RInputError` too."""
  check_output_dir(path, required)
  try:
    check_one_run(path)
    pred, cams, masks, conf = _read_files(path)
  except Gen3RInputError:
    raise
  except _DAMAGED as e:
    msg = " ".join(str(e).split()) or type(e).__name__
    raise Gen3RInputError(f"cannot read the output directory {path!r}: {_damaged_file(path)} is damaged "
                          f"({type(e).__name__}: {msg[:200]}); re-run the sampler / reconstruction that wrote it."
                          ) from None
  ply = os.path.join(path, "points.ply")
  rgb = np.round(pred.rgb * 255.0).astype(np.uint8)
  return OutputDir(path=path, rgb=rgb, depth=pred.depth, points=pred.points, masks=masks, c2w=pred.c2w, K=pred.K,
                   source_indices=pred.source_indices, prompt=cams.get("prompt"), meta=dict(cams.get("meta") or {}),
                   confidence=conf, ply_path=ply if os.path.isfile(ply) else None)


__all__ = ("OutputDir", "REQUIRED", "OPTIONAL", "check_output_dir", "check_one_run", "load_output_dir",
           "missing_files")
