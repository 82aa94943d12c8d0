"""TFDS builder: an official-layout root → ``array_record`` scene records, readable without TensorFlow.

``python -m gen3r_jax.data.tfds_builder --root <dataset root> --out <data_dir>`` writes
``<data_dir>/gen3r_scenes/1.0.0/gen3r_scenes-<split>.array_record-*`` with one record per scene (the scene
record of :mod:`gen3r_jax.data.layout`: raw image bytes, per-frame intrinsics and c2w, caption lines, dataset
name). TFDS 4.9 writes and reads these without TensorFlow as long as no feature needs a TF op to encode, so
images are stored as their original file bytes (``Tensor(dtype=object)``), not ``tfds.features.Image``
(whose PNG encoder calls ``tf.image``). Records are read back with ``grain.sources.ArrayRecordDataSource`` and
the feature spec's numpy deserialiser (:class:`RecordSource`).

Splits: ``train_<dataset>`` for each dataset folder's ``train_*.txt`` (stage 2 mixes these; stage 1 uses all of
them), ``train_root`` for scenes of the root ``train_*.txt`` that no dataset list holds (absent when empty) and
``test`` for the root ``test_*.txt``. Per-split scene lengths are kept in the dataset metadata so that clip
length problems are reported before training starts.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from gen3r_jax.data import layout
from gen3r_jax.errors import require


NAME = "gen3r_scenes"
VERSION = "1.0.0"


def _features():
  import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use
  t = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      "scene": tfds.features.Text(),
      "dataset": tfds.features.Text(),
      "image_names": t(shape=(None,), dtype=np.object_),
      "images": t(shape=(None,), dtype=np.object_),
      "frame_index": t(shape=(None,), dtype=np.int32),
      "intrinsics": t(shape=(None, 6), dtype=np.float64, encoding=tfds.features.Encoding.BYTES),
      "c2w": t(shape=(None, 4, 4), dtype=np.float64, encoding=tfds.features.Encoding.BYTES),
      "captions": t(shape=(None,), dtype=np.object_),
  })


def plan_splits(root: str | os.PathLike) -> dict[str, list[layout.SceneRef]]:
  """Which scenes go to which split (module docstring); validates the list files."""
  root = Path(root)
  plan: dict[str, list[layout.SceneRef]] = {}
  seen = set()
  for d, refs in (layout.dataset_refs(root, "train") if layout.discover_datasets(root) else {}).items():
    name = f"train_{layout.split_name(d)}"
    require(name not in plan, f"dataset folders map to the same split {name!r}; rename one of them.")
    plan[name] = refs
    seen.update(os.path.abspath(r.images_dir) for r in refs)
  if (root / "train_videos_dirs.txt").is_file():
    extra = [r for r in layout.root_refs(root, "train") if os.path.abspath(r.images_dir) not in seen]
    if extra:
      plan["train_root"] = extra
  if (root / "test_videos_dirs.txt").is_file():
    plan["test"] = layout.root_refs(root, "test")
  require(bool(plan), f"{root} holds no list files (train_videos_dirs.txt in dataset folders or at the root).")
  return plan


@functools.lru_cache(maxsize=None)
def _make_builder_class():
  import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use

  class Gen3RScenes(tfds.core.GeneratorBasedBuilder):
    """Gen3R scenes in the official layout, one record per scene (see module docstring)."""

    name = NAME
    VERSION = tfds.core.Version(VERSION)
    # No checksums file: TFDS would look it up beside the code through `importlib_resources`, which TFDS
    # uses without declaring it (absent here); a builder with nothing to download needs none.
    code_path = None

    def __init__(self, *, root: str | os.PathLike | None = None, check_sizes: bool = True, **kwargs):
      self._root = root
      self._check_sizes = check_sizes
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=_features(), metadata=tfds.core.MetadataDict(),
                                   description="Gen3R training scenes (official layout).",
                                   disable_shuffling=True)  # record i = line i of the list (index relies on it)

    def _split_generators(self, dl_manager):
      require(self._root is not None, "Gen3RScenes needs root=<dataset root> to generate.")
      plan = plan_splits(self._root)
      index = {}
      for split, refs in plan.items():
        index[split] = [dict(dataset=r.dataset, num_images=len(layout.list_images(r.images_dir)),
                             num_cameras=(len(layout.read_transforms(r.cameras_path)[2])
                                          if r.cameras_path is not None else 0)) for r in refs]
      self.info.metadata["index"] = index
      return {split: self._generate_examples(refs, split.startswith("train_") and split != "train_root")
              for split, refs in plan.items()}

    def _generate_examples(self, refs, need_cameras):
      for i, ref in enumerate(refs):
        rec = layout.load_scene(ref, self._root, need_cameras=need_cameras, check_sizes=self._check_sizes)
        yield f"{i:09d}", rec

  return Gen3RScenes


def build(root: str | os.PathLike, out_dir: str | os.PathLike, *, check_sizes: bool = True,
          overwrite: bool = False) -> Path:
  """Write the array_record dataset of ``root`` under ``out_dir``; returns the versioned dataset folder.

  An existing dataset in ``out_dir`` is kept as is (TFDS reuses it) unless ``overwrite``.
  """
  import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use

  cls = _make_builder_class()
  builder = cls(root=str(root), check_sizes=check_sizes, data_dir=str(out_dir), file_format="array_record")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
  return Path(builder.data_dir)


def _as_str(x: Any) -> str:
  return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)


class RecordSource:
  """Random-access scene records of one split, read with ``grain.sources.ArrayRecordDataSource`` (no TF).

  ``len(src)`` scenes; ``src[i]`` is a scene record (the layout module's dict; strings are ``str``).
  ``src.index`` lists ``{dataset, num_images, num_cameras}`` per record without reading it.
  """

  def __init__(self, dataset_dir: str | os.PathLike, split: str):
    import grain  # heavy optional dependency: imported on first use
    import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use

    dataset_dir = Path(dataset_dir)
    require((dataset_dir / "dataset_info.json").is_file(),
            f"{dataset_dir} is not a built dataset folder (no dataset_info.json); run "
            "python -m gen3r_jax.data.tfds_builder --root <root> --out <dir> first.")
    info = tfds.builder_from_directory(str(dataset_dir)).info
    require(split in info.splits, f"split {split!r} not in {dataset_dir}; it has {sorted(info.splits.keys())}.")
    self.split = split
    self.features = info.features
    self.index = list(info.metadata.get("index", {}).get(split, []))
    paths = [os.fspath(p) for p in info.splits[split].filepaths]
    self._source = grain.sources.ArrayRecordDataSource(paths)
    require(len(self._source) == len(self.index) or not self.index,
            f"{dataset_dir}: split {split} holds {len(self._source)} records but its index lists "
            f"{len(self.index)}; rebuild the dataset.")

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    ex = self.features.deserialize_example_np(self._source[i])
    out = dict(ex)
    out["scene"], out["dataset"] = _as_str(ex["scene"]), _as_str(ex["dataset"])
    out["image_names"] = np.array([_as_str(s) for s in ex["image_names"]], object)
    out["captions"] = np.array([_as_str(s) for s in ex["captions"]], object)
    out["images"] = np.array([bytes(b) for b in ex["images"]], object)
    return out

  def __repr__(self) -> str:
    return f"RecordSource({self.split!r}, {len(self)} scenes)"


def dataset_dir(out_dir: str | os.PathLike) -> Path:
  """The versioned folder ``build`` writes under ``out_dir``."""
  return Path(out_dir) / NAME / VERSION


def splits(dataset_dir_: str | os.PathLike) -> list[str]:
  """Split names of a built dataset folder."""
  import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use
  return sorted(tfds.builder_from_directory(str(dataset_dir_)).info.splits.keys())


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description="Convert an official Gen3R dataset root to array_record.")
  p.add_argument("--root", required=True, help="dataset root (holds the train_/test_ list files)")
  p.add_argument("--out", required=True, help="TFDS data_dir to write into")
  p.add_argument("--no-check-sizes", action="store_true", help="skip the transforms.json w/h vs image check")
  p.add_argument("--overwrite", action="store_true", help="regenerate an existing dataset in --out")
  a = p.parse_args(argv)
  path = build(a.root, a.out, check_sizes=not a.no_check_sizes, overwrite=a.overwrite)
  print(f"wrote {path}: splits {splits(path)}")


if __name__ == "__main__":
  main()
