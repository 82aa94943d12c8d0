"""The one place that knows which flax version runs: every version-dependent NNX call goes through here.

flax >= 0.12 names things differently from the 0.10/0.11 releases (``Variable.get_value`` vs ``.value``,
``nnx.from_flat_state`` vs ``State.from_flat_path``, ``nnx.to_pure_dict`` vs ``State.to_pure_dict``, the
logical-axis metadata ``out_sharding`` vs ``sharding_names``). Callers use these functions and never test for
attributes themselves. This module imports nothing from ``gen3r_jax``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from flax import nnx


def value_of(x: Any) -> Any:
  """The value held by an ``nnx.Variable`` (anything else is returned as is)."""
  if isinstance(x, nnx.Variable):
    return x.get_value() if hasattr(x, "get_value") else x.value
  return x


def metadata_of(var: nnx.Variable) -> dict:
  """A variable's metadata dict (empty on flax versions without ``get_metadata``)."""
  return var.get_metadata() if hasattr(var, "get_metadata") else {}


def logical_axes(var: nnx.Variable) -> tuple[str | None, ...] | None:
  """The logical axis names of a variable, whatever flax version stored them."""
  meta = metadata_of(var)
  for key in ("out_sharding", "sharding_names", "sharding"):
    axes = meta.get(key)
    if axes is not None:
      return tuple(axes)
  return None


def from_flat_state(pairs: Iterable[tuple[tuple, Any]]) -> nnx.State:
  """An ``nnx.State`` from ``(path, value)`` pairs (the inverse of ``nnx.to_flat_state``)."""
  pairs = list(pairs)
  return nnx.from_flat_state(pairs) if hasattr(nnx, "from_flat_state") else nnx.State.from_flat_path(pairs)


def to_pure_dict(state: nnx.State) -> dict:
  """A state as nested plain dicts of arrays (no ``Variable`` wrappers)."""
  return nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()


def annotated_param(value: Any, axes: Sequence[str | None]) -> nnx.Param:
  """An ``nnx.Param`` carrying logical ``axes`` as metadata, never placed eagerly."""
  try:  # flax >= 0.12: logical names live in `out_sharding`
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)
  except TypeError:  # older flax
    return nnx.Param(value, sharding_names=axes)
