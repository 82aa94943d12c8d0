"""Readers for PyTorch checkpoints: lazy tensor sources keyed by the original names.

* ``.safetensors`` (single file or a sharded set with ``*.safetensors.index.json``) is read directly, lazily and
  without torch (bf16 through ``ml_dtypes``).
* ``.pth`` / ``.bin`` / ``.pt`` need the optional ``torch`` extra and are always opened with
  ``torch.load(weights_only=True)``, which refuses pickled code (zip-format files memory-mapped, legacy
  pre-1.6 files read whole).
* A file that cannot be read (empty, truncated, not a checkpoint, refused pickle) raises
  :class:`~gen3r_jax.errors.Gen3RInputError` naming the file.
* :class:`ShapeSource` holds only shapes (from a manifest) for abstract checks.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

from gen3r_jax.errors import Gen3RInputError

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _np_dtype(code: str):
  if code == "BF16":
    return np.dtype(ml_dtypes.bfloat16)
  if code not in _ST_DTYPES:
    raise Gen3RInputError(f"unsupported safetensors dtype {code}")
  return np.dtype(_ST_DTYPES[code])


class TensorSource:
  """Read-only mapping ``key -> np.ndarray`` that can report shapes without reading data."""

  description = "tensors"

  def keys(self) -> list[str]:
    raise NotImplementedError

  def shape(self, key: str) -> tuple[int, ...]:
    raise NotImplementedError

  def dtype(self, key: str) -> np.dtype:
    raise NotImplementedError

  def get(self, key: str) -> np.ndarray:
    raise NotImplementedError

  def __contains__(self, key: str) -> bool:
    return key in set(self.keys())

  def __len__(self) -> int:
    return len(self.keys())


class DictSource(TensorSource):
  def __init__(self, tensors: Mapping[str, np.ndarray], description: str = "in-memory tensors"):
    self._t = dict(tensors)
    self.description = description

  def keys(self):
    return list(self._t)

  def shape(self, key):
    return tuple(self._t[key].shape)

  def dtype(self, key):
    return np.dtype(self._t[key].dtype)

  def get(self, key):
    return np.asarray(self._t[key])


class ShapeSource(TensorSource):
  """Shapes only (``{key: {"shape": [...], "dtype": "float32"}}`` as in ``shared/manifests``)."""

  def __init__(self, keys: Mapping[str, Mapping], description: str = "manifest"):
    self._k = dict(keys)
    self.description = description

  def keys(self):
    return list(self._k)

  def shape(self, key):
    return tuple(self._k[key]["shape"])

  def dtype(self, key):
    d = self._k[key].get("dtype", "float32")
    if d == "bfloat16":
      return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(d)

  def get(self, key):
    raise TypeError("a ShapeSource has no data (it is for abstract checks)")


class SafetensorsSource(TensorSource):
  """Lazily reads one or more ``.safetensors`` files through memory maps."""

  def __init__(self, paths: Iterable[str]):
    self.paths = [os.fspath(p) for p in paths]
    if not self.paths:
      raise FileNotFoundError("no .safetensors files given")
    self._index: dict[str, tuple[str, dict, int]] = {}
    for p in self.paths:
      n, header = _read_safetensors_header(p)
      for k, info in header.items():
        if k in self._index:
          raise Gen3RInputError(f"tensor {k!r} appears in both {self._index[k][0]} and {p}")
        self._index[k] = (p, info, 8 + n)
    self.description = ", ".join(self.paths)
    self._maps: dict[str, np.memmap] = {}

  def keys(self):
    return list(self._index)

  def shape(self, key):
    return tuple(self._index[key][1]["shape"])

  def dtype(self, key):
    return _np_dtype(self._index[key][1]["dtype"])

  def get(self, key):
    path, info, base = self._index[key]
    if path not in self._maps:
      self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
    start, end = info["data_offsets"]
    buf = self._maps[path][base + start: base + end]
    return np.frombuffer(buf, dtype=self.dtype(key)).reshape(self.shape(key))


def _read_safetensors_header(path: str) -> tuple[int, dict]:
  """The header of a ``.safetensors`` file, checked against the file's size (empty and truncated files are
  refused, naming the file)."""
  size = os.path.getsize(path)
  fix = "re-download or re-export it"
  if size < 8:
    raise Gen3RInputError(f"{path}: {'empty' if size == 0 else 'truncated'} .safetensors file ({size} bytes); {fix}")
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > size - 8:
      raise Gen3RInputError(f"{path}: truncated or not a .safetensors file (its header claims {n} bytes, the file "
                            f"has {size}); {fix}")
    raw = f.read(n)
  try:
    header = json.loads(raw)
    if not isinstance(header, dict):
      raise ValueError("not a JSON object")
  except (ValueError, UnicodeDecodeError) as e:
    raise Gen3RInputError(f"{path}: corrupt .safetensors header ({e}); {fix}") from e
  header.pop("__metadata__", None)
  data = size - 8 - n
  for k, info in header.items():
    try:
      dt = _np_dtype(info["dtype"])
      shape = [int(d) for d in info["shape"]]
      start, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as e:
      raise Gen3RInputError(f"{path}: corrupt .safetensors header entry for {k!r} ({e}); {fix}") from e
    if end > data:
      raise Gen3RInputError(f"{path}: truncated .safetensors file: tensor {k!r} ends at byte {8 + n + end}, the "
                            f"file has {size}; {fix}")
    if end - start != int(np.prod(shape, dtype=np.int64)) * dt.itemsize or start < 0:
      raise Gen3RInputError(f"{path}: corrupt .safetensors file: tensor {k!r} of shape {shape} {info['dtype']} "
                            f"has {end - start} bytes; {fix}")
  return n, header


def torch_load(path: str):
  """``torch.load(path, weights_only=True)`` on CPU: memory-mapped for zip-format files, read whole for the
  legacy (pre-1.6, non-zip) format, which ``mmap`` cannot take. Refusals and unreadable files raise
  :class:`Gen3RInputError` naming the file."""
  try:
    import torch  # heavy optional package (the [torch] extra)
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"reading {path} needs PyTorch: pip install 'gen3r-jax[torch]' (or convert the file to "
        ".safetensors first, which needs no torch)") from e
  if os.path.getsize(path) == 0:
    raise Gen3RInputError(f"{path}: empty file (0 bytes); re-download it")
  is_zip = zipfile.is_zipfile(path)
  try:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
  except pickle.UnpicklingError as e:
    text = str(e)
    if "weights only load failed" in text.lower() and "unsupported operand" not in text.lower():
      g = re.search(r"GLOBAL (\S+) was not an allowed global", text)
      raise Gen3RInputError(
          f"{path}: refused: the file holds code (pickled Python objects{f' such as {g[1]}' if g else ''}), not "
          "only tensors, and torch.load(weights_only=True) does not run code; if you trust it, load it with torch "
          "yourself and save its state_dict (torch.save(sd) or safetensors)") from e
    raise Gen3RInputError(f"{path}: truncated or not a PyTorch checkpoint (unreadable pickle data); "
                          "re-download it") from e
  except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError, ... for damaged files
    first = (str(e).strip().splitlines() or [""])[0].split(". ")[0] or type(e).__name__
    if isinstance(e, KeyError):
      first = f"{type(e).__name__} {e}"
    raise Gen3RInputError(f"{path}: truncated or not a PyTorch checkpoint ({first}); re-download it") from e


class TorchSource(TensorSource):
  """A ``.pth``/``.bin``/``.pt`` state dict, opened with ``torch.load(weights_only=True)``."""

  def __init__(self, path: str):
    sd = torch_load(path)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
      sd = sd["state_dict"]
    if not isinstance(sd, dict):
      raise Gen3RInputError(f"{path}: expected a state dict, got {type(sd).__name__}")
    self._sd = {k: v for k, v in sd.items() if hasattr(v, "shape")}
    self.description = os.fspath(path)

  def keys(self):
    return list(self._sd)

  def shape(self, key):
    return tuple(self._sd[key].shape)

  def dtype(self, key):
    import torch  # heavy optional package (the [torch] extra)
    t = self._sd[key]
    if t.dtype == torch.bfloat16:
      return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(str(t.dtype).replace("torch.", ""))

  def get(self, key):
    import torch  # heavy optional package (the [torch] extra)
    t = self._sd[key].detach().cpu()
    if t.dtype == torch.bfloat16:
      return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def open_source(path: str) -> TensorSource:
  """Open a checkpoint file or directory as a :class:`TensorSource`.

  A directory is searched for ``*.safetensors.index.json`` (sharded), then ``*.safetensors``, then a single
  ``.pth``/``.bin``/``.pt`` file.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if os.path.isdir(path):
    names = sorted(os.listdir(path))
    idx = [n for n in names if n.endswith(".safetensors.index.json")]
    if idx:
      with open(os.path.join(path, idx[0])) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
      missing = [fn for fn in files if not os.path.exists(os.path.join(path, fn))]
      if missing:
        raise FileNotFoundError(f"{path}: the index {idx[0]} names missing shard(s): {', '.join(missing)}")
      return SafetensorsSource([os.path.join(path, fn) for fn in files])
    st = [n for n in names if n.endswith(".safetensors")]
    if st:
      return SafetensorsSource([os.path.join(path, n) for n in st])
    pt = [n for n in names if n.endswith((".pth", ".bin", ".pt"))]
    if len(pt) == 1:
      return TorchSource(os.path.join(path, pt[0]))
    raise FileNotFoundError(
        f"{path}: no .safetensors or single .pth/.bin file found (found: {', '.join(names) or 'nothing'})")
  if path.endswith(".safetensors"):
    return SafetensorsSource([path])
  if path.endswith(".safetensors.index.json"):
    return open_source(os.path.dirname(path) or ".")
  if path.endswith((".pth", ".bin", ".pt")):
    return TorchSource(path)
  raise ValueError(f"{path}: unknown checkpoint format (expected .safetensors, .pth, .bin or .pt)")


class PrefixedSource(TensorSource):
  """The keys of ``base`` that start with ``prefix``, with the prefix removed (one model of a bundle)."""

  def __init__(self, base: TensorSource, prefix: str):
    self.base, self.prefix = base, prefix
    self._keys = [k[len(prefix):] for k in base.keys() if k.startswith(prefix)]
    self.description = f"{base.description} [{prefix}*]"

  def keys(self):
    return list(self._keys)

  def shape(self, key):
    return self.base.shape(self.prefix + key)

  def dtype(self, key):
    return self.base.dtype(self.prefix + key)

  def get(self, key):
    return self.base.get(self.prefix + key)
