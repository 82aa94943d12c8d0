"""Clip sampling, resize + centre crop, intrinsics and relative poses (training-reference §1.4–1.6).

All host numpy, channels-last: frames ``[T, H, W, 3]``. The official behaviour is the default; every
departure is a config value (:class:`ClipConfig`), documented in ``docs/data.md``.

Resize: ``torchvision.transforms.functional.resize`` of float 0–255 frames, bilinear **with antialias**
(torchvision >= 0.17 default), to ``(round(h·r), round(w·r))`` with ``r = max(H/h, W/w)``, then a centre crop
at ``top = (h' − H)//2``, ``left = (w' − W)//2``. We apply PyTorch's exact separable weights
(:func:`gen3r_jax.resize_weights.resize_matrix`) restricted to the cropped rows/columns and applied sparsely,
so only the kept pixels are computed, with a few taps each. Intrinsics follow ``get_K``: scaled by ``r`` from the transforms.json ``w, h``, then shifted by
crop offsets computed with ``int()`` truncation (the image uses ``round()``), reproducing the ≤ 1 px
official mismatch (quirk 10) unless ``ClipConfig.exact_crop_offsets`` is set.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from gen3r_jax.data.layout import check_frame_size, decode_image, image_error
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.resize_weights import resize_matrix


PAD_MODES = ("random", "last", "error")
ORDERS = ("images", "cameras")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """How one clip is cut from a scene.

  Attributes:
    num_frames: frames per clip (official 49).
    height, width: output size after resize + centre crop (official 560).
    strides: the stride is drawn uniformly from these (stage-1 train ``(1, 2)``: Python ``randint(1, 2)``;
      stage-2 train ``(1,)``: numpy ``randint(1, 2)`` excludes 2). If the scene has fewer than
      ``num_frames · stride`` frames the stride falls back to 1.
    start: ``None`` draws the start uniformly in ``[0, L − (n−1)·stride − 1]``; an int fixes it (val: 0).
    pad: scenes shorter than ``num_frames``: ``"random"`` repeats the first frame k ~ U{0..d} times and the last
      d − k times (official); ``"last"`` repeats only the last; ``"error"`` raises.
    order: ``"images"`` = sorted file names of ``images/`` (stage 1, no cameras); ``"cameras"`` = transforms.json
      order, with cameras (stage 2).
    exact_crop_offsets: shift the principal point by the crop the image really got (round) instead of the
      official int()-truncated offset.
  """
  num_frames: int = 49
  height: int = 560
  width: int = 560
  strides: tuple[int, ...] = (1,)
  start: int | None = None
  pad: str = "random"
  order: str = "cameras"
  exact_crop_offsets: bool = False

  def validate(self) -> "ClipConfig":
    require(self.num_frames >= 1, f"num_frames must be >= 1, got {self.num_frames}.")
    require(self.height >= 1 and self.width >= 1, f"clip size must be positive, got {self.height}x{self.width}.")
    require(len(self.strides) > 0 and all(int(s) >= 1 for s in self.strides),
            f"strides must be a non-empty tuple of ints >= 1, got {self.strides}.")
    require(self.start is None or self.start >= 0, f"start must be None or >= 0, got {self.start}.")
    require(self.pad in PAD_MODES, f"pad must be one of {PAD_MODES}, got {self.pad!r}.")
    require(self.order in ORDERS, f"order must be one of {ORDERS}, got {self.order!r}.")
    return self


def official_clip_config(stage: int, split: str = "train", **overrides: Any) -> ClipConfig:
  """The official clip settings (training-reference §1.4 table) for ``stage`` 1/2 and ``split`` train/val."""
  require(stage in (1, 2) and split in ("train", "val"),
          f"stage must be 1|2 and split train|val, got {stage}, {split}.")
  table = {
      (1, "train"): dict(strides=(1, 2), start=None, order="images"),
      (1, "val"): dict(strides=(2,), start=0, order="images"),
      (2, "train"): dict(strides=(1,), start=None, order="cameras"),
      (2, "val"): dict(strides=(1,), start=0, order="cameras"),
  }
  return ClipConfig(**{**table[(stage, split)], **overrides}).validate()


def sample_indices(rng: np.random.Generator, length: int, cfg: ClipConfig, what: str = "scene") -> np.ndarray:
  """Frame indices ``[num_frames]`` into a scene of ``length`` frames (stride, padding, start as documented)."""
  n = cfg.num_frames
  require(length >= 1, f"{what} has no frames.")
  stride = int(cfg.strides[rng.integers(len(cfg.strides))]) if len(cfg.strides) > 1 else int(cfg.strides[0])
  if length < n * stride:
    stride = 1
  seq = np.arange(length)
  if length < n:
    d = n - length
    if cfg.pad == "error":
      raise Gen3RInputError(f"{what} has {length} frames but a clip needs {n}; drop the scene from the list "
                            "files, lower num_frames, or set pad='random' (official) to repeat end frames.")
    k = int(rng.integers(0, d + 1)) if cfg.pad == "random" else 0
    seq = np.concatenate([np.zeros(k, np.int64), seq, np.full(d - k, length - 1)])
  span = (n - 1) * stride
  if cfg.start is None:
    start = int(rng.integers(0, len(seq) - span))
  else:
    require(cfg.start + span < len(seq), f"{what}: start {cfg.start} with stride {stride} needs "
            f"{cfg.start + span + 1} frames, the scene has {len(seq)}; lower start or num_frames.")
    start = cfg.start
  return seq[start + stride * np.arange(n)]


@functools.lru_cache(maxsize=64)
def _crop_taps(in_size: int, out_size: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
  """Sparse rows of the antialiased bilinear resize matrix kept by a centre crop.

  Returns ``idx`` ``[crop, K]`` int and ``w`` ``[crop, K]`` float32: output ``i`` is ``sum_k w[i, k] ·
  x[idx[i, k]]`` (K = the widest kernel support; padding taps have weight 0).
  """
  m = resize_matrix(in_size, out_size, "bilinear", antialias=True)
  off = max(0, (out_size - crop) // 2)
  m = m[off:off + crop]
  nz = m != 0
  first = nz.argmax(1)
  last = in_size - 1 - nz[:, ::-1].argmax(1)
  k = int((last - first).max()) + 1
  idx = np.minimum(first[:, None] + np.arange(k)[None], in_size - 1)
  w = np.take_along_axis(m, idx, 1) * (first[:, None] + np.arange(k)[None] <= last[:, None])
  return idx, w.astype(np.float32)


def resize_shape(h: int, w: int, height: int, width: int) -> tuple[float, int, int]:
  """``(r, h', w')``: the official resize ratio and the resized size before cropping."""
  r = max(height / h, width / w)
  return r, int(round(h * r)), int(round(w * r))


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Aspect-preserving antialiased bilinear resize then centre crop; uint8/float 0–255 in, [0, 1] out.

  The separable kernels are applied sparsely (a few taps per output pixel), one frame at a time.

  Args:
    frames: ``[T, h, w, 3]`` values in 0–255.
  Returns:
    ``[T, height, width, 3]`` float32 in [0, 1].
  """
  t, h, w, c = frames.shape
  _, nh, nw = resize_shape(h, w, height, width)
  iy, wy = _crop_taps(h, nh, height)  # [height, Ky]
  ix, wx = _crop_taps(w, nw, width)  # [width, Kx]
  out = np.empty((t, height, width, c), np.float32)
  for f in range(t):
    x = frames[f].astype(np.float32)  # [h, w, 3]
    y = wy[:, 0, None, None] * x[iy[:, 0]]  # [height, w, 3]
    for k in range(1, iy.shape[1]):
      y += wy[:, k, None, None] * x[iy[:, k]]
    z = wx[None, :, 0, None] * y[:, ix[:, 0]]  # [height, width, 3]
    for k in range(1, ix.shape[1]):
      z += wx[None, :, k, None] * y[:, ix[:, k]]
    out[f] = z
  return np.clip(out / np.float32(255.0), 0.0, 1.0)


def intrinsics_matrix(intr: np.ndarray, height: int, width: int, *, exact_crop_offsets: bool = False) -> np.ndarray:
  """``get_K``: per-frame ``[N, 6]`` (w, h, fl_x, fl_y, cx, cy) → ``[N, 3, 3]`` float32 pixels at the crop."""
  intr = np.asarray(intr, np.float64)
  out = np.zeros((len(intr), 3, 3), np.float64)
  for i, (w, h, fx, fy, cx, cy) in enumerate(intr):
    r = max(width / w, height / h)
    to_int = round if exact_crop_offsets else int
    crop_h = (to_int(h * r) - height) // 2
    crop_w = (to_int(w * r) - width) // 2
    out[i] = [[fx * r, 0.0, cx * r - crop_w], [0.0, fy * r, cy * r - crop_h], [0.0, 0.0, 1.0]]
  return out.astype(np.float32)


def relative_poses(c2w: np.ndarray) -> np.ndarray:
  """``preprocess_poses``: ``inv(c2w_0) @ c2w_i`` so frame 0 is the identity; ``[N, 4, 4]`` → float32.

  Computed in float64 (the official code uses float32); no scale normalisation (translations keep the
  dataset's units).
  """
  c2w = np.asarray(c2w, np.float64)
  rel = np.linalg.inv(c2w[0])[None] @ c2w
  rel[0] = np.eye(4)
  return rel.astype(np.float32)


def _decode(record: dict[str, Any], i: int, what: str) -> np.ndarray:
  """Image ``i`` of a scene record, decoded; an unreadable or corrupt file is a one-line
  :class:`Gen3RInputError` naming the file and the scene (not PIL's traceback)."""
  images = record["images"]
  paths = getattr(images, "paths", None)
  name = str(paths[i]) if paths is not None else str(record["image_names"][i])
  try:
    return decode_image(images[i])
  except Exception as e:  # noqa: BLE001 - PIL raises OSError, UnidentifiedImageError, SyntaxError, ValueError...
    raise Gen3RInputError(f"{what}: cannot decode image {name} ({image_error(e)}); replace the file or remove the "
                          "scene from the list files (building the pipeline reads image headers only, so damage "
                          "past the header shows here).") from e


def cut_clip(record: dict[str, Any], rng: np.random.Generator, cfg: ClipConfig) -> dict[str, Any]:
  """Cut one clip from a scene record (see :mod:`gen3r_jax.data.layout`).

  Returns ``frames`` ``[F, H, W, 3]`` float32 in [0, 1] and ``frame_ids`` ``[F]`` (indices of the chosen
  frames in the ordering used); with ``order="cameras"`` also ``c2ws`` ``[F, 4, 4]`` (relative) and ``Ks``
  ``[F, 3, 3]``.
  """

  what = f"scene {record['scene']!s} ({record['dataset']!s})"
  if cfg.order == "cameras":
    n_cams = len(record["frame_index"])
    require(n_cams > 0, f"{what} has no cameras; stage-2 clips need transforms.json (or use order='images').")
    ids = sample_indices(rng, n_cams, cfg, what)
    image_ids = np.asarray(record["frame_index"])[ids]
  else:
    ids = sample_indices(rng, len(record["images"]), cfg, what)
    image_ids = ids
  decoded = {int(i): _decode(record, int(i), what) for i in np.unique(image_ids)}
  shapes = {v.shape for v in decoded.values()}
  require(len(shapes) == 1, f"{what}: the clip mixes image sizes {sorted(shapes)}; all frames of a scene "
          "must have one size.")
  if cfg.order == "cameras":
    for j, i in zip(ids, image_ids):
      h, w = decoded[int(i)].shape[:2]
      check_frame_size(str(record["scene"]), int(j), str(record["image_names"][int(i)]),
                       np.asarray(record["intrinsics"])[j], (w, h))
  frames = resize_crop(np.stack([decoded[int(i)] for i in image_ids]), cfg.height, cfg.width)
  out = {"frames": frames, "frame_ids": ids.astype(np.int32)}
  if cfg.order == "cameras":
    out["Ks"] = intrinsics_matrix(np.asarray(record["intrinsics"])[ids], cfg.height, cfg.width,
                                  exact_crop_offsets=cfg.exact_crop_offsets)
    out["c2ws"] = relative_poses(np.asarray(record["c2w"])[ids])
  return out
