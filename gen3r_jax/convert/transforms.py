"""Named, shape-aware tensor transforms used by the mapping tables (PyTorch layout -> JAX layout).

Each transform knows both how to move the data and what shape it produces, so manifest checks can run on
shapes alone (no full-size arrays are ever materialised for a check).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Transform:
  name: str
  fn: Callable[[np.ndarray], np.ndarray]
  shape_fn: Callable[[Shape], Shape]

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return self.fn(x)

  def shape(self, shape: Shape) -> Shape:
    return tuple(self.shape_fn(tuple(shape)))


def _perm(name: str, perm: tuple[int, ...], rank: int) -> Transform:
  def fn(x):
    if x.ndim != rank:
      raise ValueError(f"{name}: expected rank {rank}, got shape {x.shape}")
    return np.ascontiguousarray(np.transpose(x, perm))

  def shape_fn(s):
    if len(s) != rank:
      raise ValueError(f"{name}: expected rank {rank}, got shape {s}")
    return tuple(s[p] for p in perm)

  return Transform(name, fn, shape_fn)


identity = Transform("identity", lambda x: x, lambda s: s)
# torch Linear [out, in] -> [in, out]
linear = _perm("linear", (1, 0), 2)
# torch Conv1d [O, I, k] -> [k, I, O]
conv1d = _perm("conv1d", (2, 1, 0), 3)
# torch Conv2d [O, I, kh, kw] -> [kh, kw, I, O]
conv2d = _perm("conv2d", (2, 3, 1, 0), 4)
# torch Conv3d [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]
conv3d = _perm("conv3d", (2, 3, 4, 1, 0), 5)


def _flatten(s: Shape) -> Shape:
  return (int(np.prod(s)),)


# Wan RMS gamma [C, 1, 1, 1] / [C, 1, 1] -> [C]; any tensor -> 1-D
flatten = Transform("flatten", lambda x: np.reshape(x, (-1,)), _flatten)


def squeeze_leading(n: int = 1) -> Transform:
  """Drop ``n`` leading singleton axes (e.g. VGGT's ``[1, 1, D]`` tokens -> ``[D]``... as stored)."""

  def fn(x):
    for _ in range(n):
      if x.shape[0] != 1:
        raise ValueError(f"squeeze_leading: axis 0 of {x.shape} is not 1")
      x = x[0]
    return x

  return Transform(f"squeeze_leading({n})", fn, lambda s: s[n:])


def conv1x1_to_linear() -> Transform:
  """torch Conv{1,2,3}d with kernel 1 ``[O, I, 1, ...]`` -> Dense ``[I, O]``."""

  def fn(x):
    if any(d != 1 for d in x.shape[2:]):
      raise ValueError(f"conv1x1_to_linear: kernel is not 1x1: {x.shape}")
    return np.ascontiguousarray(x.reshape(x.shape[0], x.shape[1]).T)

  return Transform("conv1x1_to_linear", fn, lambda s: (s[1], s[0]))


def reshape(shape: Shape, name: str | None = None) -> Transform:
  return Transform(name or f"reshape{tuple(shape)}", lambda x: np.reshape(x, shape), lambda s: tuple(shape))


def chain(*ts: Transform) -> Transform:
  def fn(x):
    for t in ts:
      x = t(x)
    return x

  def shape_fn(s):
    for t in ts:
      s = t.shape(s)
    return s

  return Transform("+".join(t.name for t in ts), fn, shape_fn)
