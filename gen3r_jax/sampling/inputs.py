"""User inputs of Gen3R sampling, checked before anything compiles: conditioning images, videos, task, sizes.

What ``--config.images`` may name (``infer.py --frame_path``):

* image files, comma-separated: 1 (``1view``), 2 (``2view``: first and last frame) or ``num_frames`` of them
  (``allview``);
* ``allview`` only, as the single entry: a video file (:data:`VIDEO_EXTENSIONS`; ``infer.py`` reads it with
  ``imageio.v3.imread``), or a folder whose ``.png`` / ``.jpg`` (and ``.jpeg``) files, sorted by name as
  ``infer.py`` sorts them, are the frames. As ``infer.py`` (``control_images[:49]``) the first ``num_frames``
  frames are used (a warning says how many were left out); fewer frames than ``num_frames`` is an error that
  names the count needed and the largest ``num_frames`` the input would fit.

``infer.py`` image preprocessing (:func:`preprocess_image`)::

    pixels -> / 255 (uint8) or / 65535 (16-bit) (float32) -> resize the shorter side to 560 (bilinear, antialias,
    ``round(side * 560 / min(h, w))``) -> centre crop 560 x 560 (``(H - 560) // 2``) -> bfloat16 -> float32

so the pipeline receives ``[n, 560, 560, 3]`` float32 values in [0, 1] that are exactly bfloat16 numbers.

Reading (:func:`read_image`, Pillow): 8-bit images are read as ``infer.py`` reads them (``imread(...)[..., :3]``:
alpha dropped, grey made RGB, palette expanded). Where ``infer.py`` goes wrong this module does not: 16-bit
greyscale PNGs (``I;16`` modes; ``infer.py`` divides them by 255, which makes them nearly white) are scaled by
65535; 16-bit RGB(A) PNGs are read by Pillow at 8-bit precision (the high byte, correctly scaled; bfloat16 keeps
8 bits anyway); 32-bit integer images are taken as 16-bit when their values fit, else refused; float images must
lie in [0, 1]. One-line warnings (``warn``, default :func:`print_warning`: ``warning: ...`` on stderr) say when
an input is used in a way its author may not expect: transparent pixels (alpha dropped, as ``infer.py``), an EXIF
orientation (ignored, as ``infer.py``), an image far smaller than the 560 x 560 input (upscaled more than 2x) or of
extreme aspect ratio (the centre crop keeps less than half of its longer side), frame files whose name order
differs from their numeric order, and frames left out of a longer video or folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Callable, Sequence

from PIL import Image, UnidentifiedImageError
import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import Gen3RInputError, check_array, require
from gen3r_jax.nn.resample import resize
from gen3r_jax.sampling.cameras import BUILTIN_TRAJECTORIES, check_num_frames, check_trajectory
from gen3r_jax.sampling.conditioning import TASKS, check_task


SIZE = 560          # Gen3R's frame size: 40x40 VGGT tokens of patch 14, 70x70 latents of stride 8
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")   # frames of an allview folder (infer.py: .png and .jpg)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
UPSCALE_WARN = 2.0  # warn when the shorter side is scaled up by more than this
ASPECT_WARN = 2.0   # warn when the longer side is more than this times the shorter (the crop keeps < 1/2 of it)
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

Warn = Callable[[str], None]


def print_warning(msg: str) -> None:
  """The default ``warn``: one ``warning: ...`` line on stderr."""
  print("warning: " + " ".join(str(msg).split()), file=sys.stderr, flush=True)


def expected_views(task: str, num_frames: int) -> int:
  """How many conditioning images a task takes: 1view 1, 2view 2 (first and last), allview ``num_frames``."""
  check_task(task)
  return {"1view": 1, "2view": 2}.get(task, int(num_frames))


def check_views(task: str, num_views: int, num_frames: int) -> None:
  want = expected_views(task, num_frames)
  extra = " (or, for allview, one video file or one folder of frames)" if task == "allview" else ""
  require(num_views == want,
          f"task {task!r} takes {want} conditioning image{'s' if want != 1 else ''} "
          f"({'first frame' if task == '1view' else 'first and last frames' if task == '2view' else 'one per frame'}"
          f"), got {num_views}; pass --config.images with {want} comma-separated path(s){extra} or change "
          "--config.task.")


def check_size(size, model_size: int = SIZE) -> int:
  """Frames must be ``model_size`` square (the geometry adapter and VGGT heads hard-code a 40x40 token grid)."""
  require(isinstance(size, (int, np.integer)) and not isinstance(size, bool) and int(size) == model_size,
          f"size {size!r} is not supported: Gen3R's geometry decoder works on {model_size}x{model_size} "
          f"frames (40x40 tokens of patch 14); set size to {model_size} (inputs are resized and "
          "centre-cropped to it).")
  return int(size)


def check_cameras_arg(cameras) -> None:
  """A built-in trajectory name, an existing ``.json`` file or a decoded dict."""
  if isinstance(cameras, dict) or cameras in BUILTIN_TRAJECTORIES:
    return
  if isinstance(cameras, str) and cameras.endswith(".json"):
    require(os.path.isfile(cameras), f"cameras file {cameras!r} not found; pass an existing cameras JSON file "
                                     "or a built-in trajectory name.")
    return
  check_trajectory(str(cameras))


# ------------------------------------------------------------------------------------------------ images
def image_array(im) -> tuple[np.ndarray, np.ndarray | None]:
  """A PIL image -> (``[H, W, 3]`` pixels in their own range: uint8, uint16 (16-bit) or float32 in [0, 1];
  alpha ``[H, W]`` uint8 or None). See the module docstring for each mode."""
  mode = im.mode
  if mode in _MODES_16 or mode == "I":
    a = np.asarray(im)
    if mode == "I":
      lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
      require(lo >= 0 and hi <= 65535,
              f"32-bit integer image with values in [{lo}, {hi}]: not an 8- or 16-bit image; save it as an 8- or "
              "16-bit PNG.")
    a = a.astype(np.uint16)
    return np.repeat(a[..., None], 3, axis=-1), None
  if mode == "F":
    a = np.asarray(im, np.float32)
    ok = bool(np.isfinite(a).all()) and (a.size == 0 or (a.min() >= 0.0 and a.max() <= 1.0))
    require(ok, "floating-point image with values outside [0, 1] (or NaN); save it as an 8- or 16-bit PNG.")
    return np.repeat(a[..., None], 3, axis=-1), None
  if mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):
    rgba = np.asarray(im.convert("RGBA"))
    return rgba[..., :3], rgba[..., 3]
  rgb = im if mode == "RGB" else im.convert("RGB")
  return np.asarray(rgb), None


@dataclasses.dataclass
class _Notes:
  """Warnings about a set of frames, one line per kind (the first file named, the others counted)."""
  items: dict = dataclasses.field(default_factory=dict)

  def add(self, kind: str, name: str, detail: str) -> None:
    self.items.setdefault(kind, []).append((name, detail))

  def emit(self, warn: Warn | None) -> None:
    if warn is None:
      return
    for kind, entries in self.items.items():
      name, detail = entries[0]
      more = f" (and {len(entries) - 1} more frame{'s' if len(entries) > 2 else ''} like it)" if len(entries) > 1 \
          else ""
      warn(_NOTE_TEXT[kind].format(name=name, detail=detail, more=more))


_NOTE_TEXT = {
    "alpha": "{name!r}{more} has transparent pixels ({detail}); the alpha channel is dropped as infer.py does, so "
             "they show whatever colour is stored under them: flatten the image onto a background first if that is "
             "not wanted.",
    "exif": "{name!r}{more} has EXIF orientation {detail} (rotated or mirrored when viewed); its pixels are used as "
            "stored, unrotated, as infer.py does: rotate the pixels first if needed.",
    "small": "{name!r}{more} is {detail}",
    "aspect": "{name!r}{more} is {detail}",
}


def _read_image(path: str, notes: _Notes) -> np.ndarray:
  require(not os.path.isdir(path), f"{path!r} is a folder: a folder of frames is taken for task allview only, as "
                                   "the single entry of --config.images; otherwise pass image files.")
  require(os.path.isfile(path), f"image {path!r} not found; check the path in --config.images.")
  try:
    with Image.open(path) as im:
      im.load()
      orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
      arr, alpha = image_array(im)
  except Gen3RInputError as e:
    raise Gen3RInputError(f"image {path!r}: {e}") from None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise Gen3RInputError(f"cannot read image {path!r} ({msg}); pass a PNG or JPEG file.") from None
  require(arr.ndim == 3 and min(arr.shape[:2]) >= 1, f"image {path!r} is empty ({arr.shape[1]}x{arr.shape[0]}).")
  if alpha is not None and (alpha < 255).any():
    notes.add("alpha", path, f"{float((alpha < 255).mean()):.1%} of its pixels")
  if orientation not in (1, None):
    notes.add("exif", path, str(orientation))
  return np.ascontiguousarray(arr)


def read_image(path: str, warn: Warn | None = None) -> np.ndarray:
  """``[H, W, 3]`` pixels: uint8, uint16 for 16-bit greyscale, float32 in [0, 1] for float images (module
  docstring); alpha dropped as ``imageio.imread(...)[..., :3]`` does (``warn`` says so when it is not opaque)."""
  notes = _Notes()
  arr = _read_image(path, notes)
  notes.emit(warn)
  return arr


def to_unit(pixels: np.ndarray) -> np.ndarray:
  """Pixels of :func:`read_image` (or a video frame) -> float32 in [0, 1], scaled by their type's range."""
  x = np.asarray(pixels)
  if x.dtype == np.uint8:
    return x.astype(np.float32) / np.float32(255.0)
  if x.dtype == np.uint16:
    return x.astype(np.float32) / np.float32(65535.0)
  require(np.issubdtype(x.dtype, np.floating), f"image pixels: expected uint8, uint16 or float in [0, 1], got dtype "
                                               f"{x.dtype}.")
  return x.astype(np.float32)


def preprocess_image(pixels: np.ndarray, size: int = SIZE) -> np.ndarray:
  """``[H, W, 3]`` uint8 / uint16 / float in [0, 1] -> ``[size, size, 3]`` float32 in [0, 1] (module docstring)."""
  h, w = pixels.shape[:2]
  require(min(h, w) >= 1, f"image of {w}x{h} pixels is empty.")
  scale = size / min(h, w)
  nh, nw = round(h * scale), round(w * scale)
  x = jnp.asarray(to_unit(pixels))
  if (nh, nw) != (h, w):
    x = resize(x, (nh, nw), "bilinear", antialias=True)
  top, left = max(0, (nh - size) // 2), max(0, (nw - size) // 2)
  x = x[top:top + size, left:left + size]
  return np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32))


def size_notes(shapes: Sequence[tuple[int, int]], names: Sequence[str], size: int = SIZE,
               notes: _Notes | None = None) -> _Notes:
  """Note images far smaller than ``size`` (upscaled > :data:`UPSCALE_WARN` x) or of extreme aspect ratio."""
  notes = _Notes() if notes is None else notes
  for (h, w), name in zip(shapes, names):
    short, long = min(h, w), max(h, w)
    if size / short > UPSCALE_WARN:
      notes.add("small", name, f"{w}x{h} pixels, far smaller than the model's {size}x{size} input: it is upscaled "
                               f"{size / short:.1f}x (expect a blurry result; give at least {size} pixels on the "
                               "shorter side).")
    if long / short > ASPECT_WARN:
      notes.add("aspect", name, f"{w}x{h} pixels (aspect ratio {long / short:.1f}:1): the centre crop to "
                                f"{size}x{size} keeps only the middle {short / long:.0%} of its "
                                f"{'width' if w > h else 'height'}.")
  return notes


# ------------------------------------------------------------------------------------------ videos, folders
def is_video(path: str) -> bool:
  return isinstance(path, str) and path.lower().endswith(VIDEO_EXTENSIONS)


def _natural_key(name: str):
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_frame_files(folder: str, warn: Warn | None = None) -> list[str]:
  """The frame files of an allview folder: its ``.png`` / ``.jpg`` / ``.jpeg`` files sorted by name (``infer.py``
  sorts the paths). ``warn`` says when that order differs from the numbers in the names (``f10`` before ``f2``)."""
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(FRAME_EXTENSIONS) and os.path.isfile(os.path.join(folder, n)))
  require(bool(names), f"folder {folder!r} holds no frames (looked for {', '.join(FRAME_EXTENSIONS)} files); pass a "
                       "folder of frame images or a video file.")
  natural = sorted(names, key=_natural_key)
  if warn is not None and natural != names:
    i = next(k for k, (a, b) in enumerate(zip(names, natural)) if a != b)
    warn(f"frames of {folder!r} are taken in name order, as infer.py does: {names[i]!r} comes before "
         f"{natural[i]!r}; zero-pad the numbers in the names if that is not the order of the video.")
  return [os.path.join(folder, n) for n in names]


def read_video(path: str, max_frames: int | None = None) -> tuple[np.ndarray, bool]:
  """The first ``max_frames`` (all if None) frames of a video, ``[n, H, W, 3]`` uint8, and whether it has more."""
  require(os.path.isfile(path), f"video {path!r} not found; check the path in --config.images.")
  frames, more = [], False
  try:
    for i, frame in enumerate(iio.imiter(path, plugin="FFMPEG")):
      if max_frames is not None and i >= max_frames:
        more = True
        break
      frames.append(np.asarray(frame)[..., :3])
  except Exception as e:  # noqa: BLE001 - imageio / ffmpeg raise many types; all mean "cannot read this file"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise Gen3RInputError(f"cannot read video {path!r} ({msg}); pass an .mp4 (H.264) file, or a folder of its "
                          "frames as .png / .jpg files.") from None
  require(bool(frames), f"video {path!r} has no frames.")
  return np.stack(frames), more


def count_video_frames(path: str) -> int | None:
  """The number of frames of a video (decodes it with ffmpeg; None if that fails)."""
  try:
    import imageio_ffmpeg  # heavy optional dependency: imported on first use
    return int(imageio_ffmpeg.count_frames_and_secs(path)[0])
  except Exception:  # noqa: BLE001 - only used in a warning
    return None


def _count_error(what: str, n: int, num_frames: int) -> Gen3RInputError:
  fit = 1 + 4 * ((n - 1) // 4)
  return Gen3RInputError(
      f"{what} has {n} frame{'s' if n != 1 else ''} but task allview needs num_frames={num_frames} (one "
      f"conditioning frame per generated frame, num_frames = 1 + 4k); pass at least {num_frames} frames or set "
      f"--config.num_frames={fit} (the largest 1 + 4k it fits).")


# ------------------------------------------------------------------------------------------ control views
@dataclasses.dataclass
class ControlViews:
  """The conditioning views as read, before preprocessing (:func:`read_views`)."""
  frames: list          # per view ``[H, W, 3]`` uint8 / uint16 / float32 (see read_image)
  names: list[str]      # where each view came from: a file, or ``video.mp4[i]``
  source: str           # "images" | "folder" | "video"

  def __len__(self) -> int:
    return len(self.frames)


def split_spec(spec: str | Sequence[str]) -> list[str]:
  items = spec.split(",") if isinstance(spec, str) else [str(s) for s in (spec or ())]
  return [s.strip() for s in items if s and s.strip()]


def read_views(spec: str | Sequence[str], task: str, num_frames: int, *, size: int = SIZE,
               warn: Warn | None = print_warning) -> ControlViews:
  """What ``--config.images`` names (module docstring) -> the conditioning views, read and checked.

  Videos and folders are taken for ``allview`` only; their frame count must be at least ``num_frames`` (the
  first ``num_frames`` are used, as ``infer.py`` does). A list of image files is returned as given (its count is
  checked against the task by :func:`check_views`). Warnings go to ``warn`` (None: silent).
  """
  check_task(task)
  items = split_spec(spec)
  require(bool(items), "no conditioning image: pass --config.images=a.png[,b.png] (allview: also a video file or a "
                       "folder of frames).")
  notes = _Notes()
  single = items[0] if len(items) == 1 else None
  if single is not None and (os.path.isdir(single) or is_video(single)):
    kind = "folder" if os.path.isdir(single) else "video"
    want = {"1view": "one image file (the first frame)", "2view": "two image files (first and last frame)"}
    require(task == "allview", f"{kind} {single!r}: a {'folder of frames' if kind == 'folder' else 'video'} is taken "
                               f"for task allview only (as infer.py); for task {task!r} pass {want.get(task, '')}.")
    f = check_num_frames(num_frames)
    if kind == "folder":
      files = list_frame_files(single, warn)
      if len(files) < f:
        raise _count_error(f"folder {single!r} ({', '.join(FRAME_EXTENSIONS)} files)", len(files), f)
      if len(files) > f and warn is not None:
        warn(f"folder {single!r} has {len(files)} frames; using the first {f} by name ({os.path.basename(files[0])} "
             f"to {os.path.basename(files[f - 1])}), as infer.py does.")
      files = files[:f]
      frames, names = [_read_image(p, notes) for p in files], files
    else:
      video, more = read_video(single, f)
      if len(video) < f:
        raise _count_error(f"video {single!r}", len(video), f)
      if more and warn is not None:
        total = count_video_frames(single)
        warn(f"video {single!r} has {total if total is not None else 'more than ' + str(f)} frames; using the first "
             f"{f}, as infer.py does (trim the video, or extract the frames you want into a folder).")
      frames, names = list(video), [f"{single}[{i}]" for i in range(len(video))]
  else:
    for p in items:
      require(not is_video(p), f"{p!r} is a video: a video is taken for task allview only, as the single entry of "
                               "--config.images; otherwise pass image files.")
    frames, names, kind = [_read_image(p, notes) for p in items], list(items), "images"
  if kind == "video":   # every frame has the video's size: one note, naming the video
    size_notes([frames[0].shape[:2]], [single], size, notes)
  else:
    size_notes([fr.shape[:2] for fr in frames], names, size, notes)
  notes.emit(warn)
  return ControlViews(frames, names, kind)


def preprocess_views(views: ControlViews | Sequence[np.ndarray], size: int = SIZE) -> np.ndarray:
  """Views as read -> ``[n, size, size, 3]`` float32 in [0, 1] (``infer.py`` preprocessing)."""
  frames = views.frames if isinstance(views, ControlViews) else list(views)
  require(len(frames) > 0, "no conditioning image given; pass --config.images=a.png[,b.png].")
  return np.stack([preprocess_image(fr, size) for fr in frames])


def load_control_images(paths: Sequence[str], size: int = SIZE, warn: Warn | None = None) -> np.ndarray:
  """Image files -> ``[n, size, size, 3]`` float32 in [0, 1] (``infer.py`` preprocessing)."""
  require(len(paths) > 0, "no conditioning image given; pass --config.images=a.png[,b.png].")
  return preprocess_views([read_image(p, warn) for p in paths], size)


def check_images(images, size: int = SIZE) -> None:
  """Preprocessed conditioning images ``[n, size, size, 3]`` in [0, 1]."""
  check_array(images, "images", ndim=4, layout="[n, H, W, 3]", floating=True, dims={3: 3})
  require(images.shape[1:3] == (size, size),
          f"images: frames must be {size}x{size}, got {images.shape[1]}x{images.shape[2]}; preprocess them with "
          "gen3r_jax.sampling.inputs.load_control_images (resize + centre crop).")


__all__ = ("SIZE", "TASKS", "FRAME_EXTENSIONS", "VIDEO_EXTENSIONS", "expected_views", "check_views", "check_size",
           "check_cameras_arg", "image_array", "read_image", "to_unit", "preprocess_image", "size_notes", "is_video",
           "list_frame_files", "read_video", "count_video_frames", "ControlViews", "split_spec", "read_views",
           "preprocess_views", "load_control_images", "check_images", "check_num_frames", "print_warning")
