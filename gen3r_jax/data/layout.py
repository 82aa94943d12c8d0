"""Reader for the official Gen3R dataset layout (README "Data Preparation"; training-reference §1.1–1.3).

```
<root>/<dataset>/<scene>/images/frameNNNNN.png   any .png/.jpg/.jpeg, sorted by name
<root>/<dataset>/<scene>/captions.txt            one caption per line (usually two)
<root>/<dataset>/<scene>/transforms.json         per-frame w, h, fl_x, fl_y, cx, cy, file_path,
                                                  transform_matrix (4x4 camera-to-world, OpenCV axes; OpenGL
                                                  axes when the file says "camera_axes": "opengl", as our
                                                  nerfstudio export writes: converted to OpenCV on reading)
<root>/<dataset>/train_{videos_dirs,cameras_paths,captions_paths}.txt   line i of each = scene i
<root>/{train,test}_{videos_dirs,cameras_paths,captions_paths}.txt      all scenes of the split
```

List files hold one path per line; blank lines are skipped. A relative path is resolved against the folder of
the list file, then the root, then the working directory (the official code only uses the working directory);
the first that exists wins. Everything here is plain numpy / Python: no JAX, no device work.

A *scene record* is the dict that both the folder reader (:class:`FolderSource`) and the array_record files of
:mod:`gen3r_jax.data.tfds_builder` return, so the pipeline does not care where a scene came from:

  scene        str             scene folder, relative to the root when under it
  dataset      str             dataset folder name ("root" for scenes listed only at the root)
  image_names  [M] str         image file names of ``images/``, sorted (stage-1 frame order)
  images       [M] bytes       the image files as stored (png/jpg bytes; FolderSource reads them on access)
  frame_index  [N] int32       for each transforms.json frame, in file order, its index in image_names
  intrinsics   [N, 6] float64  w, h, fl_x, fl_y, cx, cy per transforms.json frame (native pixels)
  c2w          [N, 4, 4] f64   camera-to-world, OpenCV convention, as stored
  captions     [K] str         the lines of captions.txt as ``readlines`` gives them (ends kept)
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
import re
from typing import Any

from PIL import Image, UnidentifiedImageError
import numpy as np

from gen3r_jax.camera_axes import AXES, OPENCV, to_opencv
from gen3r_jax.errors import Gen3RInputError, fmt_list, require


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LIST_KINDS = ("videos_dirs", "cameras_paths", "captions_paths")
FRAME_KEYS = ("w", "h", "fl_x", "fl_y", "cx", "cy", "file_path", "transform_matrix")

# Stage-2 mixing weights (gen3r/utils/data_utils.py, create_dataset_config). Probabilities are weight / sum.
OFFICIAL_WEIGHTS = {
    "dl3dv": 1.0, "acid": 1.0, "mvimgnet": 0.25, "waymo": 0.5, "co3d": 1.0,
    "re10k": 1.0, "kitti360": 0.5, "vkitti": 0.5, "wildrgbd": 1.0, "tartanair": 1.0,
}
# The README's folder names differ from the keys above (training-reference §5 quirk 5).
WEIGHT_ALIASES = {"realestate10k": "re10k", "co3dv2": "co3d"}


def official_weight(dataset: str, default: float = 1.0) -> float:
  """The official stage-2 weight of a dataset folder (case-insensitive, README aliases), else ``default``."""
  key = dataset.lower()
  return OFFICIAL_WEIGHTS.get(WEIGHT_ALIASES.get(key, key), default)


@dataclasses.dataclass(frozen=True)
class SceneRef:
  """One line of the list files: where a scene's images, cameras and captions are."""
  dataset: str
  images_dir: Path
  cameras_path: Path | None = None
  captions_path: Path | None = None


def read_list(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Path]:
  """Read a list file: one path per line, blank lines skipped, relative paths resolved (module docstring)."""
  path = Path(path)
  require(path.is_file(), f"list file {path} does not exist; write one path per line (see docs/data.md).")
  bases = [path.parent] + ([Path(root)] if root is not None else []) + [Path.cwd()]
  out = []
  with open(path, "r", encoding="utf-8") as f:
    for line in f:
      entry = line.strip()
      if not entry:
        continue
      p = Path(entry)
      if not p.is_absolute():
        p = next((b / p for b in bases if (b / p).exists()), bases[0] / p)
      out.append(p)
  return out


def read_split_lists(folder: str | os.PathLike, split: str, dataset: str, *, root=None,
                     need_cameras: bool = True) -> list[SceneRef]:
  """Read ``<folder>/<split>_{videos_dirs,cameras_paths,captions_paths}.txt`` into aligned scene refs.

  With ``need_cameras=False`` (stage 1, which reads images only) the cameras and captions lists may be absent;
  when present, all given lists must have the same length.
  """
  folder = Path(folder)
  files = {k: folder / f"{split}_{k}.txt" for k in LIST_KINDS}
  require(files["videos_dirs"].is_file(),
          f"{files['videos_dirs']} is missing: every dataset folder needs {split}_videos_dirs.txt "
          "(one images/ folder per line).")
  present = {k: p for k, p in files.items() if p.is_file()}
  if need_cameras or len(present) > 1:
    missing = [str(p) for k, p in files.items() if k not in present]
    require(not missing, f"missing list file(s) {fmt_list(missing)}: the cameras, captions and videos lists "
            "come together (line i of each is the same scene).")
  lists = {k: read_list(p, root) for k, p in present.items()}
  lengths = {f"{split}_{k}.txt": len(v) for k, v in lists.items()}
  require(len(set(lengths.values())) == 1,
          f"list files in {folder} have unequal lengths {lengths}: line i of each must describe the same "
          "scene; remove the extra lines or add the missing ones.")
  n = len(lists["videos_dirs"])
  cams = lists.get("cameras_paths", [None] * n)
  caps = lists.get("captions_paths", [None] * n)
  return [SceneRef(dataset, v, c, t) for v, c, t in zip(lists["videos_dirs"], cams, caps)]


def discover_datasets(root: str | os.PathLike, split: str = "train") -> list[str]:
  """Dataset folders of ``root`` (sub-folders holding ``<split>_videos_dirs.txt``), sorted by name."""
  root = Path(root)
  require(root.is_dir(), f"dataset root {root} is not a folder.")
  return sorted(d.name for d in root.iterdir() if (d / f"{split}_videos_dirs.txt").is_file())


def dataset_refs(root: str | os.PathLike, split: str = "train", datasets: list[str] | None = None,
                 *, need_cameras: bool = True) -> dict[str, list[SceneRef]]:
  """Per-dataset scene refs from ``<root>/<dataset>/<split>_*.txt`` (the stage-2 training lists)."""
  root = Path(root)
  names = discover_datasets(root, split) if datasets is None else list(datasets)
  require(bool(names), f"no dataset folder with {split}_videos_dirs.txt under {root}; see docs/data.md.")
  return {d: read_split_lists(root / d, split, d, root=root, need_cameras=need_cameras) for d in names}


def root_refs(root: str | os.PathLike, split: str, *, need_cameras: bool = False) -> list[SceneRef]:
  """Scene refs of the root lists ``<root>/<split>_*.txt``; the dataset is the owning dataset folder."""
  root = Path(root)
  refs = read_split_lists(root, split, "root", root=root, need_cameras=need_cameras)
  return [dataclasses.replace(r, dataset=_dataset_of(root, r.images_dir)) for r in refs]


def _dataset_of(root: Path, images_dir: Path) -> str:
  try:
    rel = Path(os.path.abspath(images_dir)).relative_to(os.path.abspath(root))
  except ValueError:
    return "root"
  return rel.parts[0] if len(rel.parts) > 2 else "root"


def list_images(images_dir: Path) -> list[str]:
  """Image names as the official stage-1 loader orders them: ``sorted(os.listdir)`` ending .png/.jpg/.jpeg."""
  require(Path(images_dir).is_dir(), f"images folder {images_dir} does not exist (check the videos_dirs list).")
  return [n for n in sorted(os.listdir(images_dir)) if n.endswith(IMAGE_SUFFIXES)]


def read_transforms(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Parse and validate ``transforms.json``.

  Returns:
    intrinsics [N, 6] float64 (w, h, fl_x, fl_y, cx, cy), c2w [N, 4, 4] float64 with OpenCV camera axes (a
    top-level ``"camera_axes": "opengl"``, nerfstudio's convention, is converted; absent means OpenCV, as the
    official data), file names [N] (basenames).
  """
  path = Path(path)
  try:
    with open(path, "r", encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise Gen3RInputError(f"cannot read camera file {path}: {e}. It must be a JSON file with a 'frames' list "
                          "(nerfstudio style, per-frame intrinsics, OpenCV c2w).") from e
  frames = meta.get("frames") if isinstance(meta, dict) else None
  require(isinstance(frames, list) and len(frames) > 0,
          f"{path}: expected a non-empty 'frames' list; each frame needs {fmt_list(FRAME_KEYS)}.")
  axes = meta.get("camera_axes", OPENCV)
  require(axes in AXES, f"{path}: camera_axes must be one of {fmt_list(AXES)}, got {axes!r}.")
  intr, c2w, names = [], [], []
  for i, fr in enumerate(frames):
    missing = [k for k in FRAME_KEYS if not isinstance(fr, dict) or k not in fr]
    require(not missing, f"{path}: frame {i} lacks {fmt_list(missing)}; every frame must carry its own "
            "w, h, fl_x, fl_y, cx, cy (global nerfstudio intrinsics are not read), file_path and transform_matrix.")
    try:
      vals = np.array([float(fr[k]) for k in FRAME_KEYS[:6]], np.float64)
      m = np.array(fr["transform_matrix"], np.float64)
    except (TypeError, ValueError) as e:
      raise Gen3RInputError(f"{path}: frame {i} has a non-numeric intrinsic or transform_matrix ({e}).") from e
    require(m.shape == (4, 4), f"{path}: frame {i} transform_matrix has shape {m.shape}, expected 4x4.")
    require(bool(np.isfinite(m).all() and np.isfinite(vals).all()),
            f"{path}: frame {i} has non-finite intrinsics or transform_matrix.")
    require(vals[0] > 0 and vals[1] > 0 and vals[2] > 0 and vals[3] > 0,
            f"{path}: frame {i} needs positive w, h, fl_x, fl_y, got {vals[:4].tolist()}.")
    require(abs(np.linalg.det(m[:3, :3])) > 1e-8 and np.allclose(m[3], [0, 0, 0, 1], atol=1e-6),
            f"{path}: frame {i} transform_matrix is not an invertible rigid 4x4 (last row must be 0 0 0 1).")
    intr.append(vals)
    c2w.append(to_opencv(m, axes))
    names.append(str(fr["file_path"]).replace("\\", "/").split("/")[-1])
  return np.stack(intr), np.stack(c2w), names


def read_captions(path: Path) -> list[str]:
  """The lines of ``captions.txt`` as ``readlines()`` returns them (the official code picks one at random)."""
  try:
    with open(path, "r", encoding="utf-8") as f:
      lines = f.readlines()
  except OSError as e:
    raise Gen3RInputError(f"cannot read captions file {path}: {e}") from e
  require(len(lines) > 0, f"captions file {path} is empty; write one caption per line.")
  return lines


def decode_image(data: bytes) -> np.ndarray:
  """Decode png/jpg bytes to ``[h, w, 3]`` uint8; alpha is dropped as the official loader does."""
  with Image.open(io.BytesIO(data)) as im:
    if im.mode in ("RGBA", "RGB"):
      arr = np.asarray(im)
      return arr[..., :3]
    return np.asarray(im.convert("RGB"))


def _reason(e: BaseException, limit: int = 200) -> str:
  """One line: the exception's type and the first line of its message."""
  text = str(e).strip().splitlines()
  line = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def image_size(path: Path, scene: str | None = None) -> tuple[int, int]:
  """``(w, h)`` of an image from its header only (PIL reads the first bytes; no pixel decode). A missing,
  empty or non-image file is a :class:`Gen3RInputError` naming the file (and the scene)."""
  try:
    with Image.open(path) as im:
      return tuple(int(v) for v in im.size)
  except Exception as e:  # noqa: BLE001 - PIL raises OSError, UnidentifiedImageError, SyntaxError, ValueError...
    where = f"scene {scene}: " if scene else ""
    raise Gen3RInputError(f"{where}cannot read image {path} ({image_error(e)}); replace the file or remove the "
                          "scene from the list files") from e


def image_error(e: BaseException) -> str:
  """Why PIL could not open or decode an image, in one line without the file name."""
  if isinstance(e, UnidentifiedImageError):
    return "not an image PIL can identify: empty, damaged header or not PNG/JPEG"
  return _reason(e)


def scene_name(ref: SceneRef, root: str | os.PathLike | None = None) -> str:
  """The scene folder (the parent of ``images/``), relative to ``root`` when under it."""
  scene = str(Path(ref.images_dir).parent)
  if root is not None:
    try:
      scene = str(Path(os.path.abspath(Path(ref.images_dir).parent)).relative_to(os.path.abspath(root)))
    except ValueError:
      pass
  return scene


class LazyFiles:
  """``[M]`` file contents read on access (the folder reader's ``images``: a clip reads only its frames)."""

  def __init__(self, paths: list[Path]):
    self.paths = list(paths)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> bytes:
    return self.paths[i].read_bytes()

  def __array__(self, dtype=None, copy=None):
    return np.array([p.read_bytes() for p in self.paths], object)


def load_scene(ref: SceneRef, root: str | os.PathLike | None = None, *, need_cameras: bool = True,
               check_sizes: bool = True, lazy_images: bool = False) -> dict[str, Any]:
  """Read one scene into a scene record (module docstring), validating it.

  Errors (all :class:`Gen3RInputError`): no images, unreadable or malformed transforms.json, a frame whose
  file is missing from ``images/``, a frame whose ``w, h`` differ from its image size (``check_sizes``; reads
  image headers only), an empty captions file. ``lazy_images`` leaves ``images`` as :class:`LazyFiles`.
  """
  names = list_images(ref.images_dir)
  require(len(names) > 0, f"{ref.images_dir} holds no .png/.jpg/.jpeg images.")
  paths = [Path(ref.images_dir) / n for n in names]
  images = LazyFiles(paths) if lazy_images else np.array([p.read_bytes() for p in paths], object)
  scene = scene_name(ref, root)
  rec = dict(scene=scene, dataset=ref.dataset, image_names=np.array(names, object), images=images,
             frame_index=np.zeros([0], np.int32), intrinsics=np.zeros([0, 6]), c2w=np.zeros([0, 4, 4]),
             captions=np.array([], object))
  cams = scene_cameras(ref, scene, names, need_cameras)
  if cams is not None:
    intr, c2w, fnames, index = cams
    index = np.array(index, np.int32)
    if check_sizes:
      for j, i in enumerate(index):
        check_frame_size(scene, j, names[i], intr[j], image_size(paths[i], scene))
    rec.update(frame_index=index, intrinsics=intr, c2w=c2w)
  if ref.captions_path is not None:
    rec["captions"] = np.array(read_captions(ref.captions_path), object)
  return rec


def scene_cameras(ref: SceneRef, scene: str, names: list[str], need_cameras: bool):
  """``(intrinsics, c2w, frame names, their indices into names)`` from the scene's transforms.json, after
  checking that every frame it lists is in ``images/``; ``None`` for a scene without one (an error when
  ``need_cameras``)."""
  if ref.cameras_path is None:
    require(not need_cameras, f"scene {scene} has no transforms.json listed; stage 2 needs cameras.")
    return None
  intr, c2w, fnames = read_transforms(ref.cameras_path)
  lookup = {n: i for i, n in enumerate(names)}
  absent = [f for f in fnames if f not in lookup]
  require(not absent, f"scene {scene}: {ref.cameras_path} lists frame(s) {fmt_list(absent, 5)} that are "
          f"missing from {ref.images_dir}; restore the images or delete those frames from transforms.json.")
  return intr, c2w, fnames, [lookup[f] for f in fnames]


def check_frame_size(scene: str, j: int, name: str, intr: np.ndarray, wh: tuple[int, int]) -> None:
  """The transforms.json ``w, h`` of frame ``j`` must be the size ``wh`` of its image ``name``."""
  require(tuple(wh) == (int(intr[0]), int(intr[1])),
          f"scene {scene}: transforms.json frame {j} says w={intr[0]:g}, h={intr[1]:g} but {name} is "
          f"{wh[0]}x{wh[1]}; the intrinsics must describe the stored images.")


VALIDATE_IMAGES = ("all", "first")


def validate_scene(ref: SceneRef, root: str | os.PathLike | None = None, *,
                   need_cameras: bool = True, images: str = "all") -> dict[str, Any]:
  """Check one scene as cheaply as possible and return ``{dataset, num_images, num_cameras}``.

  Everything :func:`load_scene` checks (images folder present and not empty, transforms.json parses and is
  consistent, every frame it lists is present in ``images/``, captions not empty), plus, from the image *headers*
  only (no pixel is decoded): each frame a clip may use (every image in stage 1, i.e. without ``need_cameras``;
  the transforms.json frames in stage 2) opens as an image, its size equals the transforms.json ``w, h``, and all
  of them have one size; ``images="first"`` reads only the first of those headers (one file per scene, for very
  large datasets; the others are checked when a clip decodes them). Raises :class:`Gen3RInputError` naming the
  scene at the first problem. Damage past an image's header (truncated pixel data) shows only when a clip decodes
  it (:func:`gen3r_jax.data.clips.cut_clip` names the file and the scene).
  """
  require(images in VALIDATE_IMAGES, f"images must be one of {VALIDATE_IMAGES}, got {images!r}.")
  scene = scene_name(ref, root)
  names = list_images(ref.images_dir)
  require(len(names) > 0, f"scene {scene}: {ref.images_dir} holds no .png/.jpg/.jpeg images.")
  used = list(range(len(names)))
  n_cams, intr = 0, None
  cams = scene_cameras(ref, scene, names, need_cameras)
  if cams is not None:
    intr, _, fnames, index = cams
    n_cams = len(fnames)
    if need_cameras:
      used = sorted(set(index))
  if ref.captions_path is not None:
    read_captions(ref.captions_path)
  if images == "first":
    used = used[:1]
  sizes = {i: image_size(Path(ref.images_dir) / names[i], scene) for i in used}
  if intr is not None:
    for j, i in enumerate(index):
      if i in sizes:
        check_frame_size(scene, j, names[i], intr[j], sizes[i])
  distinct = sorted(set(sizes.values()))
  require(len(distinct) == 1, f"scene {scene}: its frames have different sizes "
          f"{fmt_list([f'{w}x{h}' for w, h in distinct], 5)} (e.g. {names[used[0]]} is "
          f"{sizes[used[0]][0]}x{sizes[used[0]][1]}); all frames of a scene must have one size.")
  return dict(dataset=ref.dataset, num_images=len(names), num_cameras=n_cams)


def scene_summary(ref: SceneRef) -> dict[str, Any]:
  """``{dataset, num_images, num_cameras}`` of a scene, validated (:func:`validate_scene`)."""
  return validate_scene(ref, need_cameras=False)


class FolderSource:
  """Random-access source of scene records read straight from the official layout (no conversion).

  Implements ``__len__`` / ``__getitem__`` so ``grain.MapDataset.source`` accepts it. A scene's transforms.json
  and captions are read on access and its images only when a clip decodes them; image sizes are checked
  against the intrinsics on the frames a clip uses (:func:`gen3r_jax.data.clips.cut_clip`).
  """

  def __init__(self, refs: list[SceneRef], root=None, *, need_cameras: bool = True, check_sizes: bool = False):
    self.refs = list(refs)
    self.root = root
    self.need_cameras = need_cameras
    self.check_sizes = check_sizes

  def __len__(self) -> int:
    return len(self.refs)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return load_scene(self.refs[i], self.root, need_cameras=self.need_cameras, check_sizes=self.check_sizes,
                      lazy_images=True)

  def subset(self, keep: list[int]) -> "FolderSource":
    """The same source over the scenes ``keep`` (indices, in that order)."""
    return FolderSource([self.refs[i] for i in keep], self.root, need_cameras=self.need_cameras,
                        check_sizes=self.check_sizes)

  def validate(self, i: int, images: str = "all") -> dict[str, Any]:
    """:func:`validate_scene` of scene ``i`` (header reads only)."""
    return validate_scene(self.refs[i], self.root, need_cameras=self.need_cameras, images=images)

  def scene_name(self, i: int) -> str:
    return scene_name(self.refs[i], self.root)

  def __repr__(self) -> str:
    return f"FolderSource({len(self.refs)} scenes)"


def split_name(dataset: str) -> str:
  """A TFDS-safe split name for a dataset folder (lower case, ``[a-z0-9_]``)."""
  return re.sub(r"[^0-9a-z_]", "_", dataset.lower())
