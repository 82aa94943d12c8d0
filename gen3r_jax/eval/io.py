"""Readers (and reference writers) for the two folders the evaluation compares.

Sample output directory (written by ``gen3r_jax/sampling/export.py``; this docstring is the format's definition)
--------------------------------------------------------------------------------------------------------------
``rgb.mp4``       the generated video, F frames of H x W, 8-bit RGB (H.264; even sizes).
``depth.npz``     key ``depth``: float32 ``[F, H, W]`` z-depth of each pixel in the prediction's units.
``cameras.json``  ``{"frames": [{"c2w": 4x4, "K": 3x3, "width": W, "height": H, "source_index": i?}, ...]}``;
                  camera-to-world, OpenCV axes (x right, y down, z forward), intrinsics in pixels of the
                  H x W frames. ``source_index`` (optional) is the frame's index in the ground-truth scene's
                  ``transforms.json``; the evaluation uses it to pick the matching ground-truth frames.
                  ``width`` / ``height`` (per frame and, from the exporter, top level) must be the frame size of
                  ``rgb.mp4`` (else of ``depth.npz``): a one-line error otherwise, since K would not fit.
                  ``run_id`` (optional): the id every file of the set carries (:mod:`gen3r_jax.sampling.export`;
                  checked by :func:`gen3r_jax.apps.outputs.load_output_dir`, not needed here).
``points.npz``    optional; key ``points``: float32 ``[F, H, W, 3]`` world points, key ``masks``: bool ``[F, H, W]``
                  valid pixels. Without it, the evaluation unprojects ``depth.npz`` with ``cameras.json``.
``points.ply``    binary little-endian PLY: ``x y z`` float32 + ``red green blue`` uchar per vertex (for viewing;
                  the metrics need the pixel grid and do not read it).

Scene folder (the dataset layout of the official data pipeline)
---------------------------------------------------------------
``images/frameNNNNN.png``, ``captions.txt`` and ``transforms.json`` with
``{"frames": [{"file_path", "w", "h", "fl_x", "fl_y", "cx", "cy", "transform_matrix" (4x4 c2w, OpenCV)}, ...]}``.
Ground-truth depth, when the dataset has it, sits in ``depths/<image stem>.npy`` (float, scene units) or
``depths/<image stem>.png`` (16-bit, divided by ``depth_png_scale``, default 1000: millimetres to metres);
zero or non-finite depth is invalid.

Ground truth is brought to the prediction's H x W as the inference pipeline prepares its inputs (``infer.py``):
resize the short side (bilinear for images, nearest for depth), centre crop; intrinsics follow (``get_K``).
"""

from __future__ import annotations

import dataclasses
import json
import os

import imageio.v2 as iio
import numpy as np

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.ply import PLY_DTYPE, read_ply, write_ply  # noqa: F401  (this module's PLY I/O)


# ----------------------------------------------------------------------------------------------- prediction
@dataclasses.dataclass
class Prediction:
  """Contents of a sample output directory; fields are ``None`` when the file is absent."""
  path: str
  rgb: np.ndarray | None = None  # [F, H, W, 3] float32 in [0, 1]
  depth: np.ndarray | None = None  # [F, H, W] float32
  points: np.ndarray | None = None  # [F, H, W, 3] float32
  masks: np.ndarray | None = None  # [F, H, W] bool
  c2w: np.ndarray | None = None  # [F, 4, 4] float64
  K: np.ndarray | None = None  # [F, 3, 3] float64
  source_indices: list[int] | None = None

  @property
  def num_frames(self) -> int:
    for x in (self.rgb, self.depth, self.points, self.c2w):
      if x is not None:
        return int(x.shape[0])
    return 0

  @property
  def size(self) -> tuple[int, int] | None:
    for x in (self.rgb, self.depth, self.points):
      if x is not None:
        return int(x.shape[1]), int(x.shape[2])
    return None

  def point_map(self) -> tuple[np.ndarray, np.ndarray]:
    """Predicted point map ``[F, H, W, 3]`` and the pixels the prediction claims ``[F, H, W]``: ``points.npz``
    with its ``masks`` (all pixels without them), or ``depth.npz`` unprojected with ``cameras.json`` where the
    depth is not ``<= 0``. Claimed pixels may still hold NaN or infinite points (see :meth:`world_points`)."""
    if self.points is not None:
      m = self.masks if self.masks is not None else np.ones(self.points.shape[:3], bool)
      return self.points, m
    require(self.depth is not None and self.c2w is not None,
            f"{self.path}: the prediction has neither points.npz nor depth.npz + cameras.json; the point-cloud "
            "metrics need one of them (or drop 'pointcloud' from --metrics).")
    with np.errstate(invalid="ignore"):
      return unproject(self.depth, self.K, self.c2w), ~(self.depth <= 0)

  def world_points(self) -> tuple[np.ndarray, np.ndarray]:
    """Predicted point map ``[F, H, W, 3]`` and validity ``[F, H, W]``: the claimed pixels of :meth:`point_map`
    whose point is finite."""
    pts, claimed = self.point_map()
    return pts, claimed & np.isfinite(pts).all(-1)


def read_video(path: str) -> np.ndarray:
  """All frames of a video as uint8 ``[F, H, W, 3]``."""
  frames = iio.mimread(path, memtest=False)
  require(len(frames) > 0, f"{path}: the video has no frames.")
  return np.stack([np.asarray(f)[..., :3] for f in frames])


def write_video(path: str, frames: np.ndarray, fps: int = 16) -> None:
  """Write uint8 or [0, 1] float frames ``[F, H, W, 3]`` as H.264 (high quality)."""
  x = np.asarray(frames)
  if x.dtype != np.uint8:
    x = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
  iio.mimwrite(path, list(x), fps=fps, codec="libx264", quality=10, macro_block_size=1)


def read_cameras_json(path: str) -> tuple[np.ndarray, np.ndarray, list[int] | None]:
  """``cameras.json`` -> (c2w ``[F, 4, 4]``, K ``[F, 3, 3]``, source indices or ``None``)."""
  return _read_cameras(path)[:3]


def cameras_frame_size(data: dict, path: str) -> tuple[int, int] | None:
  """``(H, W)`` of the frames a ``cameras.json`` describes (its top-level and per-frame ``width`` / ``height``,
  which must agree), ``None`` when it gives none."""
  items = [data] + [fr for fr in data.get("frames") or [] if isinstance(fr, dict)]
  sizes = set()
  for it in items:
    if "width" in it or "height" in it:
      w, h = it.get("width"), it.get("height")
      require(all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)),
              f"{path}: width and height must be positive integers, got {w!r} x {h!r}.")
      sizes.add((h, w))
  require(len(sizes) <= 1, f"{path}: the frames give different sizes {sorted(sizes)} (height, width); one "
                           "cameras.json describes frames of one size.")
  return next(iter(sizes)) if sizes else None


def _read_cameras(path: str):
  with open(path) as f:
    data = json.load(f)
  frames = data.get("frames") if isinstance(data, dict) else None
  require(isinstance(frames, list) and frames, f"{path}: expected {{\"frames\": [...]}} with at least one frame.")
  try:
    c2w = np.asarray([fr["c2w"] for fr in frames], np.float64)
    K = np.asarray([fr["K"] for fr in frames], np.float64)
  except KeyError as e:
    raise Gen3RInputError(f"{path}: every frame needs 'c2w' (4x4) and 'K' (3x3); missing {e}.") from None
  require(c2w.shape[1:] == (4, 4) and K.shape[1:] == (3, 3),
          f"{path}: c2w must be 4x4 and K 3x3, got {c2w.shape[1:]} and {K.shape[1:]}.")
  src = [fr.get("source_index") for fr in frames]
  return c2w, K, ([int(i) for i in src] if all(i is not None for i in src) else None), cameras_frame_size(data, path)


def read_prediction(path: str) -> Prediction:
  """Read a sample output directory (module docstring); checks that the files agree on F, H, W."""
  require(os.path.isdir(path), f"prediction directory not found: {path}")
  pred = Prediction(path)
  f = lambda name: os.path.join(path, name)  # noqa: E731
  if os.path.exists(f("rgb.mp4")):
    pred.rgb = read_video(f("rgb.mp4")).astype(np.float32) / 255.0
  if os.path.exists(f("depth.npz")):
    with np.load(f("depth.npz")) as z:
      require("depth" in z, f"{f('depth.npz')}: missing key 'depth' (has {sorted(z.keys())}).")
      pred.depth = np.asarray(z["depth"], np.float32)
    require(pred.depth.ndim == 3, f"{f('depth.npz')}: depth must be [F, H, W], got {pred.depth.shape}.")
  if os.path.exists(f("points.npz")):
    with np.load(f("points.npz")) as z:
      require("points" in z, f"{f('points.npz')}: missing key 'points' (has {sorted(z.keys())}).")
      pred.points = np.asarray(z["points"], np.float32)
      pred.masks = np.asarray(z["masks"], bool) if "masks" in z else None
    require(pred.points.ndim == 4 and pred.points.shape[-1] == 3,
            f"{f('points.npz')}: points must be [F, H, W, 3], got {pred.points.shape}.")
  cam_size = None
  if os.path.exists(f("cameras.json")):
    pred.c2w, pred.K, pred.source_indices, cam_size = _read_cameras(f("cameras.json"))
  require(any(x is not None for x in (pred.rgb, pred.depth, pred.points, pred.c2w)),
          f"{path}: no rgb.mp4, depth.npz, points.npz or cameras.json found; is this a sample output directory?")
  shapes = {k: tuple(v.shape[:3]) for k, v in (("rgb.mp4", pred.rgb), ("depth.npz", pred.depth),
                                                ("points.npz", pred.points), ("points.npz masks", pred.masks))
            if v is not None}
  if cam_size is not None and shapes:
    name, shape = next(iter(shapes.items()))      # the video when there is one
    require(tuple(shape[1:3]) == cam_size,
            f"{path}: cameras.json describes {cam_size[1]}x{cam_size[0]} frames (K is in their pixels) but {name} "
            f"is {shape[2]}x{shape[1]}; put back the {name} the run wrote (a re-encoded video must keep the frame "
            "size) or re-run the sampler / reconstruction.")
  counts = {k: s[0] for k, s in shapes.items()}
  if pred.c2w is not None:
    counts["cameras.json"] = pred.c2w.shape[0]
  if len(set(shapes.values())) > 1 or len(set(counts.values())) > 1:
    raise Gen3RInputError(f"{path}: the files disagree on frame count or size: "
                          + ", ".join(f"{k} {shapes.get(k, (counts[k],))}" for k in counts))
  return pred


def write_prediction(path: str, *, rgb=None, depth=None, c2w=None, K=None, points=None, masks=None,
                     source_indices=None, fps: int = 16) -> None:
  """Write a sample output directory in the format above (reference writer for the export and for tests)."""
  os.makedirs(path, exist_ok=True)
  if rgb is not None:
    write_video(os.path.join(path, "rgb.mp4"), rgb, fps)
  if depth is not None:
    np.savez(os.path.join(path, "depth.npz"), depth=np.asarray(depth, np.float32))
  if points is not None:
    extra = {} if masks is None else {"masks": np.asarray(masks, bool)}
    np.savez(os.path.join(path, "points.npz"), points=np.asarray(points, np.float32), **extra)
  if c2w is not None:
    h, w = next(x.shape[1:3] for x in (rgb, depth, points) if x is not None)
    frames = []
    for i in range(len(c2w)):
      fr = {"c2w": np.asarray(c2w[i]).tolist(), "K": np.asarray(K[i]).tolist(), "width": int(w), "height": int(h)}
      if source_indices is not None:
        fr["source_index"] = int(source_indices[i])
      frames.append(fr)
    with open(os.path.join(path, "cameras.json"), "w") as f:
      json.dump({"frames": frames}, f)


# ------------------------------------------------------------------------------------------------- geometry
def unproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
  """World points ``[F, H, W, 3]`` from depth ``[F, H, W]``, K ``[F, 3, 3]``, c2w ``[F, 4, 4]``.

  Integer pixel coordinates (no +0.5), as VGGT's ``depth_to_world_coords_points``.
  """
  require(K is not None and c2w is not None, "unproject: cameras (K and c2w) are required.")
  d = np.asarray(depth, np.float64)
  f, h, w = d.shape
  require(K.shape == (f, 3, 3) and c2w.shape == (f, 4, 4),
          f"unproject: {f} depth maps need K [{f}, 3, 3] and c2w [{f}, 4, 4], got {K.shape} and {c2w.shape}.")
  v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
  fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
  cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
  cam = np.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], -1)  # [F, H, W, 3]
  world = np.einsum("fij,fhwj->fhwi", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]
  return world.astype(np.float32)


def resize_crop_params(h: int, w: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
  """Short-side resize then centre crop: (resized_h, resized_w, top, left)."""
  ratio = max(out_h / h, out_w / w)
  rh, rw = max(out_h, round(h * ratio)), max(out_w, round(w * ratio))
  return rh, rw, (rh - out_h) // 2, (rw - out_w) // 2
