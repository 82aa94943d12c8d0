"""Readers for PyTorch checkpoints: lazy tensor sources keyed by the original names.

* ``.safetensors`` (single file or a sharded set with ``*.safetensors.index.json``) is read directly, lazily and
  without torch (bf16 through ``ml_dtypes``).
* ``.pth`` / ``.bin`` / ``.pt`` need the optional ``torch`` extra and are always opened with
  ``torch.load(weights_only=True)``, which refuses pickled code.
* :class:`ShapeSource` holds only shapes (from a manifest) for abstract checks.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Mapping

import numpy as np

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _np_dtype(code: str):
  if code == "BF16":
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)
  if code not in _ST_DTYPES:
    raise ValueError(f"unsupported safetensors dtype {code}")
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
      import ml_dtypes
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
      with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
      header.pop("__metadata__", None)
      for k, info in header.items():
        if k in self._index:
          raise ValueError(f"tensor {k!r} appears in both {self._index[k][0]} and {p}")
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


class TorchSource(TensorSource):
  """A ``.pth``/``.bin``/``.pt`` state dict, opened with ``torch.load(weights_only=True)``."""

  def __init__(self, path: str):
    try:
      import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
      raise ImportError(
          f"reading {path} needs PyTorch: pip install 'gen3r-jax[torch]' (or convert the file to "
          ".safetensors first, which needs no torch)") from e
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
      sd = sd["state_dict"]
    if not isinstance(sd, dict):
      raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    self._sd = {k: v for k, v in sd.items() if hasattr(v, "shape")}
    self.description = os.fspath(path)

  def keys(self):
    return list(self._sd)

  def shape(self, key):
    return tuple(self._sd[key].shape)

  def dtype(self, key):
    import torch
    t = self._sd[key]
    if t.dtype == torch.bfloat16:
      import ml_dtypes
      return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(str(t.dtype).replace("torch.", ""))

  def get(self, key):
    import torch
    t = self._sd[key].detach().cpu()
    if t.dtype == torch.bfloat16:
      import ml_dtypes
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
