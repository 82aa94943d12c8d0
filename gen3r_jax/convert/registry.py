"""Which mapping table serves which checkpoint.

Each entry of :data:`MODELS` names a module under ``gen3r_jax/convert/tables/`` that defines
``spec(name: str, config: dict | None = None) -> ModelSpec``. ``name`` is the manifest / component name
(``shared/manifests/<name>.json``); ``config`` a manifest or fixture config dict (``None`` = the released size).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from flax import nnx

from gen3r_jax.convert.table import MappingTable
from gen3r_jax.nn.params import abstract_module

MODELS: dict[str, str] = {
    "wan_vae": "gen3r_jax.convert.tables.wan_vae",
    "geometry_adapter": "gen3r_jax.convert.tables.geometry_adapter",
    "vggt_1b": "gen3r_jax.convert.tables.vggt",
    "wan_dit_1_3b_control_camera": "gen3r_jax.convert.tables.wan_dit",
    "wan_dit_14b_control_camera": "gen3r_jax.convert.tables.wan_dit",
    "umt5_xxl_encoder": "gen3r_jax.convert.tables.umt5",
    "clip_xlm_roberta_vit_h_14": "gen3r_jax.convert.tables.clip",
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  config: Any                              # the model's frozen config dataclass instance
  model_cls: type                          # NNX module class: model_cls(config, rngs=...)
  table: Callable[[Any], MappingTable]     # config -> mapping table

  def build(self, rngs: nnx.Rngs | None = None) -> nnx.Module:
    return self.model_cls(self.config, rngs=rngs or nnx.Rngs(0))

  def abstract(self) -> nnx.Module:
    return abstract_module(lambda: self.model_cls(self.config, rngs=nnx.Rngs(0)))


def get_spec(name: str, config: dict | None = None) -> ModelSpec:
  if name not in MODELS:
    raise KeyError(f"no converter for {name!r}; known: {', '.join(sorted(MODELS))}")
  try:
    mod = importlib.import_module(MODELS[name])
  except ModuleNotFoundError as e:
    raise NotImplementedError(f"the converter table for {name!r} ({MODELS[name]}) is not written yet") from e
  return mod.spec(name, config)
