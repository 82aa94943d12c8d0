"""A scene folder that is at once a nerfstudio dataset and a scene of the official Gen3R training layout.

    write_nerfstudio_scene("scene/", rgb=frames, c2w=c2w, K=K, depth=depth, prompt="...", points=xyz, colors=rgb)

Layout (``docs/cameras.md``, ``docs/data.md``)::

    scene/images/frame00000.png ...       the frames (8-bit RGB PNG)
    scene/depths/frame00000.npy ...       float32 [H, W] z-depth in scene units (0 = no depth: masked out by the
                                          run's mask, not finite or not positive)
    scene/transforms.json                 nerfstudio format, per-frame intrinsics (see below)
    scene/captions.txt                    the prompt (one line), when given
    scene/sparse_pc.ply                   the coloured points (x y z + red green blue), nerfstudio's seed points
    scene/train_{videos_dirs,cameras_paths,captions_paths}.txt   the scene as a one-scene dataset folder
                                          (without a prompt only train_videos_dirs.txt: stage 1 reads images)

``transforms.json``: ``camera_model`` ``"OPENCV"`` (nerfstudio's name for a pinhole with OpenCV distortion, here
zero), ``camera_axes`` ``"opengl"``, the shared ``w h fl_x fl_y cx cy`` when every frame has the same
intrinsics, ``ply_file_path``, and ``frames`` in order, each with its own ``file_path``, ``depth_file_path``,
``w h fl_x fl_y cx cy`` (the official training data carries them per frame) and ``transform_matrix``:
camera-to-world with **OpenGL** camera axes, as nerfstudio reads it (our OpenCV pose times
``diag(1, -1, -1, 1)``, :mod:`gen3r_jax.camera_axes`). The official data stores OpenCV axes and no
``camera_axes`` key; our reader (:func:`gen3r_jax.data.layout.read_transforms`) takes the key into account, so the
folder feeds back into our training pipeline unchanged. nerfstudio reads ``.npy`` depth multiplied by its
``depth_unit_scale_factor`` (default ``1e-3``, for millimetre PNGs): pass ``--pipeline.datamanager.dataparser.
depth-unit-scale-factor 1.0`` (``ns-train ... nerfstudio-data --depth-unit-scale-factor 1.0``) for these files.
"""

from __future__ import annotations

import json
import os

from PIL import Image
import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.camera_axes import OPENGL, as_4x4, opencv_to_opengl
from gen3r_jax.data.layout import LIST_KINDS
from gen3r_jax.errors import require
from gen3r_jax.ply import write_ply


TRANSFORMS = "transforms.json"
SEED_PLY = "sparse_pc.ply"


def frame_name(i: int) -> str:
  """``frame00000`` (the official data's ``images/frameNNNNN.png`` naming)."""
  return f"frame{i:05d}"


def save_png(path: str, image: np.ndarray) -> None:
  with atomic_path(path) as tmp:
    Image.fromarray(image).save(tmp, format="PNG")


def _save_npy(path: str, array: np.ndarray) -> None:
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.save(f, array)


def _write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(text)


def _intrinsics(k: np.ndarray, w: int, h: int) -> dict:
  return {"w": int(w), "h": int(h), "fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2]),
          "cy": float(k[1, 2])}


def write_nerfstudio_scene(folder: str, *, rgb, c2w, K, depth=None, masks=None, prompt: str | None = None,
                           points=None, colors=None, lists: bool = True) -> dict:
  """Write the scene folder (module docstring); returns the ``transforms.json`` content.

  Args:
    rgb: ``[F, H, W, 3]`` uint8 frames; c2w: ``[F, 4, 4]`` camera-to-world with OpenCV axes; K: ``[F, 3, 3]``.
    depth: ``[F, H, W]`` z-depth (NaN / inf / negative written as 0, "no depth").
    masks: ``[F, H, W]`` bool, the pixels the run keeps (``points.npz``'s masks); depth is written as 0 elsewhere.
    points, colors: ``[N, 3]`` world points and colours (uint8, or float in [0, 1]) for ``sparse_pc.ply``
      (optional).
    lists: also write the ``train_*.txt`` list files, so the folder is a one-scene dataset folder.
  """
  x = np.asarray(rgb)
  require(x.ndim == 4 and x.shape[-1] == 3 and x.dtype == np.uint8, f"nerfstudio export: rgb must be uint8 "
                                                                     f"[F, H, W, 3], got {x.dtype} {x.shape}.")
  f, h, w, _ = x.shape
  c2w = as_4x4(c2w)
  K = np.asarray(K, np.float64)
  require(c2w.shape == (f, 4, 4) and K.shape == (f, 3, 3),
          f"nerfstudio export: {f} frames need c2w [{f}, 4, 4] and K [{f}, 3, 3], got {c2w.shape} and {K.shape}.")
  if depth is not None:
    depth = np.asarray(depth, np.float32)
    require(depth.shape == (f, h, w), f"nerfstudio export: depth must be [{f}, {h}, {w}], got {depth.shape}.")
  if masks is not None:
    masks = np.asarray(masks)
    require(masks.dtype == np.bool_ and masks.shape == (f, h, w),
            f"nerfstudio export: masks must be bool [{f}, {h}, {w}], got {masks.dtype} {masks.shape}.")
  for sub in ("images",) + (("depths",) if depth is not None else ()):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
  gl = opencv_to_opengl(c2w)
  meta = {"camera_model": "OPENCV", "camera_axes": OPENGL}
  if np.all(K == K[:1]):
    meta.update(_intrinsics(K[0], w, h), k1=0.0, k2=0.0, p1=0.0, p2=0.0)
  frames = []
  for i in range(f):
    name = frame_name(i)
    save_png(os.path.join(folder, "images", f"{name}.png"), x[i])
    fr = {"file_path": f"images/{name}.png"}
    if depth is not None:
      ok = np.isfinite(depth[i]) & (depth[i] > 0) & (True if masks is None else masks[i])
      d = np.where(ok, depth[i], 0.0).astype(np.float32)
      _save_npy(os.path.join(folder, "depths", f"{name}.npy"), d)
      fr["depth_file_path"] = f"depths/{name}.npy"
    fr.update(_intrinsics(K[i], w, h), transform_matrix=gl[i].tolist())
    frames.append(fr)
  meta["frames"] = frames
  if points is not None:
    write_ply(os.path.join(folder, SEED_PLY), np.asarray(points), np.asarray(colors))
    meta["ply_file_path"] = SEED_PLY
  if prompt is not None:
    _write_text(os.path.join(folder, "captions.txt"), " ".join(str(prompt).splitlines()) + "\n")
  _write_text(os.path.join(folder, TRANSFORMS), json.dumps(meta, indent=1))
  if lists:   # without captions only the images list (stage 1 reads images only; stage 2 needs all three)
    rel = {"videos_dirs": "images", "cameras_paths": TRANSFORMS, "captions_paths": "captions.txt"}
    for kind in (LIST_KINDS if prompt is not None else ("videos_dirs",)):
      _write_text(os.path.join(folder, f"train_{kind}.txt"), rel[kind] + "\n")
  return meta


__all__ = ("TRANSFORMS", "SEED_PLY", "frame_name", "save_png", "write_nerfstudio_scene")
