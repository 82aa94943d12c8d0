"""The on-disk layout of a converted Gen3R bundle, shared by whoever writes or reads one: the component folders,
the network each holds and the names of the bundle's index and completeness record.

Conversion, loading and random bundles live in :mod:`gen3r_jax.apps.bundle`; the stage-2 pre-encoding
(:mod:`gen3r_jax.training.preencode`) reads single components with :func:`load_component`.
"""

from __future__ import annotations

import importlib
import os

INDEX_FILE = "gen3r_jax_index.json"
RECORD_FILE = "gen3r_jax_complete.json"

# component folder -> (manifest / registry name, model class path)
COMPONENTS: dict[str, tuple[str, str]] = {
    "text_encoder": ("umt5_xxl_encoder", "gen3r_jax.models.umt5.t5:UMT5Encoder"),
    "clip_image_encoder": ("clip_xlm_roberta_vit_h_14", "gen3r_jax.models.clip.model:CLIPVision"),
    "transformer": ("wan_dit_1_3b_control_camera", "gen3r_jax.models.wan_dit.transformer:WanDiT"),
    "wan_vae": ("wan_vae", "gen3r_jax.models.wan_vae.vae:WanVAE"),
    "geo_adapter": ("geometry_adapter", "gen3r_jax.models.geometry_adapter.model:GeometryAdapter"),
    "vggt": ("vggt_1b", "gen3r_jax.models.vggt.model:VGGT"),
}
COPIED = ("tokenizer", "scheduler")


def model_class(path: str):
  """``"package.module:Class"`` -> the class (imported on demand: a bundle reader loads only what it needs)."""
  mod, name = path.split(":")
  return getattr(importlib.import_module(mod), name)


def component_class(component: str):
  """The model class of a bundle component folder (``"vggt"`` -> ``VGGT``)."""
  return model_class(COMPONENTS[component][1])


def load_component(bundle: str, component: str, **kw):
  """One network of a converted bundle: ``<bundle>/<component>`` through its class's ``from_checkpoint(**kw)``."""
  return component_class(component).from_checkpoint(os.path.join(bundle, component), **kw)


__all__ = ("INDEX_FILE", "RECORD_FILE", "COMPONENTS", "COPIED", "model_class", "component_class", "load_component")
