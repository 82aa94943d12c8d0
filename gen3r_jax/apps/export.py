"""Export a generated (or reconstructed) scene for other tools: COLMAP, nerfstudio, 3D Gaussian splats.

    python launch/export.py outputs/palace --format colmap            # -> outputs/palace/colmap/
    python launch/export.py outputs/palace --format nerfstudio,splat --out /data/palace
    export_output_dir("outputs/palace", "colmap,splat")               # library; returns {format: folder}

The sampler (``--config.export_formats=colmap,splat``) and ``launch/reconstruct.py --export_formats=...`` write the
same folders beside their outputs at the end of the run, from the arrays in memory (no video re-decode), after
removing the previous run's export folders (:func:`replace_exports`); their destinations are checked with the
other inputs, before any model runs.

=============  =========================================================================================
``colmap``     ``images/frame00000.png ...`` + ``sparse/0/{cameras,images,points3D}.txt`` (the project layout
               COLMAP, gsplat and the 3DGS trainers read; :mod:`gen3r_jax.data.colmap`)
``nerfstudio`` ``images/``, ``depths/*.npy``, ``transforms.json`` (OpenGL camera-to-world, per-frame intrinsics,
               depth paths), ``sparse_pc.ply``, ``captions.txt`` and the ``train_*.txt`` lists: a nerfstudio
               dataset and a one-scene dataset folder of our own training layout (:mod:`gen3r_jax.data.nerfstudio`)
``splat``      ``splat.ply``: one 3D Gaussian per point (:mod:`gen3r_jax.data.splat`)
=============  =========================================================================================

Folders: with ``out`` and one format, ``out`` itself; with ``out`` and several, ``out/<format>``; without ``out``,
``<output dir>/<format>``. Each folder is written beside its target and swapped in complete
(:func:`gen3r_jax.atomic.staged_dir`), replacing a previous export of ours, never a folder holding anything else:
the marker ``gen3r_jax_export.json`` lists every file the export wrote (path and size), and a folder is ours only
if it holds exactly those (an old marker without the list: only the file names its format writes). A folder with
anything more (COLMAP's ``dense/`` or ``database.db`` after a reconstruction run inside it, a file changed since)
is a one-line error naming those files, before anything is read. Points: the valid pixels of ``points.npz``
(mask and finite), uniformly subsampled to ``max_points`` (default one million; 0 keeps all) with ``seed``, coloured
by the frames. Camera conventions: ``docs/cameras.md``. Bad input (a directory missing files, an unknown format)
is a one-line :class:`Gen3RInputError` before anything is read or written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Callable, Sequence

import numpy as np

from gen3r_jax.apps.outputs import OutputDir, check_output_dir, load_output_dir
from gen3r_jax.atomic import staged_dir
from gen3r_jax.data.colmap import write_colmap_text
from gen3r_jax.data.nerfstudio import frame_name, save_png, write_nerfstudio_scene
from gen3r_jax.data.splat import write_splat_ply
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.ply import to_uint8
from gen3r_jax.sampling.export import select_indices
from gen3r_jax.sampling.inputs import print_warning


FORMATS = ("colmap", "nerfstudio", "splat")
MARKER = "gen3r_jax_export.json"
DEFAULT_MAX_POINTS = 1_000_000


def parse_formats(spec: str | Sequence[str] | None) -> tuple[str, ...]:
  """``"colmap,splat"`` (or a list) -> ``("colmap", "splat")``; ``""`` / None -> ``()``. Unknown names raise."""
  items = spec.split(",") if isinstance(spec, str) else list(spec or ())
  names = []
  for item in (str(i).strip().lower() for i in items):
    if item and item not in names:
      names.append(item)
  unknown = [n for n in names if n not in FORMATS]
  require(not unknown, f"unknown export format {', '.join(map(repr, unknown))}; choose from {', '.join(FORMATS)} "
                       "(comma-separated for several).")
  return tuple(names)


def destinations(formats: Sequence[str], source_dir: str, out: str | None = None) -> dict[str, str]:
  """Where each format goes (module docstring)."""
  if out and len(formats) == 1:
    return {formats[0]: out}
  base = out or source_dir
  return {f: os.path.join(base, f) for f in formats}


# what a folder of each format held before the marker listed its files (old markers): used to recognise those
_LEGACY_FILES = {
    "colmap": (r"images/frame(\d{5})\.png", r"sparse/0/(cameras|images|points3D)\.txt"),
    "nerfstudio": (r"images/frame(\d{5})\.png", r"depths/frame(\d{5})\.npy", r"transforms\.json", r"sparse_pc\.ply",
                   r"captions\.txt", r"train_(videos_dirs|cameras_paths|captions_paths)\.txt"),
    "splat": (r"splat\.ply",),
}


def folder_entries(path: str) -> dict[str, int | None]:
  """``{relative path: size}`` of every file under ``path`` (``/``-separated; the marker left out), plus every
  empty folder and every link to a folder (``"name/"``, size None): all a folder holds."""
  out = {}
  for root, dirs, files in os.walk(path):
    rel = os.path.relpath(root, path).replace(os.sep, "/")
    pre = "" if rel == "." else rel + "/"
    for d in dirs:
      if os.path.islink(os.path.join(root, d)):
        out[pre + d + "/"] = None
    for f in files:
      out[pre + f] = os.lstat(os.path.join(root, f)).st_size
    if not dirs and not files and pre:
      out[pre] = None
  out.pop(MARKER, None)
  return out


def _read_marker(path: str) -> dict | None:
  try:
    with open(os.path.join(path, MARKER), encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  return data if isinstance(data, dict) else None


def _legacy_ours(name: str, marker: dict) -> bool:
  """Whether ``name`` is a file an export of ``marker['format']`` wrote before markers listed their files."""
  frames = marker.get("frames")
  for pattern in _LEGACY_FILES.get(marker.get("format"), ()):
    m = re.fullmatch(pattern, name)
    if m is not None:
      return not (pattern.startswith(("images/", "depths/")) and isinstance(frames, int) and int(m[1]) >= frames)
  return False


def foreign_files(path: str) -> list[str] | None:
  """What in the folder ``path`` is not part of the export of ours there: ``None`` when it holds no marker (no
  export of ours at all), else the entries the marker does not list, or listed with another size (changed since),
  sorted; ``[]``: the folder is exactly one export of ours. An old marker without a file list counts the file
  names its format writes (``_LEGACY_FILES``) as ours; an unreadable marker counts nothing as ours."""
  if not os.path.isfile(os.path.join(path, MARKER)):
    return None
  marker = _read_marker(path) or {}
  listed = marker.get("files")
  found = folder_entries(path)
  if isinstance(listed, dict):
    return sorted(n for n, size in found.items() if n not in listed or listed[n] != size)
  return sorted(n for n in found if not _legacy_ours(n, marker))


def _names(entries: Sequence[str], limit: int = 5) -> str:
  more = len(entries) - limit
  return ", ".join(entries[:limit]) + (f" and {more} more" if more > 0 else "")


def check_export_target(path: str) -> None:
  """A one-line :class:`Gen3RInputError` unless an export may be written to the folder ``path``: absent, empty, or
  exactly one export of ours (:func:`foreign_files`). Nothing else is ever replaced."""
  path = os.path.realpath(path) if os.path.islink(path) else path
  if os.path.exists(path) and not os.path.isdir(path):
    raise Gen3RInputError(f"{path} is a file; pass a directory as --out.")
  if not os.path.isdir(path) or not os.listdir(path):
    return
  foreign = foreign_files(path)
  if foreign is None:
    raise Gen3RInputError(f"{path} holds files that are not a gen3r_jax export (no {MARKER}); it is never replaced: "
                          "export to a new or empty folder (--out).")
  if foreign:
    raise Gen3RInputError(f"{path} holds files that are not part of the gen3r_jax export there ({_names(foreign)}); "
                          "it is never replaced while it does: move them out of it, or export to another folder "
                          "(--out).")


def check_export_targets(dests: dict[str, str]) -> None:
  """:func:`check_export_target` for every destination folder (before anything is read or computed)."""
  for d in dests.values():
    check_export_target(d)


def check_max_points(max_points) -> int | None:
  ok = isinstance(max_points, (int, np.integer)) and not isinstance(max_points, bool) and max_points >= 0
  require(ok, f"max_points must be a non-negative integer (0 keeps every point), got {max_points!r}.")
  return int(max_points) or None


def scene_from_arrays(*, rgb, depth, points, masks, c2w, K, prompt: str | None = None, meta: dict | None = None,
                      path: str | None = None) -> OutputDir:
  """An :class:`OutputDir` from in-memory arrays (the sampler's and the reconstruction's own outputs)."""
  m = np.ones(np.shape(points)[:3], bool) if masks is None else np.asarray(masks, bool)
  return OutputDir(path=path, rgb=to_uint8(rgb), depth=np.asarray(depth, np.float32).reshape(m.shape),
                   points=np.asarray(points, np.float32), masks=m, c2w=np.asarray(c2w, np.float64),
                   K=np.asarray(K, np.float64), prompt=prompt, meta=dict(meta or {}))


def scene_points(scene: OutputDir, max_points: int | None = None, seed: int = 0):
  """``(xyz [N, 3] float32, rgb [N, 3] uint8, pixels [N, 3] (frame, row, column))`` of the kept points."""
  idx = select_indices(scene.valid(), max_points=max_points, seed=seed)
  fvu = np.stack(np.unravel_index(idx, scene.masks.shape), -1)
  return scene.points.reshape(-1, 3)[idx], scene.rgb.reshape(-1, 3)[idx], fvu


def _write_images(folder: str, rgb: np.ndarray) -> list[str]:
  os.makedirs(folder, exist_ok=True)
  names = [f"{frame_name(i)}.png" for i in range(len(rgb))]
  for name, img in zip(names, rgb):
    save_png(os.path.join(folder, name), img)
  return names


def _write_format(fmt: str, folder: str, scene: OutputDir, pts, cols, fvu, *, opacity: float,
                  sh_degree: int) -> dict:
  if fmt == "colmap":
    names = _write_images(os.path.join(folder, "images"), scene.rgb)
    return write_colmap_text(os.path.join(folder, "sparse", "0"), c2w=scene.c2w, K=scene.K, width=scene.width,
                             height=scene.height, image_names=names, points=pts, colors=cols, pixels=fvu)
  if fmt == "nerfstudio":
    write_nerfstudio_scene(folder, rgb=scene.rgb, c2w=scene.c2w, K=scene.K, depth=scene.depth, masks=scene.masks,
                           prompt=scene.prompt, points=pts, colors=cols)
    return {"images": scene.num_frames, "points": int(len(pts))}
  n = write_splat_ply(os.path.join(folder, "splat.ply"), pts, cols, opacity=opacity, sh_degree=sh_degree)
  return {"gaussians": n}


def export_scene(scene: OutputDir, formats, dests: dict[str, str], *, max_points: int | None = DEFAULT_MAX_POINTS,
                 seed: int = 0, opacity: float = 0.1, sh_degree: int = 0, log: Callable = print) -> dict[str, str]:
  """Write every format of ``formats`` into ``dests[format]`` (module docstring); returns ``{format: folder}``."""
  formats = parse_formats(formats)
  check_export_targets({f: dests[f] for f in formats})
  pts, cols, fvu = scene_points(scene, max_points, seed)
  require(len(pts) > 0 or formats == ("nerfstudio",), f"{scene.path or 'scene'}: no valid point (every pixel is "
                                                      "masked or not finite); nothing to export.")
  written = {}
  for fmt in formats:
    t0 = time.perf_counter()
    with staged_dir(dests[fmt], overwrite=True, is_ours=lambda p: foreign_files(p) == [], what="export",
                    log=log) as tmp:
      counts = _write_format(fmt, tmp, scene, pts, cols, fvu, opacity=opacity, sh_degree=sh_degree)
      with open(os.path.join(tmp, MARKER), "w") as f:
        json.dump({"format": fmt, "source": os.path.abspath(scene.path) if scene.path else None,
                   "frames": scene.num_frames, "size": [scene.height, scene.width], "counts": counts,
                   "max_points": max_points, "seed": seed, "files": folder_entries(tmp)}, f, indent=1)
    written[fmt] = dests[fmt]
    log(f"[export] {fmt}: {', '.join(f'{v} {k}' for k, v in counts.items())} -> {dests[fmt]} "
        f"({time.perf_counter() - t0:.1f} s)")
  return written


def remove_stale_exports(out_dir: str, keep: Sequence[str] = (), *, warn: Callable | None = None,
                         log: Callable = lambda *_: None) -> list[str]:
  """Delete the export folders ``<out_dir>/<format>`` (formats not in ``keep``) of a previous run, so an output
  directory holds one run. Only a folder that is exactly one export of ours goes (:func:`foreign_files`); one that
  also holds other files (e.g. a COLMAP reconstruction run inside it) stays as it is, and ``warn`` (default: a
  ``warning:`` line on stderr) says so. Returns the removed paths."""
  warn = print_warning if warn is None else warn
  removed = []
  for fmt in FORMATS:
    path = os.path.join(out_dir, fmt)
    if fmt in keep or os.path.islink(path) or not os.path.isdir(path):
      continue
    foreign = foreign_files(path)
    if foreign is None:
      continue                                     # not an export of ours: none of our business
    if foreign:
      warn(f"{path} is an export of a previous run but also holds other files ({_names(foreign)}); it is left as "
           "it is and does not describe the new outputs: move those files out and delete it, or re-export it.")
      continue
    shutil.rmtree(path)
    removed.append(path)
    log(f"[export] removed {path} (an export of the previous run)")
  return removed


def replace_exports(scene: OutputDir, formats, *, log: Callable = print, warn: Callable | None = None,
                    **kwargs) -> dict[str, str]:
  """The exports at the end of a sampling / reconstruction run, once its outputs are in ``scene.path``: every export
  folder of the previous run there is removed first (it describes outputs the run has just replaced; a folder
  holding other files stays, with a warning: :func:`remove_stale_exports`), then the ``formats`` of this run are
  written (:func:`export_scene`; ``kwargs`` go to it). So a failed or killed export never leaves the previous
  run's folder looking current, while the run's own outputs stay and can be exported again with
  ``launch/export.py`` (the failure's log line says how). Returns ``{format: folder}``."""
  formats = parse_formats(formats)
  remove_stale_exports(scene.path, warn=warn, log=log)
  if not formats:
    return {}
  try:
    return export_scene(scene, formats, destinations(formats, scene.path), log=log, **kwargs)
  except Exception:
    log(f"[export] failed; the outputs in {scene.path} are complete: export them again with python "
        f"launch/export.py {scene.path} --format {','.join(formats)}")
    raise


def export_output_dir(path: str, formats, out: str | None = None, *, max_points=DEFAULT_MAX_POINTS, seed: int = 0,
                      opacity: float = 0.1, sh_degree: int = 0, log: Callable = print) -> dict[str, str]:
  """What ``launch/export.py`` does: check, read the output directory once, write every format."""
  fmts = parse_formats(formats)
  require(bool(fmts), f"no export format given: pass --format with one or more of {', '.join(FORMATS)}.")
  max_points = check_max_points(max_points) if max_points is not None else None
  require(isinstance(sh_degree, int) and 0 <= sh_degree <= 3, f"sh_degree must be 0..3, got {sh_degree!r}.")
  require(isinstance(opacity, (int, float)) and 0.0 < opacity < 1.0,
          f"opacity must lie in (0, 1), got {opacity!r}.")
  check_output_dir(path)
  dests = destinations(fmts, path, out)
  check_export_targets(dests)
  t0 = time.perf_counter()
  scene = load_output_dir(path)
  log(f"[export] read {path}: {scene.num_frames} frames of {scene.height}x{scene.width}, "
      f"{int(scene.valid().sum())} valid points ({time.perf_counter() - t0:.1f} s)")
  return export_scene(scene, fmts, dests, max_points=max_points, seed=seed, opacity=opacity, sh_degree=sh_degree,
                      log=log)


__all__ = ("FORMATS", "DEFAULT_MAX_POINTS", "parse_formats", "destinations", "scene_from_arrays", "scene_points",
           "export_scene", "export_output_dir", "remove_stale_exports", "replace_exports", "check_max_points",
           "foreign_files", "folder_entries", "check_export_target", "check_export_targets")
