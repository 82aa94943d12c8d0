"""A whole Gen3R checkpoint: conversion of the official directory layout, loading, and random bundles.

Official layout (``Gen3RPipeline.save_pretrained``)::

    model_index.json  tokenizer/  text_encoder/  transformer/  clip_image_encoder/  wan_vae/  geo_adapter/  vggt/
    scheduler/scheduler_config.json

Converted layout (written by :func:`convert_bundle` / ``launch/convert.py --source``)::

    <out>/gen3r_jax_index.json              components, their manifest names and the conversion summary
    <out>/<component>/{params/, config.json, conversion_report.json}   one Orbax checkpoint per network
    <out>/tokenizer/                        copied as is (SentencePiece ``spiece.model`` + configs)
    <out>/scheduler/scheduler_config.json   copied as is

Configs: the official loaders read ``config.json`` for the text encoder, the DiT and the geometry adapter, but
hard-code the Wan VAE width (96), the CLIP tower (ViT-H/14) and VGGT-1B. We do the same, except that the widths
the weights reveal unambiguously (VAE base width, the DiT's CLIP projection width) are read from the tensor shapes,
and ``overrides`` (component -> config dict) replace the defaults for non-release checkpoints (the tiny fixture).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable

from gen3r_jax.convert.checkpoint import REPORT_FILE, save_params
from gen3r_jax.convert.core import ConversionError, Report, convert, param_targets
from gen3r_jax.convert.registry import get_spec
from gen3r_jax.convert.sources import TensorSource, open_source
from gen3r_jax.errors import Gen3RInputError

INDEX_FILE = "gen3r_jax_index.json"

# component folder -> (manifest / registry name, model class path)
COMPONENTS: dict[str, tuple[str, str]] = {
    "text_encoder": ("umt5_xxl_encoder", "gen3r_jax.models.wan.t5:UMT5Encoder"),
    "clip_image_encoder": ("clip_xlm_roberta_vit_h_14", "gen3r_jax.models.wan.clip:CLIPVision"),
    "transformer": ("wan_dit_1_3b_control_camera", "gen3r_jax.models.wan.transformer:WanDiT"),
    "wan_vae": ("wan_vae", "gen3r_jax.models.wan.vae:WanVAE"),
    "geo_adapter": ("geometry_adapter", "gen3r_jax.models.adapter.geometry_adapter:GeometryAdapter"),
    "vggt": ("vggt_1b", "gen3r_jax.models.vggt.model:VGGT"),
}
COPIED = ("tokenizer", "scheduler")
_META_KEYS = ("_class_name", "_diffusers_version", "note")


def _model_class(path: str):
  import importlib
  mod, name = path.split(":")
  return getattr(importlib.import_module(mod), name)


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise Gen3RInputError(f"{path}: not valid JSON ({e}); re-download the checkpoint") from e


def _shape(src: TensorSource, key: str) -> tuple[int, ...] | None:
  for k in (key, "model." + key):
    if k in set(src.keys()):
      return src.shape(k)
  return None


def official_config(component: str, folder: str, src: TensorSource, override: dict | None) -> dict | None:
  """The config dict to build ``component`` from (``None`` = the released full size)."""
  cfg_path = os.path.join(folder, "config.json")
  official = {k: v for k, v in (_read_json(cfg_path) if os.path.exists(cfg_path) else {}).items()
              if k not in _META_KEYS}
  if component == "wan_vae":
    cfg = dict(override or {})
    if "base_dim" not in cfg and "inner" not in cfg:
      shape = _shape(src, "encoder.conv1.weight")  # [dim, 3, 3, 3, 3]
      if shape is not None:
        cfg["base_dim"] = int(shape[0])
    return cfg or None
  if component == "transformer":
    cfg = {**official, **(override or {})}
    shape = _shape(src, "img_emb.proj.0.weight")  # LayerNorm(clip_dim)
    return cfg, ({"clip_dim": int(shape[0])} if shape is not None else {})
  if component in ("text_encoder", "geo_adapter"):
    return {**official, **(override or {})} or None
  # clip_image_encoder, vggt: the official classes take no (or an informative) config
  return override or None


def _spec(component: str, config):
  name, _ = COMPONENTS[component]
  if component == "transformer":
    from gen3r_jax.convert.tables import wan_dit
    from gen3r_jax.models.wan.dit_config import WanDiTConfig
    cfg, extra = config
    dit_cfg = WanDiTConfig.from_fixture(cfg, **extra)
    if dit_cfg.dim == 5120:
      name = "wan_dit_14b_control_camera"
    return wan_dit.spec(name, dit_cfg)
  return get_spec(name, config)


def convert_model(name_or_spec, source: str | TensorSource, out: str, *, config: dict | None = None,
                  strict: bool = True, overwrite: bool = False, log: Callable = print) -> Report:
  """Convert one network: ``source`` (file / directory / TensorSource) -> Orbax checkpoint in ``out``."""
  t0 = time.time()
  spec = get_spec(name_or_spec, config) if isinstance(name_or_spec, str) else name_or_spec
  src = open_source(source) if isinstance(source, str) else source
  log(f"[convert] {spec.name}: {src.description} ({len(src)} tensors)")
  os.makedirs(out, exist_ok=True)
  try:
    params, report = convert(spec.table(spec.config), src, param_targets(spec.abstract()), strict=strict)
  except ConversionError as e:
    e.report.write(os.path.join(out, REPORT_FILE))
    raise
  report.write(os.path.join(out, REPORT_FILE))
  save_params(out, params, config=spec.config.to_dict(), overwrite=overwrite)
  log(f"[convert] {report.summary()} ({time.time() - t0:.1f} s)")
  return report


def check_bundle_source(source_dir: str) -> None:
  """Refuse a checkpoint directory with a missing part, naming it."""
  if not os.path.isdir(source_dir):
    raise Gen3RInputError(f"{source_dir}: not a directory; pass the Gen3R checkpoint folder (the one holding "
                          "model_index.json)")
  missing = [c for c in (*COMPONENTS, *COPIED) if not os.path.isdir(os.path.join(source_dir, c))]
  if not os.path.exists(os.path.join(source_dir, "model_index.json")):
    missing.insert(0, "model_index.json")
  if missing:
    raise Gen3RInputError(f"{source_dir}: incomplete Gen3R checkpoint, missing {', '.join(missing)}; "
                          "download the full checkpoint directory")


def convert_bundle(source_dir: str, out_dir: str, *, overrides: dict[str, dict] | None = None,
                   strict: bool = True, overwrite: bool = False, components=None,
                   log: Callable = print) -> dict[str, Report]:
  """Convert an official Gen3R checkpoint directory (see module docstring). Returns the reports."""
  check_bundle_source(source_dir)
  overrides = overrides or {}
  unknown = set(overrides) - set(COMPONENTS)
  if unknown:
    raise Gen3RInputError(f"overrides for unknown component(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
  if os.path.exists(os.path.join(out_dir, INDEX_FILE)) and not overwrite:
    raise FileExistsError(f"{out_dir} already holds a converted checkpoint; pass overwrite=True (--overwrite)")
  os.makedirs(out_dir, exist_ok=True)
  reports, index = {}, {"format": "gen3r_jax bundle v1", "source": os.path.abspath(source_dir), "components": {}}
  for comp in components or COMPONENTS:
    folder = os.path.join(source_dir, comp)
    src = open_source(folder)
    spec = _spec(comp, official_config(comp, folder, src, overrides.get(comp)))
    reports[comp] = convert_model(spec, src, os.path.join(out_dir, comp), strict=strict, overwrite=overwrite,
                                  log=log)
    index["components"][comp] = {"model": spec.name, "class": COMPONENTS[comp][1],
                                 "counts": reports[comp].counts()}
  for comp in COPIED:
    dst = os.path.join(out_dir, comp)
    if os.path.exists(dst):
      shutil.rmtree(dst)
    shutil.copytree(os.path.join(source_dir, comp), dst)
  with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
    json.dump(index, f, indent=1)
  log(f"[convert] wrote {out_dir}")
  return reports


def convert_any(source: str, out: str, *, model: str | None = None, config: dict | None = None,
                overrides: dict | None = None, strict: bool = True, overwrite: bool = False,
                log: Callable = print):
  """What ``launch/convert.py`` does: one network (``model`` given) or a whole Gen3R checkpoint directory."""
  if not os.path.exists(source):
    raise Gen3RInputError(f"{source}: no such file or directory")
  if model:
    return convert_model(model, source, out, config=config, strict=strict, overwrite=overwrite, log=log)
  if not os.path.isdir(source):
    raise Gen3RInputError(f"{source} is a file: pass --model <name> to convert one network, or the Gen3R "
                          "checkpoint directory to convert everything")
  return convert_bundle(source, out, overrides=overrides, strict=strict, overwrite=overwrite, log=log)


@dataclasses.dataclass
class Gen3RBundle:
  """Every piece Gen3R sampling needs. Set a field to ``None`` to release that model's memory."""
  tokenizer: Any = None
  text_encoder: Any = None
  clip: Any = None
  transformer: Any = None
  vae: Any = None
  geo_adapter: Any = None
  vggt: Any = None
  scheduler_config: dict | None = None


_FIELDS = {"text_encoder": "text_encoder", "clip_image_encoder": "clip", "transformer": "transformer",
           "wan_vae": "vae", "geo_adapter": "geo_adapter", "vggt": "vggt"}


def check_bundle(directory: str) -> None:
  if not os.path.isdir(directory):
    raise Gen3RInputError(f"checkpoint {directory!r} not found; convert one with `python launch/convert.py "
                          "--source <Gen3R checkpoint> --out <dir>`")
  if not os.path.exists(os.path.join(directory, INDEX_FILE)):
    raise Gen3RInputError(f"{directory}: no {INDEX_FILE}; this is not a converted gen3r_jax checkpoint (convert "
                          "the official one with `python launch/convert.py --source <dir> --out <dir>`)")
  missing = [c for c in (*COMPONENTS, *COPIED) if not os.path.isdir(os.path.join(directory, c))]
  if missing:
    raise Gen3RInputError(f"{directory}: checkpoint is missing {', '.join(missing)}; re-run the conversion")


def load_bundle(directory: str, *, dtype: str | None = None, param_dtype: str | None = None, mesh=None,
                components=None, placement: str = "resident", log: Callable = lambda s: None) -> Gen3RBundle:
  """Load a converted bundle.

  Args:
    dtype: overrides every model's compute dtype (e.g. ``"bfloat16"``).
    param_dtype: overrides the stored parameter dtype (``"bfloat16"`` halves the weights' memory, as the official
      ``infer.py`` casting the pipeline does; None keeps the converted float32).
    mesh: shard every model's parameters over this mesh by their logical axes (``gen3r_jax.parallel.rules``);
      the DiT's denoising step then runs sharded (``generate`` reads the mesh from its parameters).
    placement: ``"resident"`` (parameters restored into device memory) or ``"sequential"`` (restored straight
      into host memory, same shardings; each sampling stage moves its model to the device and back, see
      :mod:`gen3r_jax.sampling.placement`).
  """
  from gen3r_jax.models.config import DTYPES
  from gen3r_jax.models.wan.tokenizer import UMT5Tokenizer
  from gen3r_jax.sampling import placement as pl
  pl.check_placement(placement)
  for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
    if value is not None and value not in DTYPES:
      raise Gen3RInputError(f"{name} {value!r} is not supported; use one of {', '.join(DTYPES)}")
  check_bundle(directory)
  out = Gen3RBundle()
  out.tokenizer = UMT5Tokenizer.from_pretrained(os.path.join(directory, "tokenizer"))
  out.scheduler_config = _read_json(os.path.join(directory, "scheduler", "scheduler_config.json"))
  host_kind = pl.host_memory_kind() if placement == "sequential" else None
  for comp in components or COMPONENTS:
    cls = _model_class(COMPONENTS[comp][1])
    kw = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v}
    t0 = time.time()
    model = cls.from_checkpoint(os.path.join(directory, comp), mesh=mesh, memory_kind=host_kind, **kw)
    if placement == "sequential" and host_kind is None:     # no host memory space: numpy copies
      model = pl.to_host(model)
    setattr(out, _FIELDS[comp], model)
    log(f"[load] {comp}: {pl.fmt_bytes(pl.param_bytes(model))} "
        f"({'host' if placement == 'sequential' else 'device'}, {time.time() - t0:.1f} s)")
  return out


def save_random_bundle(out_dir: str, configs: dict[str, Any], *, tokenizer_dir: str, seed: int = 0,
                       scheduler_config: dict | None = None, log: Callable = print) -> str:
  """Write a bundle of random-weight models (for demos and tests): ``configs`` maps component -> config object.

  Weights are drawn on the host (:func:`gen3r_jax.models.init.random_params`), so no XLA init program has to compile.
  """
  from gen3r_jax.models.init import random_params
  os.makedirs(out_dir, exist_ok=True)
  index = {"format": "gen3r_jax bundle v1", "source": "random", "components": {}}
  for i, comp in enumerate(COMPONENTS):
    cls = _model_class(COMPONENTS[comp][1])
    model = random_params(cls, configs[comp], seed=seed + i)
    model.save_checkpoint(os.path.join(out_dir, comp), overwrite=True)
    index["components"][comp] = {"model": "random", "class": COMPONENTS[comp][1]}
    log(f"[bundle] random {comp} written")
  dst = os.path.join(out_dir, "tokenizer")
  if os.path.exists(dst):
    shutil.rmtree(dst)
  shutil.copytree(tokenizer_dir, dst)
  os.makedirs(os.path.join(out_dir, "scheduler"), exist_ok=True)
  with open(os.path.join(out_dir, "scheduler", "scheduler_config.json"), "w") as f:
    json.dump(scheduler_config or {"_class_name": "FlowUniPCMultistepScheduler", "num_train_timesteps": 1000,
                                   "shift": 1.0, "solver_order": 2, "solver_type": "bh2",
                                   "prediction_type": "flow_prediction", "predict_x0": True,
                                   "lower_order_final": True, "final_sigmas_type": "zero"}, f, indent=1)
  with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
    json.dump(index, f, indent=1)
  return out_dir
