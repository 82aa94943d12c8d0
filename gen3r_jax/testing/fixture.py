"""Reading a parity fixture directory (``fixture.json`` + safetensors) written by the official PyTorch code."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import numpy as np

from gen3r_jax.convert.sources import SafetensorsSource


def fixtures_root() -> str:
  """``$GEN3R_FIXTURES`` or ``../shared/fixtures`` relative to the project root."""
  env = os.environ.get("GEN3R_FIXTURES")
  if env:
    return env
  here = os.path.dirname(os.path.abspath(__file__))
  return os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "fixtures"))


def _load(path: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    return {}
  src = SafetensorsSource([path])
  return {k: np.array(src.get(k)) for k in src.keys()}


@dataclasses.dataclass
class Fixture:
  path: str
  meta: dict[str, Any]

  @classmethod
  def open(cls, path: str) -> "Fixture":
    path = os.fspath(path)
    fj = os.path.join(path, "fixture.json")
    if not os.path.exists(fj):
      raise FileNotFoundError(f"{fj} not found (GEN3R_FIXTURES={os.environ.get('GEN3R_FIXTURES', '<unset>')})")
    with open(fj) as f:
      return cls(path, json.load(f))

  @property
  def name(self) -> str:
    return self.meta["name"]

  @property
  def config(self) -> dict[str, Any]:
    return self.meta.get("config", {})

  @property
  def calls(self) -> list[dict]:
    return self.meta.get("calls", [])

  @functools.cached_property
  def inputs(self) -> dict[str, np.ndarray]:
    return _load(os.path.join(self.path, "inputs.safetensors"))

  @functools.cached_property
  def outputs(self) -> dict[str, np.ndarray]:
    return _load(os.path.join(self.path, "outputs.safetensors"))

  def weights_source(self, filename: str = "weights.safetensors") -> SafetensorsSource:
    return SafetensorsSource([os.path.join(self.path, filename)])

  def tensor(self, name: str) -> np.ndarray:
    """A stored tensor by name: outputs first, then inputs (outputs a later call consumes live there)."""
    if name in self.outputs:
      return self.outputs[name]
    if name in self.inputs:
      return self.inputs[name]
    raise KeyError(f"{self.name}: tensor {name!r} is in neither outputs nor inputs")

  def has(self, name: str) -> bool:
    return name in self.outputs or name in self.inputs

  def tolerance(self, name: str | None = None) -> tuple[float, float]:
    """``(atol, rtol)`` for an output, understanding the tolerance formats the fixtures use."""
    tol = self.meta.get("tolerance", {})
    if "per_output" in tol and name in tol["per_output"]:
      t = tol["per_output"][name]
      return float(t["atol"]), float(t["rtol"])
    if "default" in tol and isinstance(tol["default"], dict):
      return float(tol["default"]["atol"]), float(tol["default"]["rtol"])
    if "atol" in tol:
      return float(tol["atol"]), float(tol["rtol"])
    if "float32_outputs" in tol:
      return float(tol["float32_outputs"]["atol"]), float(tol["float32_outputs"]["rtol"])
    raise KeyError(f"{self.name}: no tolerance for {name!r}; pass one explicitly")

  def float16_tolerance(self) -> tuple[float, float] | None:
    tol = self.meta.get("tolerance", {})
    for key in ("float16_stored_outputs", "float16_stored"):
      if key in tol:
        return float(tol[key]["atol"]), float(tol[key]["rtol"])
    return None
