"""Feed-forward 3D reconstruction with VGGT: images -> depth, cameras, coloured point cloud (``launch/reconstruct.py``).

    paths = find_images("photos/")                          # a folder, "a.png,b.jpg" or a list of files
    images = load_and_preprocess_images(paths, size=518)    # [S, size, size, 3] float32 in [0, 1]
    pred = reconstruct_arrays(model, images)                # VGGT + cameras + unprojection
    files = reconstruct("photos/", "ckpt/vggt_1b", "out/")  # all of it, written with the export module

Preprocessing follows VGGT's ``load_and_preprocess_images`` as vendored in Gen3R (``mode="crop"``: the shorter
side is resized to ``size`` with PIL bicubic, the longer one to ``round(long * size / short / 14) * 14``, then
centre-cropped to ``size x size``; ``mode="pad"``: the longer side becomes ``size`` and the image is padded with
white to a square). RGBA is blended onto white; 16-bit greyscale images are scaled by 65535 (as
:func:`gen3r_jax.sampling.inputs.image_array`), not clipped to white. Both modes give square ``size x size``
frames, so images of different sizes are handled (no padding to a common size is ever needed). The reference
hard-codes 518; here ``size`` is any positive multiple of 14 (518 for VGGT-1B, 560 as in Gen3R).

Output directory (the sample format of :mod:`gen3r_jax.sampling.export`, with the input images as ``rgb``):
``rgb.mp4``, ``depth.npz`` / ``depth.mp4``, ``points.npz`` / ``points.ply`` (depth unprojected with the per-frame
percentile mask of ``infer.py``, coloured by the images), ``cameras.json``, ``preview.png``, plus
``vggt_predictions.npz`` (``pose_enc``, ``extrinsics``, ``intrinsics``, ``depth_conf``, ``world_points``,
``world_points_conf`` of VGGT's heads). The output directory is created and probed for writing after the images
are read and before the model is loaded (:func:`gen3r_jax.sampling.export.prepare_output_dir`); the files are
written atomically, as a set (:func:`gen3r_jax.sampling.export.export_all`).
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from PIL import Image, UnidentifiedImageError
import jax.numpy as jnp
import numpy as np

from gen3r_jax.apps import export as scene_export
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.models.vggt import VGGT, validate_images
from gen3r_jax.models.vggt.geometry import pose_encoding_to_extri_intri
from gen3r_jax.sampling import export
from gen3r_jax.sampling.geometry_decode import extrinsics_to_c2w, unproject_batch
from gen3r_jax.sampling.inputs import image_array, print_warning, to_unit


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MODES = ("crop", "pad")
DTYPES = ("float32", "bfloat16")


def find_images(spec: str | Sequence[str]) -> list[str]:
  """Image paths from a folder (its image files, sorted by name), a comma-separated list or a list of paths."""
  if isinstance(spec, str) and os.path.isdir(spec):
    paths = sorted(os.path.join(spec, n) for n in os.listdir(spec) if n.lower().endswith(IMAGE_EXTENSIONS))
    require(bool(paths), f"no images found in folder {spec!r} (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    return paths
  items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
  items = [s for s in items if s]
  require(bool(items), "no images given: pass a folder or a comma-separated list of image files.")
  missing = [s for s in items if not os.path.isfile(s)]
  require(not missing, f"image file(s) not found: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""))
  return items


def check_size(size) -> int:
  ok = isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0 and size % 14 == 0
  require(ok, f"size must be a positive multiple of the patch size 14 (518 for VGGT-1B, 560 as in Gen3R), "
              f"got {size!r}.")
  return int(size)


def _open_rgb(path: str):
  try:
    with Image.open(path) as im:
      im.load()
      img = im.copy()
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise Gen3RInputError(f"cannot read image {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                          ) from None
  if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):   # convert("RGB") would clip these to white
    try:
      arr, _ = image_array(img)
    except Gen3RInputError as e:
      raise Gen3RInputError(f"image {path!r}: {e}") from None
    return Image.fromarray(np.round(to_unit(arr) * 255.0).astype(np.uint8))
  if img.mode == "RGBA":
    img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
  return img.convert("RGB")


def preprocess_image(img, size: int = 518, mode: str = "crop") -> np.ndarray:
  """One PIL RGB image -> ``[size, size, 3]`` float32 in [0, 1] (VGGT's ``load_and_preprocess_images``)."""
  width, height = img.size
  if mode == "pad":
    if width >= height:
      new_w, new_h = size, round(height * (size / width) / 14) * 14
    else:
      new_w, new_h = round(width * (size / height) / 14) * 14, size
  elif width <= height:
    new_w, new_h = size, round(height * (size / width) / 14) * 14
  else:
    new_w, new_h = round(width * (size / height) / 14) * 14, size
  require(new_w > 0 and new_h > 0, f"image of {width}x{height} is too thin to resize to a multiple of 14.")
  x = np.asarray(img.resize((new_w, new_h), Image.Resampling.BICUBIC), np.float32) / 255.0  # [h, w, 3]
  if mode == "crop":
    if new_h > size:
      y0 = (new_h - size) // 2
      x = x[y0:y0 + size]
    else:
      x0 = (new_w - size) // 2
      x = x[:, x0:x0 + size]
  else:
    ph, pw = size - new_h, size - new_w
    x = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), constant_values=1.0)
  return x


def load_and_preprocess_images(paths: Sequence[str], size: int = 518, mode: str = "crop") -> np.ndarray:
  """Image files -> ``[S, size, size, 3]`` float32 in [0, 1] (module docstring). Unreadable files raise
  :class:`Gen3RInputError` naming the file."""
  size = check_size(size)
  require(mode in MODES, f"mode must be one of {MODES}, got {mode!r}.")
  require(len(paths) > 0, "at least one image is required.")
  return np.stack([preprocess_image(_open_rgb(p), size, mode) for p in paths])


def reconstruct_arrays(model, images, *, frames_chunk_size: int | None = None, min_max_depth_mask: bool = True
                       ) -> dict[str, np.ndarray]:
  """VGGT on ``images [S, H, W, 3]`` (one scene) -> host arrays: ``depth [S, H, W]``, ``depth_conf``,
  ``pose_enc [S, 9]``, ``extrinsics [S, 3, 4]``, ``intrinsics [S, 3, 3]``, ``c2w [S, 4, 4]``, ``world_points``,
  ``world_points_conf`` (point head), ``pcds [S, H, W, 3]`` (depth unprojection), ``masks [S, H, W]`` bool."""


  images = validate_images(np.asarray(images, np.float32), model.cfg.patch_size)   # [1, S, H, W, 3]
  require(images.shape[0] == 1, f"images: one scene [S, H, W, 3] at a time, got batch {images.shape[0]}.")
  out = model(images, frames_chunk_size=frames_chunk_size)
  h, w = images.shape[2:4]
  ext, intr = pose_encoding_to_extri_intri(out["pose_enc"].astype(jnp.float32), (h, w))
  f32 = lambda x: np.asarray(jnp.asarray(x, jnp.float32))[0]  # noqa: E731
  pred = {k: f32(out[k]) for k in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")}
  pred["extrinsics"], pred["intrinsics"] = f32(ext), f32(intr)
  pcds, masks = unproject_batch(pred["depth"][None], pred["extrinsics"][None], pred["intrinsics"][None],
                                min_max_depth_mask=min_max_depth_mask)
  pred["pcds"], pred["masks"] = pcds[0], masks[0]
  pred["depth"] = pred["depth"][..., 0]
  pred["c2w"] = extrinsics_to_c2w(pred["extrinsics"])
  return pred


def check_checkpoint(checkpoint: str) -> None:
  require(isinstance(checkpoint, str) and os.path.isdir(checkpoint),
          f"VGGT checkpoint folder {checkpoint!r} not found (convert one with launch/convert.py --model vggt_1b).")
  require(os.path.isfile(os.path.join(checkpoint, "config.json")) and os.path.isdir(os.path.join(checkpoint,
                                                                                                 "params")),
          f"{checkpoint!r} is not a converted gen3r_jax checkpoint (config.json and params/ expected; write one "
          "with launch/convert.py --model vggt_1b).")


def reconstruct(images: str | Sequence[str], checkpoint, out: str, *, size: int = 518, mode: str = "crop",
                frames_chunk_size: int | None = None, dtype: str = "float32", min_max_depth_mask: bool = True,
                max_points: int | None = None, fps: float = 8, export_formats="", log=print,
                warn=None) -> dict[str, str]:
  """Reconstruct one scene and write the output directory (module docstring); returns ``{file name: path}``.

  ``checkpoint`` is a converted VGGT folder (``VGGT.save_checkpoint`` / ``launch/convert.py``) or a VGGT model.
  Every input is checked (images found and readable, checkpoint present, options, the output directory created
  and writable) before the model runs. ``warn`` (default: ``warning: ...`` on stderr) gets one-line warnings, e.g.
  that ``out`` holds a previous run's outputs, replaced at the end. ``export_formats`` (``"colmap,nerfstudio,splat"``
  or a subset) also writes those exports into ``out/<format>`` (:mod:`gen3r_jax.apps.export`; returned under the
  format's name).
  """
  warn = print_warning if warn is None else warn

  size = check_size(size)
  require(mode in MODES, f"mode must be one of {MODES}, got {mode!r}.")
  require(dtype in DTYPES, f"dtype must be one of {DTYPES}, got {dtype!r}.")
  require(frames_chunk_size is None or (isinstance(frames_chunk_size, int) and frames_chunk_size >= 0),
          f"frames_chunk must be a non-negative integer (0 = all frames at once), got {frames_chunk_size!r}.")
  formats = scene_export.parse_formats(export_formats)
  scene_export.check_export_targets(scene_export.destinations(formats, out))
  paths = find_images(images)
  if isinstance(checkpoint, str):
    check_checkpoint(checkpoint)
  export.ffmpeg_exe()
  t0 = time.time()
  x = load_and_preprocess_images(paths, size, mode)                                 # [S, size, size, 3]
  log(f"[reconstruct] {len(paths)} image(s) -> {x.shape[1]}x{x.shape[2]} ({mode})")
  export.prepare_output_dir(out, expected_bytes=export.output_bytes(len(paths), size, size, max_points), warn=warn)
  if isinstance(checkpoint, str):
    model = VGGT.from_checkpoint(checkpoint, dtype=dtype)
    log(f"[reconstruct] VGGT from {checkpoint} ({dtype})")
  else:
    model = checkpoint
  pred = reconstruct_arrays(model, x, frames_chunk_size=frames_chunk_size, min_max_depth_mask=min_max_depth_mask)
  log(f"[reconstruct] VGGT done ({time.time() - t0:.1f} s); {int(pred['masks'].sum())} valid points")
  meta = {"source": "VGGT feed-forward reconstruction (gen3r_jax.apps.reconstruct)",
          "images": [os.path.abspath(p) for p in paths], "size": size, "mode": mode, "dtype": dtype,
          "checkpoint": os.path.abspath(checkpoint) if isinstance(checkpoint, str) else None,
          "min_max_depth_mask": bool(min_max_depth_mask)}
  files = export.export_all(out, rgb=x, depth=pred["depth"], points=pred["pcds"], masks=pred["masks"],
                            c2w=pred["c2w"], K=pred["intrinsics"], fps=fps, max_points=max_points, meta=meta,
                            source_indices=np.arange(len(paths)),
                            extra_npz={"vggt_predictions.npz": {k: pred[k].astype(np.float32) for k in (
                                "pose_enc", "extrinsics", "intrinsics", "depth_conf", "world_points",
                                "world_points_conf")}})
  log(f"[reconstruct] wrote {', '.join(sorted(files))} to {out}")
  scene = scene_export.scene_from_arrays(rgb=x, depth=pred["depth"], points=pred["pcds"], masks=pred["masks"],
                                         c2w=pred["c2w"], K=pred["intrinsics"], meta=meta, path=out)
  files.update(scene_export.replace_exports(scene, formats, log=log, warn=warn))
  return files
