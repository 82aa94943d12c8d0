"""User inputs of Gen3R sampling, checked before anything compiles: conditioning images, task, sizes.

``infer.py`` image preprocessing (:func:`load_control_images`)::

    imageio read [..., :3] (uint8) -> / 255 (float32) -> resize the shorter side to 560 (bilinear, antialias,
    ``round(side * 560 / min(h, w))``) -> centre crop 560 x 560 (``(H - 560) // 2``) -> bfloat16 -> float32

so the pipeline receives ``[n, 560, 560, 3]`` float32 values in [0, 1] that are exactly bfloat16 numbers.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import Gen3RInputError, check_array, require
from gen3r_jax.nn.resample import resize
from gen3r_jax.sampling.cameras import BUILTIN_TRAJECTORIES, check_num_frames, check_trajectory
from gen3r_jax.sampling.conditioning import TASKS, check_task

SIZE = 560          # Gen3R's frame size: 40x40 VGGT tokens of patch 14, 70x70 latents of stride 8


def expected_views(task: str, num_frames: int) -> int:
  """How many conditioning images a task takes: 1view 1, 2view 2 (first and last), allview ``num_frames``."""
  check_task(task)
  return {"1view": 1, "2view": 2}.get(task, int(num_frames))


def check_views(task: str, num_views: int, num_frames: int) -> None:
  want = expected_views(task, num_frames)
  require(num_views == want,
          f"task {task!r} takes {want} conditioning image{'s' if want != 1 else ''} "
          f"({'first frame' if task == '1view' else 'first and last frames' if task == '2view' else 'one per frame'}"
          f"), got {num_views}; pass --config.images with {want} comma-separated path(s) or change --config.task.")


def check_size(size, model_size: int = SIZE) -> int:
  """Frames must be ``model_size`` square (the geometry adapter and VGGT heads hard-code a 40x40 token grid)."""
  require(isinstance(size, (int, np.integer)) and not isinstance(size, bool) and int(size) == model_size,
          f"resolution {size!r} is not supported: Gen3R's geometry decoder works on {model_size}x{model_size} "
          f"frames (40x40 tokens of patch 14); set the resolution to {model_size} (inputs are resized and "
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


def read_image(path: str) -> np.ndarray:
  """``[H, W, 3]`` uint8 (alpha dropped as ``imageio.imread(...)[..., :3]`` does; grey images made RGB)."""
  from PIL import Image, UnidentifiedImageError
  require(os.path.isfile(path), f"image {path!r} not found; check the path in --config.images.")
  try:
    with Image.open(path) as im:
      im.load()
      img = im if im.mode in ("RGB", "RGBA") else im.convert("RGB")
      arr = np.asarray(img)
  except (UnidentifiedImageError, OSError, ValueError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise Gen3RInputError(f"cannot read image {path!r} ({msg}); pass a PNG or JPEG file.") from None
  return np.ascontiguousarray(arr[..., :3])


def preprocess_image(u8: np.ndarray, size: int = SIZE) -> np.ndarray:
  """``[H, W, 3]`` uint8 -> ``[size, size, 3]`` float32 in [0, 1] (module docstring)."""
  h, w = u8.shape[:2]
  require(min(h, w) >= 1, f"image of {w}x{h} pixels is empty.")
  scale = size / min(h, w)
  nh, nw = round(h * scale), round(w * scale)
  x = jnp.asarray(u8.astype(np.float32) / np.float32(255.0))
  if (nh, nw) != (h, w):
    x = resize(x, (nh, nw), "bilinear", antialias=True)
  top, left = max(0, (nh - size) // 2), max(0, (nw - size) // 2)
  x = x[top:top + size, left:left + size]
  return np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32))


def load_control_images(paths: Sequence[str], size: int = SIZE) -> np.ndarray:
  """Image files -> ``[n, size, size, 3]`` float32 in [0, 1] (``infer.py`` preprocessing)."""
  require(len(paths) > 0, "no conditioning image given; pass --config.images=a.png[,b.png].")
  return np.stack([preprocess_image(read_image(p), size) for p in paths])


def check_images(images, size: int = SIZE) -> None:
  """Preprocessed conditioning images ``[n, size, size, 3]`` in [0, 1]."""
  check_array(images, "images", ndim=4, layout="[n, H, W, 3]", floating=True, dims={3: 3})
  require(images.shape[1:3] == (size, size),
          f"images: frames must be {size}x{size}, got {images.shape[1]}x{images.shape[2]}; preprocess them with "
          "gen3r_jax.sampling.inputs.load_control_images (resize + centre crop).")


__all__ = ("SIZE", "TASKS", "expected_views", "check_views", "check_size", "check_cameras_arg", "read_image",
           "preprocess_image", "load_control_images", "check_images", "check_num_frames")
