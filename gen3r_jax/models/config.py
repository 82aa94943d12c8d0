"""Base class for the frozen per-model config dataclasses (JSON round trip, dtype fields as strings)."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import jax.numpy as jnp

from gen3r_jax.errors import Gen3RInputError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
  """``"bfloat16"`` -> ``jnp.bfloat16``, with a clear error for anything else."""
  if name not in DTYPES:
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Frozen dataclass base: ``to_dict``/``from_dict``/``replace``, tuples kept as tuples."""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1)

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    kw = {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"{cls.__name__}: unknown config field(s) {sorted(unknown)}")
    for f in dataclasses.fields(cls):
      if f.name not in d:
        continue
      v = d[f.name]
      if isinstance(v, list):
        v = _to_tuple(v)
      hint = hints.get(f.name)
      if isinstance(v, dict) and dataclasses.is_dataclass(hint):
        v = hint.from_dict(v)
      kw[f.name] = v
    return cls(**kw)

  def replace(self, **kw):
    return dataclasses.replace(self, **kw)

  def require_choice(self, field: str, choices) -> None:
    """A one-line :class:`Gen3RInputError` unless ``self.<field>`` is one of ``choices``."""
    value = getattr(self, field)
    if value not in choices:
      shown = sorted(choices) if isinstance(choices, (dict, set, frozenset)) else tuple(choices)
      raise Gen3RInputError(f"{type(self).__name__}: {field} must be one of {shown}, got {value!r}")


def _to_tuple(v):
  return tuple(_to_tuple(x) if isinstance(x, list) else x for x in v)
