"""Base class for the frozen per-model config dataclasses (JSON round trip, dtype fields as strings).

One vocabulary: a config file's model sub-dict (``config.model.dit``, ``config.model.vggt``, ...) is keyed by the
dataclass's field names, so ``WanDiTConfig.from_dict(config.model.dit, base=WanDiTConfig.wan_1_3b())`` builds the
model config with no renaming in between.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping

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
  def from_dict(cls, d: Mapping[str, Any], *, base: "ModelConfig | None" = None):
    """A config from ``d`` (a dict or ``ConfigDict`` keyed by this dataclass's field names), over ``base`` (a
    preset, e.g. ``WanDiTConfig.wan_1_3b()``; default: the dataclass defaults). An unknown key is a one-line
    :class:`Gen3RInputError` listing the valid ones; lists become tuples, nested dicts nested configs."""
    d = dict(d.items())
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
      raise Gen3RInputError(f"{cls.__name__}: unknown config field(s) {', '.join(map(repr, unknown))}; valid fields: "
                            f"{', '.join(names)}.")
    kw = {}
    for name in names:
      if name not in d:
        continue
      v = d[name]
      if isinstance(v, list):
        v = _to_tuple(v)
      hint = hints.get(name)
      if hasattr(v, "items") and dataclasses.is_dataclass(hint):
        v = hint.from_dict(v, base=getattr(base, name) if base is not None else None)
      kw[name] = v
    return base.replace(**kw) if base is not None else cls(**kw)

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
