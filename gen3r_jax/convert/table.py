"""Mapping tables: ``torch key -> (NNX path, transform[, layer index])``.

One table per model, built from the model's config (so layer counts and optional parts follow the config). The
same table drives conversion, manifest checks, tests and the docs. Keys that the official loader accepts but
Gen3R never uses are listed with :meth:`TableBuilder.ignore` and a reason; anything else is an error.

Paths are NNX state paths written with dots (``"encoder.convs.0.conv.kernel"``); integer components select
list entries. A rule with ``index`` fills one row of a stacked (scanned) parameter whose leading axis is the
layer axis.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from gen3r_jax.convert import transforms as T

Path = tuple[str | int, ...]


def parse_path(path: str | Path) -> Path:
  if isinstance(path, tuple):
    return path
  return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def path_str(path: Path) -> str:
  return ".".join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class Rule:
  torch_key: str
  path: Path
  transform: T.Transform = T.identity
  index: int | None = None  # row of a stacked parameter (leading "layers" axis)


@dataclasses.dataclass(frozen=True)
class Ignore:
  pattern: str  # regular expression, full match
  reason: str

  def matches(self, key: str) -> bool:
    return re.fullmatch(self.pattern, key) is not None


@dataclasses.dataclass
class MappingTable:
  model: str
  rules: list[Rule]
  ignored: list[Ignore]
  # Prefixes the official loaders add or strip: stripped when *every* source key starts with one.
  strip_prefixes: tuple[str, ...] = ()

  def __post_init__(self):
    seen: dict[str, Rule] = {}
    targets: set[tuple[Path, int | None]] = set()
    for r in self.rules:
      if r.torch_key in seen:
        raise ValueError(f"{self.model}: torch key {r.torch_key!r} mapped twice")
      seen[r.torch_key] = r
      tgt = (r.path, r.index)
      if tgt in targets:
        raise ValueError(f"{self.model}: target {path_str(r.path)}[{r.index}] mapped twice")
      targets.add(tgt)
    self._by_key = seen

  def rule(self, key: str) -> Rule | None:
    return self._by_key.get(key)

  def ignore_reason(self, key: str) -> str | None:
    for ig in self.ignored:
      if ig.matches(key):
        return ig.reason
    return None

  def normalize_keys(self, keys: Iterable[str]) -> dict[str, str]:
    """Map source keys to table keys (strip a prefix that every key carries)."""
    keys = list(keys)
    for p in self.strip_prefixes:
      if keys and all(k.startswith(p) for k in keys):
        return {k: k[len(p):] for k in keys}
    return {k: k for k in keys}


class TableBuilder:
  """Small helpers that keep tables short and uniform.

  ``tb.linear("blocks.0.attn.q", "blocks.attn.q", index=0)`` adds ``.weight`` (transposed) and ``.bias``.
  """

  def __init__(self, model: str, strip_prefixes: tuple[str, ...] = ()):
    self.model = model
    self.rules: list[Rule] = []
    self.ignored: list[Ignore] = []
    self.strip_prefixes = strip_prefixes

  def add(self, torch_key: str, path: str | Path, transform: T.Transform = T.identity,
          index: int | None = None) -> "TableBuilder":
    self.rules.append(Rule(torch_key, parse_path(path), transform, index))
    return self

  def _wb(self, torch_prefix, path, w_name, w_t, b_name, bias, index):
    self.add(f"{torch_prefix}.weight", f"{path}.{w_name}", w_t, index)
    if bias:
      self.add(f"{torch_prefix}.bias", f"{path}.{b_name}", T.identity, index)
    return self

  def linear(self, torch_prefix: str, path: str, *, bias: bool = True, index: int | None = None):
    return self._wb(torch_prefix, path, "kernel", T.linear, "bias", bias, index)

  def conv(self, torch_prefix: str, path: str, nd: int, *, bias: bool = True, index: int | None = None):
    t = {1: T.conv1d, 2: T.conv2d, 3: T.conv3d}[nd]
    return self._wb(torch_prefix, path, "kernel", t, "bias", bias, index)

  def norm(self, torch_prefix: str, path: str, *, bias: bool = True, index: int | None = None,
           weight_name: str = "weight", scale_name: str = "scale"):
    self.add(f"{torch_prefix}.{weight_name}", f"{path}.{scale_name}", T.identity, index)
    if bias:
      self.add(f"{torch_prefix}.bias", f"{path}.bias", T.identity, index)
    return self

  def ignore(self, pattern: str, reason: str) -> "TableBuilder":
    self.ignored.append(Ignore(pattern, reason))
    return self

  def build(self) -> MappingTable:
    return MappingTable(self.model, list(self.rules), list(self.ignored), self.strip_prefixes)
