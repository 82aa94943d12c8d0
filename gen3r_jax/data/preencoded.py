"""On-disk format and reader of a stage-2 pre-encoding (written by :mod:`gen3r_jax.training.preencode`).

A finished pre-encoding is a TFDS ``array_record`` dataset folder (see ``docs/data.md``):

```
<out>/gen3r_preencoded-<split>.array_record-XXXXX-of-YYYYY   records, one per clip (splits: train_<dataset> | <split>)
<out>/shards/<file>.json       per-file "done" marker: split, dataset, num_examples, num_bytes, clip table
<out>/preencode.json           format, complete, settings, shapes, per-split clip table (scene, clip, frame_ids)
<out>/empty_context.npy        umT5 encoding of "" [max_length, Dt], in the storage dtype (bfloat16 as uint16)
<out>/dataset_info.json, features.json    TFDS metadata (written last, with complete=True)
```

Each record holds (:func:`features`) the posterior mean and clamped log-variance (not samples) of the clean clip
and of the 1-view / 2-view control videos (:data:`POSTERIOR_KEYS`), the caption context trimmed to its tokens,
the CLIP tokens of frame 0, ``c2ws``, ``Ks``, ``frame_ids``, ``text``, ``dataset``, ``scene`` and ``clip_index``.
Float arrays are stored in the storage dtype; bfloat16 as its uint16 bit pattern (:func:`to_storage`,
:func:`from_storage`). Reading back: :func:`read_metadata`, :class:`PreencodedSource`,
``pipeline.sources_from_preencoded``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from gen3r_jax.errors import require


FORMAT = "gen3r_preencoded v1"
NAME = "gen3r_preencoded"
SETTINGS_FILE = "preencode.json"
EMPTY_CONTEXT_FILE = "empty_context.npy"
SHARD_DIR = "shards"
SIZE = 560                   # the adapter's 40 -> 70 grids are hard-wired to 560 x 560 frames
LATENT = SIZE // 8
STORAGE_DTYPES = ("bfloat16", "float16", "float32")
CONDITIONS = ("", "ctrl_first_", "ctrl_first_last_")     # clean clip, 1-view, 2-view control video
POSTERIOR_KEYS = tuple(f"{c}{m}_{p}" for c in CONDITIONS for m in ("wan", "geo") for p in ("mean", "logvar"))
BATCH_KEYS = (*POSTERIOR_KEYS, "context", "clip_fea", "c2ws", "Ks", "text", "dataset_idx", "dataset_name")


# ---------------------------------------------------------------- storage format

def _np_dtype(name: str):
  return {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32}[name]


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
  """float array -> what the record holds (bfloat16: its uint16 bit pattern)."""
  y = np.ascontiguousarray(np.asarray(x, np.float32).astype(_np_dtype(dtype)))
  return y.view(np.uint16) if dtype == "bfloat16" else y


def from_storage(x: np.ndarray, dtype: str) -> np.ndarray:
  """Inverse of :func:`to_storage`: bfloat16 comes back as ``ml_dtypes.bfloat16`` (``jnp.bfloat16``)."""
  return x.view(_np_dtype(dtype)) if dtype == "bfloat16" else x


def storage_round(x: np.ndarray, dtype: str) -> np.ndarray:
  """``x`` rounded to the storage dtype, as float32."""
  return np.asarray(x, np.float32).astype(_np_dtype(dtype)).astype(np.float32)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """``x [n, D]`` padded with zero rows to ``[rows, D]`` (the stored context is trimmed to its tokens)."""
  return np.concatenate([x, np.zeros((rows - len(x), x.shape[1]), x.dtype)])


def features(shapes: dict[str, list], num_frames: int, dtype: str):
  """The records' TFDS ``FeaturesDict`` (float arrays in the storage dtype, bfloat16 as uint16)."""
  import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use
  t, enc = tfds.features.Tensor, tfds.features.Encoding.BYTES
  sd = np.uint16 if dtype == "bfloat16" else _np_dtype(dtype)
  spec = {k: t(shape=tuple(shapes[k]), dtype=sd, encoding=enc) for k in (*POSTERIOR_KEYS, "context", "clip_fea")}
  spec.update(c2ws=t(shape=(num_frames, 4, 4), dtype=np.float32, encoding=enc),
              Ks=t(shape=(num_frames, 3, 3), dtype=np.float32, encoding=enc),
              frame_ids=t(shape=(num_frames,), dtype=np.int32, encoding=enc),
              text=tfds.features.Text(), dataset=tfds.features.Text(), scene=tfds.features.Text(),
              clip_index=t(shape=(), dtype=np.int32))
  return tfds.features.FeaturesDict(spec)


# ---------------------------------------------------------------- reading back

def read_metadata(directory) -> dict:
  """``preencode.json`` (settings, shapes, per-split clip table) plus ``empty_context [L, Dt]`` in the
  storage dtype (bfloat16 as ``ml_dtypes.bfloat16``); requires a finished pre-encoding."""
  d = Path(directory)
  require((d / SETTINGS_FILE).is_file(), f"{d} holds no pre-encoding ({SETTINGS_FILE} missing); write one with "
          "python launch/preencode.py --source <data> --bundle <ckpt> --out <dir>.")
  meta = json.loads((d / SETTINGS_FILE).read_text())
  require(meta.get("complete", False), f"the pre-encoding in {d} is unfinished; rerun launch/preencode.py with the "
          "same flags (finished shards are skipped) until it reports 'complete'.")
  meta["empty_context"] = np.load(d / EMPTY_CONTEXT_FILE).astype(_np_dtype(meta["settings"]["dtype"]))
  return meta


class PreencodedSource:
  """Random-access pre-encoded clips of one split (``grain.sources.ArrayRecordDataSource``; no TF).

  ``src[i]`` holds the stored arrays (float arrays in the storage dtype, ``context`` padded with zero rows to
  ``max_length``), ``c2ws``, ``Ks``, ``frame_ids``, ``text``, ``dataset``, ``scene``, ``clip_index``.
  """

  preencoded = True

  def __init__(self, directory, split: str):
    import grain  # heavy optional dependency: imported on first use
    import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use
    self.meta = read_metadata(directory)
    info = tfds.builder_from_directory(str(directory)).info
    require(split in info.splits, f"split {split!r} not in {directory}; it has {sorted(info.splits.keys())}.")
    self.split, self.features = split, info.features
    self.dataset = self.meta["splits"][split]["dataset"]
    self.dtype = self.meta["settings"]["dtype"]
    self.max_length = int(self.meta["settings"]["max_length"])
    self._source = grain.sources.ArrayRecordDataSource([os.fspath(p) for p in info.splits[split].filepaths])

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    ex = dict(self.features.deserialize_example_np(self._source[i]))
    for k in (*POSTERIOR_KEYS, "context", "clip_fea"):
      ex[k] = from_storage(ex[k], self.dtype)
    ex["context"] = pad_rows(ex["context"], self.max_length)
    for k in ("text", "dataset", "scene"):
      ex[k] = ex[k].decode("utf-8") if isinstance(ex[k], bytes) else str(ex[k])
    return ex

  def __repr__(self) -> str:
    return f"PreencodedSource({self.split!r}, {len(self)} clips)"


__all__ = ("FORMAT", "NAME", "SETTINGS_FILE", "EMPTY_CONTEXT_FILE", "SHARD_DIR", "SIZE", "STORAGE_DTYPES",
           "CONDITIONS", "POSTERIOR_KEYS", "BATCH_KEYS", "to_storage", "from_storage", "storage_round", "pad_rows",
           "features", "read_metadata", "PreencodedSource")
