"""Strict conversion of a PyTorch state dict into NNX parameters, with a full JSON report.

``convert(table, source, targets)`` checks every key:
  * mapped   -> transformed, checked against the target shape, cast to the target dtype;
  * ignored  -> listed with the table's reason;
  * unknown  -> error (strict) / reported;
and every rule / target parameter:
  * missing source key -> error;
  * target parameter no rule fills -> error (a bug in the table);
  * shape after the transform differs from the model -> error;
  * an integer / bool tensor where the model has a float parameter -> error (a cast would hide a wrong file);
  * NaN or Inf in a weight -> error unless ``allow_nonfinite`` (then counted in the report).
All problems are collected first, then raised together in one :class:`ConversionError` naming each key; its
first line is a one-line summary naming the keys (and the fix), the following lines the details.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from gen3r_jax.compat import from_flat_state, value_of
from gen3r_jax.convert.sources import DictSource, TensorSource
from gen3r_jax.convert.table import MappingTable, Path, path_str
from gen3r_jax.errors import Gen3RInputError, fmt_list


def _is_float(dtype) -> bool:
  dtype = np.dtype(dtype)
  return dtype.kind == "f" or dtype.name.startswith(("bfloat", "float8"))


class ConversionError(Gen3RInputError):
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
  wrong_dtype: list[dict] = dataclasses.field(default_factory=list)   # integer/bool source, float parameter
  nonfinite: list[dict] = dataclasses.field(default_factory=list)     # {"key", "nan", "inf"}
  nonfinite_allowed: bool = False
  num_params: int = 0

  @property
  def ok(self) -> bool:
    return not (self.unknown or self.missing or self.misshaped or self.unfilled_targets or self.wrong_dtype
                or (self.nonfinite and not self.nonfinite_allowed))

  def counts(self) -> dict[str, int]:
    c = collections.Counter(v["fate"] for v in self.keys.values())
    return {"source_keys": len(self.keys), "mapped": c["mapped"], "ignored": c["ignored"],
            "unknown": len(self.unknown), "missing": len(self.missing),
            "misshaped": len(self.misshaped), "unfilled_targets": len(self.unfilled_targets),
            "wrong_dtype": len(self.wrong_dtype), "nonfinite": len(self.nonfinite),
            "num_params": self.num_params}

  def to_json(self) -> dict[str, Any]:
    return {"model": self.model, "source": self.source, "ok": self.ok, "counts": self.counts(),
            "unknown": self.unknown, "missing": self.missing, "misshaped": self.misshaped,
            "unfilled_targets": self.unfilled_targets, "dtype_changes": self.dtype_changes,
            "wrong_dtype": self.wrong_dtype, "nonfinite": self.nonfinite,
            "nonfinite_allowed": self.nonfinite_allowed, "keys": self.keys}

  def write(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.to_json(), f, indent=1, sort_keys=False)

  def summary(self) -> str:
    c = self.counts()
    return (f"{self.model}: {c['source_keys']} source keys -> {c['mapped']} mapped, {c['ignored']} ignored, "
            f"{c['unknown']} unknown, {c['missing']} missing, {c['misshaped']} misshaped; "
            f"{c['num_params']:,} parameters")

  def headline(self) -> str:
    """One line: what is wrong, naming the (first) keys, and the fix."""
    parts = []
    if self.unknown:
      parts.append(f"{len(self.unknown)} unknown key(s) ({fmt_list(self.unknown, 3)})")
    if self.missing:
      parts.append(f"{len(self.missing)} missing key(s) ({fmt_list(self.missing, 3)})")
    if self.misshaped:
      parts.append(f"{len(self.misshaped)} misshaped key(s) ({fmt_list([m['key'] for m in self.misshaped], 3)})")
    if self.unfilled_targets:
      parts.append(f"{len(self.unfilled_targets)} parameter(s) no rule fills ({fmt_list(self.unfilled_targets, 3)})")
    if self.wrong_dtype:
      parts.append("integer tensor(s) where the model has a float parameter: " + fmt_list(
          [f"{d['key']} ({d['source_dtype']})" for d in self.wrong_dtype], 5)
          + " (a cast would silently change the weights: is this the right file?)")
    if self.nonfinite and not self.nonfinite_allowed:
      parts.append("NaN/Inf in weight(s) " + fmt_list(
          [f"{d['key']} ({d['nan']} NaN, {d['inf']} Inf)" for d in self.nonfinite], 5)
          + " (the file is damaged; pass --allow_nonfinite / allow_nonfinite=True to convert anyway)")
    keys_wrong = self.unknown or self.missing or self.misshaped or self.unfilled_targets
    fix = "; pass --nostrict (strict=False) to convert anyway" if keys_wrong or self.wrong_dtype else ""
    return f"conversion of {self.model} from {self.source} failed: " + "; ".join(parts) + fix

  def error_message(self) -> str:
    lines = [self.headline()]
    if not (self.unknown or self.missing or self.misshaped or self.unfilled_targets):
      return lines[0]
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
    v = value_of(var)
    out[tuple(path)] = jax.ShapeDtypeStruct(v.shape, v.dtype)
  return out


def convert(table: MappingTable, source: TensorSource | Mapping[str, np.ndarray],
            targets: Mapping[Path, jax.ShapeDtypeStruct], *, strict: bool = True,
            shapes_only: bool = False, allow_nonfinite: bool = False) -> tuple[dict[Path, np.ndarray], Report]:
  """Convert ``source`` with ``table`` into ``{path: array}`` matching ``targets``.

  With ``shapes_only`` no data is read (manifest checks); the returned dict is then empty. NaN / Inf values are
  refused (whatever ``strict`` says) unless ``allow_nonfinite``.
  """
  if not isinstance(source, TensorSource):
    source = DictSource(source)
  report = Report(table.model, source.description, nonfinite_allowed=allow_nonfinite)
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
      if _is_float(tgt.dtype) and not _is_float(s_dtype):
        report.wrong_dtype.append({"key": src_key, "source_dtype": s_dtype.name, "path": path_str(path),
                                   "expected": np.dtype(tgt.dtype).name})
        ok = ok and not strict
      if buf is not None and ok:
        val = r.transform(np.asarray(source.get(src_key))).astype(tgt.dtype)
        if _is_float(val.dtype):
          finite = np.isfinite(val)
          if not finite.all():
            nan = int(np.count_nonzero(np.isnan(val)))
            report.nonfinite.append({"key": src_key, "nan": nan, "inf": int(val.size - finite.sum()) - nan})
        if stacked:
          buf[r.index] = val
        else:
          buf[...] = val
    report.num_params += int(np.prod(tgt.shape))
    if ok and buf is not None:
      out[path] = buf
  keys_ok = not (report.unknown or report.missing or report.misshaped or report.unfilled_targets
                 or report.wrong_dtype)
  if (strict and not keys_ok) or (report.nonfinite and not allow_nonfinite):
    raise ConversionError(report.error_message(), report)
  return out, report


def update_model(model: nnx.Module, params: Mapping[Path, np.ndarray]) -> None:
  """Write converted ``{path: array}`` into ``model``'s parameters (paths must exist)."""
  flat = [(tuple(p), v) for p, v in params.items()]
  state = from_flat_state(flat)
  nnx.update(model, state)


def load_torch_weights(model: nnx.Module, table: MappingTable,
                       source: TensorSource | Mapping[str, np.ndarray], *, strict: bool = True,
                       allow_nonfinite: bool = False) -> Report:
  """Convert ``source`` with ``table`` and write it into ``model`` in place; returns the report."""
  params, report = convert(table, source, param_targets(model), strict=strict, allow_nonfinite=allow_nonfinite)
  update_model(model, params)
  return report
