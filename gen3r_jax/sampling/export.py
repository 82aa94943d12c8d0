"""Write one generated sample to disk: the sample output directory that evaluation reads.

The format is defined in :mod:`gen3r_jax.eval.io` (its reader ``read_prediction`` reads this directory back);
:func:`export_all` writes, from host arrays (numpy or anything ``np.asarray`` takes; channels-last):

==============  ==========================================================================================
``rgb.mp4``     the video, H.264 / yuv420p (plays in common players), ``crf`` 17, ``fps`` 16, F frames H x W.
``depth.npz``   key ``depth``: float32 ``[F, H, W]`` z-depth, raw (masks live in ``points.npz``).
``depth.mp4``   colourised depth for viewing (Turbo, inverse-depth percentiles; see ``visualize.py``).
``points.npz``  key ``points``: float32 ``[F, H, W, 3]`` world points; key ``masks``: bool ``[F, H, W]``.
``points.ply``  binary little-endian PLY, ``x y z`` float32 + ``red green blue`` uchar per vertex: the masked,
                finite points of every frame coloured by ``rgb``, optionally subsampled to ``max_points``
                (uniformly without replacement, ``np.random.default_rng(seed)``; kept in pixel order).
``cameras.json`` see :func:`write_cameras`: ``frames`` (c2w, K, width, height[, source_index]) for the
                evaluation, plus ``extrinsics`` / ``intrinsics`` (world-to-camera, the keys of the official
                ``infer.py`` cameras file, so the file can be fed back as ``--cameras``), prompt, metadata and
                the run id (every file carries it; see below).
``preview.png`` contact sheet of up to 6 evenly spaced frames: rgb row, depth row, point-cloud top-view row.
``prompt.txt``  the text prompt (only when given).
==============  ==========================================================================================

Conventions: camera-to-world ``c2w [F, 4, 4]`` (``[F, 3, 4]`` accepted), OpenCV camera axes (x right, y down,
z forward), intrinsics ``K [F, 3, 3]`` in pixels of the H x W frames. rgb is float in [0, 1] or uint8. Videos
need even H and W (yuv420p halves the chroma planes): :func:`write_video` errors on odd sizes unless
``pad_odd=True`` (edge padding); :func:`export_all` always errors, since a padded rgb.mp4 would no longer match
``depth.npz``. Every check runs before the first file is written. Bad arrays raise ``Gen3RInputError``; a
missing ffmpeg raises ``RuntimeError`` saying how to install one.

Nothing half-written looks whole. Every writer writes a hidden temporary file beside its target
(``.<name>.partial-<id>.<ext>``), flushes it to disk and renames it over the target only when complete, so a
killed or failed write leaves the previous file (or none), never a truncated one. :func:`export_all` writes the
whole set into a hidden staging folder in ``out_dir`` (``.gen3r-partial-<id>/``) and moves the files into place
only when all of them are written; a failure before that leaves the previous outputs untouched (a kill leaves
the staging folder, which :func:`prepare_output_dir` reports). Output files of a previous run that the new one
does not write (:data:`OUTPUT_NAMES`, e.g. a ``prompt.txt``) are then removed, so the folder holds one run.

The move is one rename per file, so it is made safe in two ways. Every file of a set carries the same random
**run id** (``run_id`` in ``cameras.json`` and in every ``.npz``, the ``comment`` tag ``gen3r_jax run <id>`` of
both videos, a header comment of ``points.ply``, a text chunk of ``preview.png``; :func:`read_run_id`), and
:func:`gen3r_jax.apps.outputs.load_output_dir` refuses a directory whose files carry different ids
(:func:`mixed_runs`). And each file of the previous run is moved aside into the staging folder's ``previous/``
before the new one takes its place: a failure while moving puts them all back; a kill leaves them there
(:func:`prepare_output_dir` names them), so the previous run can still be recovered by hand.
:func:`prepare_output_dir` creates the folder and proves it writable before any compute (the sampler and
``launch/reconstruct.py`` call it after their input checks, before loading a model).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Callable
import uuid

from PIL import Image, PngImagePlugin
import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.errors import Gen3RInputError, check_array, require
from gen3r_jax.ply import PLY_DTYPE, ply_bytes, to_uint8  # noqa: F401  (PLY_DTYPE: the vertex layout of points.ply)
from gen3r_jax.sampling import visualize as vis


CONVENTION = ("c2w: camera-to-world 4x4; extrinsics: world-to-camera 4x4 (inverse of c2w); OpenCV camera axes "
              "(x right, y down, z forward); K: 3x3 pinhole intrinsics in pixels of width x height frames")
# every file a sample or reconstruction output directory may hold (export_all, run.py, reconstruct.py)
OUTPUT_NAMES = ("rgb.mp4", "depth.npz", "depth.mp4", "points.npz", "points.ply", "cameras.json", "preview.png",
                "prompt.txt", "latents.npz", "vggt_predictions.npz")
STAGING_PREFIX = ".gen3r-partial-"
PREVIOUS = "previous"           # in a staging folder: the files of the previous run displaced while moving in
RUN_KEY = "run_id"              # the run id's key in cameras.json and in every .npz of the set
RUN_TAG = "gen3r_jax run"       # ... and its tag in rgb.mp4 / depth.mp4 (comment), points.ply (comment), preview.png
_RUN_RE = re.compile(rb"gen3r_jax run ([0-9a-f]{32})")


# ------------------------------------------------------------------------------------------ safe writing
def save_npz(path: str, **arrays) -> str:
  """``np.savez`` written atomically (:func:`atomic_path`). Returns ``path``."""
  require(path.endswith(".npz"), f"{path}: an .npz file name is expected.")
  with atomic_path(path) as tmp:
    np.savez(tmp, **arrays)
  return path


def _write_bytes(path: str, data: bytes) -> str:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
  return path


def output_bytes(num_frames: int, height: int, width: int, max_points: int | None = None) -> int:
  """A generous estimate of an output directory's size: depth 4, points + masks 13, PLY 15 bytes per pixel
  (at most ``max_points`` vertices), two videos and the preview ~3 bytes per pixel, plus 16 MiB."""
  px = int(num_frames) * int(height) * int(width)
  ply = 15 * (px if not max_points else min(px, int(max_points)))
  return 20 * px + ply + 16 * 2**20


def prepare_output_dir(out_dir: str, *, expected_bytes: int | None = None, overwrite: bool = True,
                       warn: Callable[[str], None] | None = None) -> str:
  """Create ``out_dir`` and prove it writable before any compute; returns it.

  Errors (:class:`Gen3RInputError`, one line): no path; the path or one of its parents is a file; the folder
  cannot be created or a probe file cannot be written and removed in it (permissions, read-only or full file
  system); with ``overwrite=False``, outputs of a previous run already there. Warnings (``warn``): outputs of a
  previous run that this run will replace when it finishes; less free space than ``expected_bytes``; a staging
  folder left by an interrupted export.
  """
  require(isinstance(out_dir, str) and out_dir.strip() != "", "no output directory given: pass one (sampling: "
                                                              "--config.out=<dir>, reconstruction: --out <dir>).")
  if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
    raise Gen3RInputError(f"output directory {out_dir!r} is an existing file, not a directory; choose another "
                          "output path.")
  parent = os.path.dirname(os.path.abspath(out_dir))
  while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise Gen3RInputError(f"cannot create output directory {out_dir!r}: {parent!r} is a file, not a directory; "
                          "choose another output path.")
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise Gen3RInputError(f"cannot create output directory {out_dir!r} ({e.strerror or e}); choose another output "
                          "path.") from None
  try:
    fd, probe = tempfile.mkstemp(prefix=".gen3r-write-probe-", dir=out_dir)
    try:
      with os.fdopen(fd, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
    finally:
      os.remove(probe)
  except OSError as e:
    raise Gen3RInputError(f"output directory {out_dir!r} is not writable ({e.strerror or e}); fix its permissions "
                          "or choose another output path.") from None
  previous = [n for n in OUTPUT_NAMES if os.path.lexists(os.path.join(out_dir, n))]
  if previous:
    require(overwrite, f"output directory {out_dir!r} already holds outputs of a previous run ({', '.join(previous)})"
                       "; choose another output path or allow replacing them (--config.overwrite=true).")
    if warn is not None:
      warn(f"output directory {out_dir!r} already holds outputs of a previous run ({', '.join(previous)}); they "
           "are replaced when this run has written all of its files (choose another output path to keep them).")
  for stage in interrupted_stages(out_dir):
    if warn is None:
      break
    name, displaced = os.path.basename(stage), _displaced(stage)
    if displaced and _looks_mixed(out_dir):
      warn(f"output directory {out_dir!r} holds {name}, left by a run killed while moving its files in: the "
           f"outputs next to it mix two runs, and {name}/{PREVIOUS}/ holds the previous run's "
           f"{', '.join(displaced)}; move those back to recover that run, or delete {name} once this run is done.")
    elif displaced:
      warn(f"output directory {out_dir!r} holds {name}, left by a run killed just after moving its files in (the "
           f"outputs next to it are complete); {name}/{PREVIOUS}/ holds the files it replaced ("
           f"{', '.join(displaced)}): delete {name} when you no longer need them.")
    else:
      warn(f"output directory {out_dir!r} holds {name}, left by an interrupted export; delete it (the outputs "
           "next to it are those of the last complete run).")
  if expected_bytes:
    free = shutil.disk_usage(out_dir).free
    if free < expected_bytes and warn is not None:
      warn(f"only {free / 2**20:.0f} MiB free for output directory {out_dir!r}, and the outputs need up to about "
           f"{expected_bytes / 2**20:.0f} MiB; free some space or choose another output path.")
  return out_dir


# ------------------------------------------------------------------------------------------------- checks
def _video(frames, name: str) -> np.ndarray:
  x = np.asarray(frames)
  check_array(x, name, ndim=4, layout="[F, H, W, 3]", dims={3: 3})
  require(x.shape[0] > 0 and x.shape[1] > 0 and x.shape[2] > 0, f"{name}: empty video, shape {x.shape}.")
  return to_uint8(x, name)


def _depth(depth, name: str = "depth") -> np.ndarray:
  d = np.asarray(depth)
  if d.ndim == 4 and d.shape[-1] == 1:  # VGGT's [F, H, W, 1]
    d = d[..., 0]
  check_array(d, name, ndim=3, layout="[F, H, W]", floating=True)
  return d.astype(np.float32)


def _masks(masks, shape: tuple[int, ...], name: str = "masks") -> np.ndarray:
  if masks is None:
    return np.ones(shape, bool)
  m = np.asarray(masks)
  require(m.dtype == np.bool_, f"{name}: expected a bool array, got dtype {m.dtype} (e.g. conf > threshold).")
  require(m.shape == tuple(shape), f"{name}: expected shape {tuple(shape)}, got {m.shape}.")
  return m


def _cameras(c2w, K) -> tuple[np.ndarray, np.ndarray]:
  c = np.asarray(c2w, np.float64)
  k = np.asarray(K, np.float64)
  check_array(c, "c2w", ndim=3, layout="[F, 4, 4]")
  require(c.shape[1:] in ((4, 4), (3, 4)), f"c2w: expected [F, 4, 4] or [F, 3, 4], got {c.shape}.")
  check_array(k, "K", ndim=3, layout="[F, 3, 3]", dims={1: 3, 2: 3})
  require(c.shape[0] == k.shape[0], f"c2w has {c.shape[0]} cameras but K has {k.shape[0]}; give one per frame.")
  require(bool(np.isfinite(c).all() and np.isfinite(k).all()), "c2w / K: contain NaN or inf.")
  if c.shape[1] == 3:
    c = np.concatenate([c, np.tile([[[0.0, 0.0, 0.0, 1.0]]], (c.shape[0], 1, 1))], 1)
  require(np.allclose(c[:, 3], [0, 0, 0, 1], atol=1e-6), "c2w: the bottom row of every 4x4 must be [0, 0, 0, 1].")
  bad = np.where(np.abs(np.linalg.det(c[:, :3, :3])) < 1e-12)[0]
  require(bad.size == 0, f"c2w: camera {bad[:1].tolist()} has a singular rotation block.")
  bad = np.where((k[:, 0, 0] <= 0) | (k[:, 1, 1] <= 0))[0]
  require(bad.size == 0, f"K: camera {bad[:1].tolist()} has a non-positive focal length (fx, fy must be > 0).")
  return c, k


def _same_frames(grids: dict[str, np.ndarray], cameras: dict[str, np.ndarray] | None = None) -> tuple[int, int, int]:
  """All ``grids`` share ``[F, H, W]`` and all ``cameras`` have F entries; returns ``(F, H, W)``."""
  counts = {k: v.shape[0] for k, v in {**grids, **(cameras or {})}.items()}
  if len(set(counts.values())) > 1:
    raise Gen3RInputError("mismatched frame counts: " + ", ".join(f"{k} {n}" for k, n in counts.items())
                          + "; every array needs one entry per frame.")
  shapes = {k: tuple(v.shape[:3]) for k, v in grids.items()}
  if len(set(shapes.values())) > 1:
    raise Gen3RInputError("mismatched frame sizes [F, H, W]: " + ", ".join(f"{k} {s}" for k, s in shapes.items()))
  return next(iter(shapes.values()))


# ------------------------------------------------------------------------------------------------- ffmpeg
def ffmpeg_exe() -> str:
  """Path of a working ffmpeg (imageio-ffmpeg's, ``IMAGEIO_FFMPEG_EXE``, or the system's), else RuntimeError."""
  try:
    import imageio_ffmpeg  # heavy optional dependency: imported on first use
    exe = imageio_ffmpeg.get_ffmpeg_exe()
  except (ImportError, RuntimeError) as e:
    raise RuntimeError(f"no ffmpeg available to write .mp4 files ({e}); `pip install imageio-ffmpeg` (it ships a "
                       "binary) or point IMAGEIO_FFMPEG_EXE at an ffmpeg with libx264.") from None
  found = exe if os.path.isfile(exe) else shutil.which(exe)
  if not found:
    raise RuntimeError(f"no ffmpeg available to write .mp4 files: {exe!r} (from IMAGEIO_FFMPEG_EXE or "
                       "imageio-ffmpeg) does not exist; install imageio-ffmpeg or fix IMAGEIO_FFMPEG_EXE.")
  return found


def _check_fps(fps) -> None:
  require(isinstance(fps, (int, float, np.integer, np.floating)) and not isinstance(fps, bool) and fps > 0,
          f"fps must be a positive number, got {fps!r}.")


def _check_max_points(max_points) -> None:
  ok = isinstance(max_points, (int, np.integer)) and not isinstance(max_points, bool) and max_points > 0
  require(max_points is None or ok, f"max_points must be a positive integer or None, got {max_points!r}.")


def _odd_message(path: str, h: int, w: int) -> str:
  return (f"{path}: H.264 yuv420p needs an even frame size, got {h} x {w}; crop the frames or pass "
          "pad_odd=True to repeat the last row / column.")


def write_video(path: str, frames, *, fps: float = 16, crf: int = 17, pad_odd: bool = False,
                run_id: str | None = None) -> str:
  """H.264 / yuv420p mp4 of ``frames [F, H, W, 3]`` (uint8 or float in [0, 1]). Returns ``path``.

  yuv420p needs even H and W: odd sizes raise unless ``pad_odd`` (then the last row / column is repeated).
  ``crf`` is x264's constant rate factor (0 lossless .. 51 worst; 17 is visually lossless). ``run_id``: written
  as the container's ``comment`` tag (:func:`read_run_id`).
  """
  x = _video(frames, "frames")
  _check_fps(fps)
  require(isinstance(crf, (int, np.integer)) and 0 <= crf <= 51, f"crf must be an integer in [0, 51], got {crf!r}.")
  _, h, w, _ = x.shape
  if h % 2 or w % 2:
    require(pad_odd, _odd_message(path, h, w))
    x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
  exe = ffmpeg_exe()
  import imageio_ffmpeg  # heavy optional dependency: imported on first use
  with atomic_path(path) as tmp:
    gen = imageio_ffmpeg.write_frames(
        tmp, (int(w), int(h)), fps=float(fps), codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        quality=None, macro_block_size=2, ffmpeg_log_level="error",
        output_params=["-crf", str(int(crf)), "-preset", "medium", "-movflags", "+faststart"]
        + (["-metadata", f"comment={RUN_TAG} {run_id}"] if run_id else []))
    try:
      gen.send(None)
      for frame in x:
        gen.send(np.ascontiguousarray(frame))
      gen.close()
    except (OSError, RuntimeError) as e:
      try:
        gen.close()  # stops the ffmpeg process
      except Exception:  # noqa: BLE001 - already failing; report the first error
        pass
      raise RuntimeError(f"ffmpeg ({exe}) failed to write {path} with libx264: {e}") from None
  return path


# -------------------------------------------------------------------------------------------- depth, points
def write_depth(path: str, depth, *, video_path: str | None = None, masks=None, fps: float = 16,
                run_id: str | None = None) -> list[str]:
  """``depth.npz`` (key ``depth``, float32 ``[F, H, W]``; ``[F, H, W, 1]`` accepted; with ``run_id`` the key
  ``run_id`` too) and, with ``video_path``, its colourised video (``masks`` blacks out pixels). Returns the paths
  written."""
  d = _depth(depth)
  m = None if masks is None else _masks(masks, d.shape)
  if video_path is not None:
    require(d.shape[1] % 2 == 0 and d.shape[2] % 2 == 0, _odd_message(video_path, *d.shape[1:]))
    x = vis.colorize_depth(d, m)
  save_npz(path, depth=d, **_run_key(run_id))
  if video_path is None:
    return [path]
  return [path, write_video(video_path, x, fps=fps, run_id=run_id)]


def write_points(path: str, points, masks=None, *, run_id: str | None = None) -> str:
  """``points.npz``: ``points`` float32 ``[F, H, W, 3]`` and ``masks`` bool ``[F, H, W]`` (all True if None); with
  ``run_id`` the key ``run_id`` too."""
  p = np.asarray(points)
  check_array(p, "points", ndim=4, layout="[F, H, W, 3]", floating=True, dims={3: 3})
  save_npz(path, points=p.astype(np.float32), masks=_masks(masks, p.shape[:3]), **_run_key(run_id))
  return path


def select_points(points, colors=None, *, masks=None, max_points: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Masked, finite points ``[N, 3]`` float32 and uint8 colours ``[N, 3]`` from ``[..., 3]`` maps.

  With ``max_points`` (< N) a uniform subset without replacement drawn by ``np.random.default_rng(seed)``,
  kept in the original order: the same inputs and seed give the same file.
  """
  p = np.asarray(points)
  require(p.ndim >= 2 and p.shape[-1] == 3, f"points: expected [..., 3], got shape {p.shape}.")
  check_array(p, "points", floating=True)
  lead = p.shape[:-1]
  col = np.full(lead + (3,), 255, np.uint8) if colors is None else to_uint8(colors, "colors")
  require(col.shape[:-1] == lead, f"colors: expected shape {lead + (3,)} to match points, got {col.shape}.")
  idx = select_indices(_masks(masks, lead) & np.isfinite(p).all(-1), max_points=max_points, seed=seed)
  return p.reshape(-1, 3)[idx].astype(np.float32), col.reshape(-1, 3)[idx]


def select_indices(valid, *, max_points: int | None = None, seed: int = 0) -> np.ndarray:
  """Flat indices of the True entries of ``valid``, in order; with ``max_points`` (< their count) a uniform
  subset without replacement drawn by ``np.random.default_rng(seed)``, kept in order (:func:`select_points`'s
  rule; the exports use it to know which pixel each point came from)."""
  _check_max_points(max_points)
  idx = np.flatnonzero(np.asarray(valid))
  if max_points is not None and idx.size > max_points:
    idx = idx[np.sort(np.random.default_rng(seed).choice(idx.size, int(max_points), replace=False))]
  return idx


def write_ply(path: str, points, colors=None, *, masks=None, max_points: int | None = None, seed: int = 0,
              run_id: str | None = None) -> int:
  """Binary little-endian coloured PLY of the points kept by :func:`select_points` (``run_id``: a header
  ``comment``). Returns the vertex count."""
  p, col = select_points(points, colors, masks=masks, max_points=max_points, seed=seed)
  _write_bytes(path, ply_bytes(p, col, comments=[f"{RUN_TAG} {run_id}"] if run_id else ()))
  return int(p.shape[0])


# ------------------------------------------------------------------------------------------------ cameras
def _to_json(data) -> str:
  try:
    return json.dumps(data, indent=1, default=_json_default)
  except (TypeError, ValueError) as e:
    raise Gen3RInputError(f"meta: not JSON serialisable ({e}); use dicts, lists, str and numbers.") from None


def _json_default(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def write_cameras(path: str, c2w, K, *, width: int, height: int, source_indices=None, prompt: str | None = None,
                  meta: dict | None = None, run_id: str | None = None) -> str:
  """``cameras.json``; one entry per frame, OpenCV convention (``CONVENTION``)::

      {"convention": "...", "width": W, "height": H,
       "frames": [{"c2w": 4x4, "K": 3x3, "width": W, "height": H, "source_index": i?}, ...],
       "extrinsics": [w2c 4x4, ...], "intrinsics": [K, ...], "prompt": "..."?, "meta": {...}?, "run_id": "..."?}

  ``frames`` is what the evaluation reads; ``extrinsics`` / ``intrinsics`` repeat the cameras in the layout of
  the official ``infer.py`` (world-to-camera), so ``sampling.cameras.load_cameras_json`` reads the file too.
  ``meta`` must be JSON serialisable (numpy arrays and scalars are converted).
  """
  c, k = _cameras(c2w, K)
  require(all(isinstance(v, (int, np.integer)) and v > 0 for v in (width, height)),
          f"width and height must be positive integers, got {width!r} x {height!r}.")
  if source_indices is not None:
    src = [int(i) for i in np.asarray(source_indices).reshape(-1)]
    require(len(src) == c.shape[0], f"source_indices: {len(src)} given for {c.shape[0]} cameras.")
  frames = []
  for i in range(c.shape[0]):
    fr = {"c2w": c[i].tolist(), "K": k[i].tolist(), "width": int(width), "height": int(height)}
    if source_indices is not None:
      fr["source_index"] = src[i]
    frames.append(fr)
  data = {"convention": CONVENTION, "width": int(width), "height": int(height), "frames": frames,
          "extrinsics": np.linalg.inv(c).tolist(), "intrinsics": k.tolist()}
  if prompt is not None:
    data["prompt"] = str(prompt)
  if meta is not None:
    data["meta"] = meta
  if run_id:
    data[RUN_KEY] = str(run_id)
  _write_bytes(path, _to_json(data).encode("utf-8"))
  return path


# ------------------------------------------------------------------------------------------------ preview
def preview_indices(num_frames: int, count: int = 6) -> np.ndarray:
  """Up to ``count`` evenly spaced frame indices, first and last included."""
  return np.unique(np.round(np.linspace(0, num_frames - 1, max(1, min(count, num_frames)))).astype(int))


def preview_tile_size(height: int, width: int, tile_width: int = 256) -> tuple[int, int]:
  """Tile ``(h, w)``: the frame scaled down (never up) to at most ``tile_width`` wide, aspect kept."""
  s = min(1.0, tile_width / width)
  return max(1, round(height * s)), max(1, round(width * s))


def write_preview(path: str, rgb, depth, *, masks=None, points=None, num_frames: int = 6, tile_width: int = 256,
                  gap: int = 4, run_id: str | None = None) -> str:
  """PNG contact sheet: rgb row, colourised depth row and (with ``points``) a top-view row, one column per
  frame of :func:`preview_indices`. Size ``R * h + (R + 1) * gap`` by ``C * w + (C + 1) * gap`` with the tile
  ``(h, w)`` of :func:`preview_tile_size`. Returns ``path``."""
  x = _video(rgb, "rgb")
  d = _depth(depth)
  arrays = {"rgb": x, "depth": d}
  if points is not None:
    arrays["points"] = np.asarray(points)
    check_array(arrays["points"], "points", ndim=4, layout="[F, H, W, 3]", floating=True, dims={3: 3})
  f, h, w = _same_frames(arrays)
  m = _masks(masks, (f, h, w))
  idx = preview_indices(f, num_frames)
  th, tw = preview_tile_size(h, w, tile_width)
  depth_rgb = vis.colorize_depth(d[idx], m[idx], bounds=vis.depth_range(d, m))  # colours of the whole clip
  rows = [[vis.resize_tile(x[i], (th, tw)) for i in idx], [vis.resize_tile(c, (th, tw)) for c in depth_rgb]]
  if points is not None:
    p = arrays["points"]
    ok = m & np.isfinite(p).all(-1)
    bounds = vis.top_view_bounds(p[idx][ok[idx]])
    rows.append([vis.top_view(p[i][ok[i]], x[i][ok[i]], (th, tw), bounds) for i in idx])
  info = PngImagePlugin.PngInfo()
  if run_id:
    info.add_text(RUN_TAG, str(run_id))
  with atomic_path(path) as tmp:
    Image.fromarray(vis.contact_sheet(rows, gap=gap)).save(tmp, format="PNG", pnginfo=info)
  return path


# ------------------------------------------------------------------------------------------------ run ids
def new_run_id() -> str:
  """A fresh run id: 32 random hex digits."""
  return uuid.uuid4().hex


def _run_key(run_id: str | None) -> dict:
  return {RUN_KEY: np.array(str(run_id))} if run_id else {}


def read_run_id(path: str) -> str | None:
  """The run id a file of the output set carries (module docstring), ``None`` when it carries none (a file
  written before run ids, or one re-encoded / re-saved by another tool). ``.npz``: key ``run_id``; ``.json``: key
  ``run_id``; ``.mp4``: the ``comment`` tag ``gen3r_jax run <id>``; ``.ply``: the header comment of the same
  text; ``.png``: the text chunk ``gen3r_jax run``. Unreadable files raise what their reader raises."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    with np.load(path) as z:
      return str(z[RUN_KEY]) if RUN_KEY in z.files else None
  if ext == ".json":
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    rid = data.get(RUN_KEY) if isinstance(data, dict) else None
    return str(rid) if rid else None
  if ext in (".mp4", ".ply"):
    with open(path, "rb") as f:
      data = f.read() if ext == ".mp4" else f.read(1 << 16)          # a PLY id sits in its (short) header
    if ext == ".ply":
      data = data[:data.find(b"end_header")]
    m = _RUN_RE.search(data)
    return m[1].decode("ascii") if m else None
  if ext == ".png":
    with Image.open(path) as im:
      rid = im.info.get(RUN_TAG)
    return str(rid) if rid else None
  return None


# files that carry the id whenever the writer did: one without it in a set whose others have one is from another
# run (the videos, points.ply and preview.png may have been re-encoded or re-saved by another tool, losing it)
TAGGED_ALWAYS = (".npz", ".json")


def mixed_runs(out_dir: str) -> dict[str, str | None] | None:
  """``{file name: run id}`` of the output files in ``out_dir`` when they come from more than one run (a run
  killed while moving its files into place, or files copied in from another run); ``None`` when they agree.
  Directories written before run ids (no file carries one) agree."""
  names = [n for n in OUTPUT_NAMES if n != "prompt.txt" and os.path.isfile(os.path.join(out_dir, n))]
  ids = {n: read_run_id(os.path.join(out_dir, n)) for n in names}
  present = {i for i in ids.values() if i is not None}
  untagged = [n for n, i in ids.items() if i is None and n.endswith(TAGGED_ALWAYS)]
  if len(present) > 1 or (present and untagged):
    return ids
  return None


def _looks_mixed(out_dir: str) -> bool:
  """:func:`mixed_runs` for a warning: a file that cannot be read counts as mixed."""
  try:
    return mixed_runs(out_dir) is not None
  except Exception:  # noqa: BLE001 - a damaged file: the loaders report it; here it only picks the wording
    return True


def interrupted_stages(out_dir: str) -> list[str]:
  """The staging folders in ``out_dir`` left by an :func:`export_all` that did not finish (killed), oldest
  first; those holding a ``previous/`` folder were killed while moving files in."""
  if not os.path.isdir(out_dir):
    return []
  stages = [os.path.join(out_dir, n) for n in os.listdir(out_dir) if n.startswith(STAGING_PREFIX)]
  return sorted(stages, key=lambda p: os.path.getmtime(p) if os.path.exists(p) else 0.0)


def _displaced(stage: str) -> list[str]:
  prev = os.path.join(stage, PREVIOUS)
  return sorted(os.listdir(prev)) if os.path.isdir(prev) else []


# ------------------------------------------------------------------------------------------------ all
def export_all(out_dir: str, *, rgb, depth, points, masks, c2w, K, fps: float = 16, max_points: int | None = None,
               seed: int = 0, prompt: str | None = None, meta: dict | None = None, source_indices=None,
               preview_frames: int = 6, extra_npz: dict[str, dict] | None = None) -> dict[str, str]:
  """Write every file of the sample output directory (module docstring); returns ``{file name: path}``.

  ``rgb [F, H, W, 3]``, ``depth [F, H, W]``, ``points [F, H, W, 3]``, ``masks [F, H, W]`` bool (None: all
  valid), ``c2w [F, 4, 4]``, ``K [F, 3, 3]``; ``extra_npz``: more ``{file name: {key: array}}`` written with
  the set (e.g. ``latents.npz``). Everything is checked (and ffmpeg found) before writing; the files are written
  into a staging folder and moved into ``out_dir`` together once all are complete (module docstring).
  """
  x = _video(rgb, "rgb")
  d = _depth(depth)
  p = np.asarray(points)
  check_array(p, "points", ndim=4, layout="[F, H, W, 3]", floating=True, dims={3: 3})
  p = p.astype(np.float32)
  c, k = _cameras(c2w, K)
  f, h, w = _same_frames({"rgb": x, "depth": d, "points": p}, {"c2w": c, "K": k})
  m = _masks(masks, (f, h, w))
  require(h % 2 == 0 and w % 2 == 0, f"frames are {h} x {w}: rgb.mp4 (H.264 yuv420p) needs an even height and "
                                     "width; crop rgb, depth, points and masks (and shift K) first.")
  if source_indices is not None:
    require(len(np.asarray(source_indices).reshape(-1)) == f,
            f"source_indices: {len(np.asarray(source_indices).reshape(-1))} given for {f} frames.")
  _check_fps(fps)
  _check_max_points(max_points)
  _to_json({"prompt": prompt, "meta": meta})
  extra_npz = dict(extra_npz or {})
  for name, arrays in extra_npz.items():
    require(isinstance(name, str) and name.endswith(".npz") and os.path.basename(name) == name
            and isinstance(arrays, dict), f"extra_npz: {name!r} must be a plain .npz file name mapped to a dict "
                                          "of arrays.")
  ffmpeg_exe()
  run_id = new_run_id()
  for name, arrays in extra_npz.items():
    require(RUN_KEY not in arrays, f"extra_npz: {name} may not hold a key {RUN_KEY!r} (the run id is added).")
  os.makedirs(out_dir, exist_ok=True)
  stage = os.path.join(out_dir, f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
  os.makedirs(stage)
  moved = False
  try:
    st = {name: os.path.join(stage, name) for name in
          ("rgb.mp4", "depth.npz", "depth.mp4", "points.npz", "points.ply", "cameras.json", "preview.png")}
    write_video(st["rgb.mp4"], x, fps=fps, run_id=run_id)
    write_depth(st["depth.npz"], d, video_path=st["depth.mp4"], masks=m, fps=fps, run_id=run_id)
    write_points(st["points.npz"], p, m, run_id=run_id)
    write_ply(st["points.ply"], p, x, masks=m, max_points=max_points, seed=seed, run_id=run_id)
    write_cameras(st["cameras.json"], c, k, width=w, height=h, source_indices=source_indices, prompt=prompt,
                  meta=meta, run_id=run_id)
    write_preview(st["preview.png"], x, d, masks=m, points=p, num_frames=preview_frames, run_id=run_id)
    if prompt is not None:
      st["prompt.txt"] = _write_bytes(os.path.join(stage, "prompt.txt"), (str(prompt) + "\n").encode("utf-8"))
    for name, arrays in extra_npz.items():
      st[name] = save_npz(os.path.join(stage, name), **arrays, **_run_key(run_id))
    _move_in(stage, st, out_dir)
    moved = True
  finally:
    if moved or not _displaced(stage):   # a failed move that could not put the previous run back keeps it here
      shutil.rmtree(stage, ignore_errors=True)
  return {name: os.path.join(out_dir, name) for name in st}


def _move_in(stage: str, staged: dict[str, str], out_dir: str) -> None:
  """Move the complete set ``staged`` (``{name: path in stage}``) into ``out_dir``, and a previous run's output
  files it does not replace out of it. Each file of the previous run is first moved aside into
  ``stage/previous/``: a failure puts every one back (the previous run, as it was); a kill leaves them there
  (the directory then mixes two runs, which :func:`mixed_runs` detects). A failure that cannot put everything
  back raises saying where the previous run's files are (the caller then keeps the stage)."""
  prev = os.path.join(stage, PREVIOUS)
  os.makedirs(prev)
  touched = []
  try:
    for name in list(staged) + [n for n in OUTPUT_NAMES if n not in staged]:
      dst = os.path.join(out_dir, name)
      touched.append(name)
      if os.path.lexists(dst):
        os.replace(dst, os.path.join(prev, name))
      if name in staged:
        os.replace(staged[name], dst)
  except BaseException:
    for name in reversed(touched):
      dst = os.path.join(out_dir, name)
      try:
        if name in staged and not os.path.lexists(staged[name]) and os.path.lexists(dst):
          os.replace(dst, staged[name])                  # this run's file out again ...
        if os.path.lexists(os.path.join(prev, name)):
          os.replace(os.path.join(prev, name), dst)      # ... and the previous run's back
      except OSError:
        pass
    if os.listdir(prev):
      raise RuntimeError(f"writing the outputs into {out_dir} failed while moving files, and "
                         f"{', '.join(sorted(os.listdir(prev)))} of the previous run could not be put back: they "
                         f"are in {prev}; move them back by hand.") from None
    raise
