"""Ground-truth scene folders (layout in :mod:`gen3r_jax.eval.io`) and frame selection.

``read_scene`` loads the selected frames of a scene, brought to the prediction's resolution the way the
inference pipeline prepares its inputs: short side resized (bilinear for images, nearest for depth), centre crop,
intrinsics scaled and shifted as the official ``get_K`` does.
"""

from __future__ import annotations

import dataclasses
import json
import os

from PIL import Image
import numpy as np

from gen3r_jax.camera_axes import AXES, OPENCV, to_opencv
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.eval.io import resize_crop_params, unproject


@dataclasses.dataclass
class Scene:
  """Selected ground-truth frames at the evaluation resolution."""
  path: str
  names: list[str]  # image stems
  indices: list[int]  # indices into transforms.json's frames
  c2w: np.ndarray  # [F, 4, 4] float64, OpenCV
  K: np.ndarray  # [F, 3, 3] float64, pixels of the output size
  images: np.ndarray | None = None  # [F, H, W, 3] float32 in [0, 1]
  depth: np.ndarray | None = None  # [F, H, W] float32, 0 where invalid

  def world_points(self) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth point map ``[F, H, W, 3]`` (depth unprojected with the GT cameras) and validity."""
    require(self.depth is not None,
            f"{self.path}: ground-truth depth is missing (expected depths/<frame>.npy or 16-bit "
            "depths/<frame>.png); the point-cloud metrics need it (or drop 'pointcloud' from --metrics).")
    return unproject(self.depth, self.K, self.c2w), self.depth > 0


def select_frames(num_gt: int, num_pred: int, *, source_indices=None, start: int | None = None,
                  stride: int | None = None) -> list[int]:
  """Which ground-truth frames the ``num_pred`` predicted frames correspond to.

  Priority: ``source_indices`` (from the prediction's ``cameras.json``), then ``start`` / ``stride``, then the
  identity, which requires equal frame counts.
  """
  require(num_pred > 0, "the prediction has no frames.")
  if source_indices is not None:
    idx = [int(i) for i in source_indices]
    require(len(idx) == num_pred, f"cameras.json lists {len(idx)} source indices for {num_pred} frames.")
  elif start is not None or stride is not None:
    start, stride = start or 0, stride or 1
    require(stride > 0 and start >= 0, f"--gt_start must be >= 0 and --gt_stride > 0, got {start}, {stride}.")
    idx = [start + i * stride for i in range(num_pred)]
  else:
    require(num_gt == num_pred,
            f"mismatched frame counts: the prediction has {num_pred} frames and the scene {num_gt}; pass "
            "--gt_start / --gt_stride (the sampler's clip selection) or write source_index into cameras.json.")
    idx = list(range(num_pred))
  bad = [i for i in idx if not 0 <= i < num_gt]
  require(not bad, f"ground-truth frame indices {bad[:5]} are outside the scene's {num_gt} frames.")
  return idx


def _resize(img: np.ndarray, h: int, w: int, out_h: int, out_w: int, nearest: bool) -> np.ndarray:
  rh, rw, top, left = resize_crop_params(h, w, out_h, out_w)
  if nearest:
    im = Image.fromarray(img.astype(np.float32), mode="F").resize((rw, rh), Image.NEAREST)
  else:
    im = Image.fromarray(img).resize((rw, rh), Image.BILINEAR)
  return np.asarray(im)[top:top + out_h, left:left + out_w]


def _adjust_K(fr: dict, out_h: int, out_w: int) -> np.ndarray:
  h, w = int(fr["h"]), int(fr["w"])
  ratio = max(out_h / h, out_w / w)
  _, _, top, left = resize_crop_params(h, w, out_h, out_w)
  return np.array([[fr["fl_x"] * ratio, 0.0, fr["cx"] * ratio - left],
                   [0.0, fr["fl_y"] * ratio, fr["cy"] * ratio - top],
                   [0.0, 0.0, 1.0]])


def _find_depth(scene: str, stem: str) -> str | None:
  for folder in ("depths", "depth"):
    for ext in (".npy", ".png"):
      p = os.path.join(scene, folder, stem + ext)
      if os.path.exists(p):
        return p
  return None


def _read_depth(path: str, png_scale: float) -> np.ndarray:
  if path.endswith(".npy"):
    d = np.load(path).astype(np.float32)
  else:
    d = np.asarray(Image.open(path)).astype(np.float32) / png_scale
  d = np.squeeze(d)
  require(d.ndim == 2, f"{path}: depth must be a single-channel H x W map, got {d.shape}.")
  return np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)


def read_transforms(scene: str) -> list[dict]:
  """The ``frames`` list of ``transforms.json`` (checked for the keys the evaluation needs), ``transform_matrix``
  with OpenCV camera axes (a top-level ``"camera_axes": "opengl"``, as our nerfstudio export writes, is
  converted; docs/cameras.md)."""
  path = os.path.join(scene, "transforms.json")
  require(os.path.isdir(scene), f"ground-truth scene folder not found: {scene}")
  require(os.path.exists(path), f"{scene}: ground-truth cameras missing (no transforms.json).")
  with open(path) as f:
    meta = json.load(f)
  frames = meta.get("frames", [])
  require(len(frames) > 0, f"{path}: no frames.")
  axes = meta.get("camera_axes", OPENCV)
  require(axes in AXES, f"{path}: camera_axes must be one of {', '.join(AXES)}, got {axes!r}.")
  keys = ("file_path", "w", "h", "fl_x", "fl_y", "cx", "cy", "transform_matrix")
  for i, fr in enumerate(frames):
    missing = [k for k in keys if k not in fr]
    require(not missing, f"{path}: frame {i} lacks {', '.join(missing)}.")
  if axes != OPENCV:
    frames = [dict(fr, transform_matrix=to_opencv(fr["transform_matrix"], axes).tolist()) for fr in frames]
  return frames


def read_scene(scene: str, indices: list[int], size: tuple[int, int], *, images: bool = True,
               depth: bool = True, depth_png_scale: float = 1000.0) -> Scene:
  """Load frames ``indices`` of ``scene`` at ``size = (H, W)``.

  Images are required when ``images``; depth is loaded when ``depth`` and present for *every* selected frame
  (``Scene.depth`` stays ``None`` otherwise, and :meth:`Scene.world_points` explains what is missing).
  """
  frames = read_transforms(scene)
  out_h, out_w = size
  sel = [frames[i] for i in indices]
  stems = [os.path.splitext(os.path.basename(fr["file_path"]))[0] for fr in sel]
  c2w = np.asarray([fr["transform_matrix"] for fr in sel], np.float64)
  require(c2w.shape[1:] == (4, 4), f"{scene}: transform_matrix must be 4x4, got {c2w.shape[1:]}.")
  out = Scene(scene, stems, list(indices), c2w, np.stack([_adjust_K(fr, out_h, out_w) for fr in sel]))
  if images:
    imgs = []
    for fr in sel:
      p = os.path.join(scene, fr["file_path"])
      if not os.path.exists(p):
        p = os.path.join(scene, "images", os.path.basename(fr["file_path"]))
      if not os.path.exists(p):
        raise Gen3RInputError(f"{scene}: ground-truth image {fr['file_path']} not found.")
      img = np.asarray(Image.open(p).convert("RGB"))
      imgs.append(_resize(img, img.shape[0], img.shape[1], out_h, out_w, nearest=False))
    out.images = np.stack(imgs).astype(np.float32) / 255.0
  if depth:
    paths = [_find_depth(scene, s) for s in stems]
    if all(p is not None for p in paths):
      maps = []
      for p in paths:
        d = _read_depth(p, depth_png_scale)
        maps.append(_resize(d, d.shape[0], d.shape[1], out_h, out_w, nearest=True))
      out.depth = np.stack(maps).astype(np.float32)
  return out
