"""Strict conversion of a PyTorch state dict into NNX parameters, with a full JSON report.

``convert(table, source, targets)`` checks every key:
  * mapped   -> transformed, checked against the target shape, cast to the target dtype;
  * ignored  -> listed with the table's reason;
  * unknown  -> error (strict) / reported;
and every rule / target parameter:
  * missing source key -> error;
  * target parameter no rule fills -> error (a bug in the table);
  * shape after the transform differs from the model -> error.
All problems are collected first, then raised together in one :class:`ConversionError` naming each key.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from gen3r_jax.convert.sources import DictSource, TensorSource
from gen3r_jax.convert.table import MappingTable, Path, path_str
from gen3r_jax.errors import fmt_list


class ConversionError(ValueError):
  def __init__(self, message: str, report: "Report"):
    super().__init__(message)
    self.report = report


@dataclasses.dataclass
class Report:
  model: str
  source: str
  keys: dict[str, dict] = dataclasses.field(default_factory=dict)
  unknown: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)
  misshaped: list[dict] = dataclasses.field(default_factory=list)
  unfilled_targets: list[str] = dataclasses.field(default_factory=list)
  dtype_changes: dict[str, int] = dataclasses.field(default_factory=dict)
  num_params: int = 0

  @property
  def ok(self) -> bool:
    return not (self.unknown or self.missing or self.misshaped or self.unfilled_targets)

  def counts(self) -> dict[str, int]:
    c = collections.Counter(v["fate"] for v in self.keys.values())
    return {"source_keys": len(self.keys), "mapped": c["mapped"], "ignored": c["ignored"],
            "unknown": len(self.unknown), "missing": len(self.missing),
            "misshaped": len(self.misshaped), "unfilled_targets": len(self.unfilled_targets),
            "num_params": self.num_params}

  def to_json(self) -> dict[str, Any]:
    return {"model": self.model, "source": self.source, "ok": self.ok, "counts": self.counts(),
            "unknown": self.unknown, "missing": self.missing, "misshaped": self.misshaped,
            "unfilled_targets": self.unfilled_targets, "dtype_changes": self.dtype_changes,
            "keys": self.keys}

  def write(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.to_json(), f, indent=1, sort_keys=False)

  def summary(self) -> str:
    c = self.counts()
    return (f"{self.model}: {c['source_keys']} source keys -> {c['mapped']} mapped, {c['ignored']} ignored, "
            f"{c['unknown']} unknown, {c['missing']} missing, {c['misshaped']} misshaped; "
            f"{c['num_params']:,} parameters")

  def error_message(self) -> str:
    lines = [f"conversion of {self.model} from {self.source} failed:"]
    if self.unknown:
      lines.append(f"  {len(self.unknown)} unknown key(s) (not in the mapping table or its ignore list): "
                   + fmt_list(self.unknown))
    if self.missing:
      lines.append(f"  {len(self.missing)} missing key(s) the model needs: " + fmt_list(self.missing))
    for m in self.misshaped[:20]:
      lines.append(f"  misshaped: {m['key']} has shape {m['source_shape']} -> {m['converted_shape']} after "
                   f"{m['transform']}, but {m['path']} expects {m['expected']}")
    if len(self.misshaped) > 20:
      lines.append(f"  … and {len(self.misshaped) - 20} more misshaped keys")
    if self.unfilled_targets:
      lines.append("  model parameters no rule fills (mapping table bug): " + fmt_list(self.unfilled_targets))
    lines.append("  (pass strict=False / --nostrict to convert anyway; the JSON report lists every key)")
    return "\n".join(lines)


def param_targets(model_or_state) -> dict[Path, jax.ShapeDtypeStruct]:
  """Flat ``{path: ShapeDtypeStruct}`` of the ``nnx.Param`` leaves of a (possibly abstract) model."""
  state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state, nnx.Param)
  out = {}
  for path, var in nnx.to_flat_state(state):
    v = var.get_value() if hasattr(var, "get_value") else var.value
    out[tuple(path)] = jax.ShapeDtypeStruct(v.shape, v.dtype)
  return out


def convert(table: MappingTable, source: TensorSource | Mapping[str, np.ndarray],
            targets: Mapping[Path, jax.ShapeDtypeStruct], *, strict: bool = True,
            shapes_only: bool = False) -> tuple[dict[Path, np.ndarray], Report]:
  """Convert ``source`` with ``table`` into ``{path: array}`` matching ``targets``.

  With ``shapes_only`` no data is read (manifest checks); the returned dict is then empty.
  """
  if not isinstance(source, TensorSource):
    source = DictSource(source)
  report = Report(table.model, source.description)
  keymap = table.normalize_keys(source.keys())  # source key -> table key
  present = set(keymap.values())

  # Group rules by target path.
  by_path: dict[Path, list] = collections.defaultdict(list)
  for r in table.rules:
    by_path[r.path].append(r)

  for src_key, key in keymap.items():
    rule = table.rule(key)
    if rule is not None:
      report.keys[src_key] = {"fate": "mapped", "path": path_str(rule.path), "transform": rule.transform.name,
                              **({"index": rule.index} if rule.index is not None else {})}
      continue
    reason = table.ignore_reason(key)
    if reason is not None:
      report.keys[src_key] = {"fate": "ignored", "reason": reason}
    else:
      report.keys[src_key] = {"fate": "unknown"}
      report.unknown.append(src_key)

  inv = {v: k for k, v in keymap.items()}
  out: dict[Path, np.ndarray] = {}
  for path, tgt in targets.items():
    rules = by_path.get(path)
    if not rules:
      report.unfilled_targets.append(path_str(path))
      continue
    stacked = rules[0].index is not None
    row_shape = tuple(tgt.shape[1:]) if stacked else tuple(tgt.shape)
    if stacked:
      idx = sorted(r.index for r in rules)
      if idx != list(range(tgt.shape[0])):
        report.unfilled_targets.append(f"{path_str(path)} (rows {idx} for {tgt.shape[0]} layers)")
        continue
    buf = None if shapes_only else np.zeros(tgt.shape, tgt.dtype)
    ok = True
    for r in rules:
      if r.torch_key not in present:
        report.missing.append(r.torch_key)
        ok = False
        continue
      src_key = inv[r.torch_key]
      s_shape = source.shape(src_key)
      try:
        c_shape = r.transform.shape(s_shape)
      except ValueError as e:
        c_shape = f"error: {e}"
      if c_shape != row_shape:
        report.misshaped.append({"key": src_key, "source_shape": list(s_shape), "transform": r.transform.name,
                                 "converted_shape": c_shape if isinstance(c_shape, str) else list(c_shape),
                                 "path": path_str(path) + (f"[{r.index}]" if stacked else ""),
                                 "expected": list(row_shape)})
        ok = False
        continue
      s_dtype = np.dtype(source.dtype(src_key))
      change = f"{s_dtype.name}->{np.dtype(tgt.dtype).name}"
      if s_dtype != np.dtype(tgt.dtype):
        report.dtype_changes[change] = report.dtype_changes.get(change, 0) + 1
      if buf is not None and ok:
        val = r.transform(np.asarray(source.get(src_key))).astype(tgt.dtype)
        if stacked:
          buf[r.index] = val
        else:
          buf[...] = val
    report.num_params += int(np.prod(tgt.shape))
    if ok and buf is not None:
      out[path] = buf
  if strict and not report.ok:
    raise ConversionError(report.error_message(), report)
  return out, report


def update_model(model: nnx.Module, params: Mapping[Path, np.ndarray]) -> None:
  """Write converted ``{path: array}`` into ``model``'s parameters (paths must exist)."""
  flat = [(tuple(p), v) for p, v in params.items()]
  state = nnx.from_flat_state(flat) if hasattr(nnx, "from_flat_state") else nnx.State.from_flat_path(flat)
  nnx.update(model, state)


def load_torch_weights(model: nnx.Module, table: MappingTable,
                       source: TensorSource | Mapping[str, np.ndarray], *, strict: bool = True) -> Report:
  """Convert ``source`` with ``table`` and write it into ``model`` in place; returns the report."""
  params, report = convert(table, source, param_targets(model), strict=strict)
  update_model(model, params)
  return report
