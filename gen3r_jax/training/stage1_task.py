"""Stage-1 task for the trainer: configs -> (trainable adapter, frozen VGGT + Wan VAE, loss, grain data).

``config.model.size``: ``"release"`` (VGGT-1B, Wan2.1 VAE, adapter 10240 <-> 16 x 70 x 70) with the frozen
weights from ``config.model.vggt_checkpoint`` / ``wan_vae_checkpoint`` (Orbax, ``launch/convert.py``), or
``"tiny"`` (the parity fixture's sizes, randomly initialised frozen models: debugging and tests only). Each model's
config is its size preset with ``config.model.dtype`` and the fields of its sub-dict, named as the dataclass names
them: ``config.model.vggt`` (:class:`VGGTConfig`, e.g. ``remat``), ``config.model.wan_vae`` (:class:`WanVAEConfig`),
``config.model.adapter`` (:class:`GeometryAdapterConfig`, e.g. ``token_grid``): :func:`model_config`. Frames are
``model.adapter.token_grid x 14`` square: the release's 560 x 560 (40 x 40 VGGT tokens <-> 70 x 70 latents); the
debug configs use ``token_grid`` 8 (112 x 112 frames, 8 x 8 tokens <-> 14 x 14 latents).
"""

from __future__ import annotations

from flax import nnx
import jax
import numpy as np

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
from gen3r_jax.models.init import random_params
from gen3r_jax.models.vggt import VGGTConfig
from gen3r_jax.models.wan_vae.vae import WanVAEConfig
from gen3r_jax.training.losses import Stage1LossConfig
from gen3r_jax.training.stage1 import Frozen, build_frozen, stage1_task_loss
from gen3r_jax.training.task import Task, rules_of
from gen3r_jax.training.task_data import check_validate, data_pipeline


TOKEN_GRID = 40   # the release's VGGT token grid (560 x 560 frames); config.model.adapter.token_grid sets it


def model_overrides(mc, name: str) -> dict:
  """What ``config.model`` sets for model ``name``: ``dtype`` (shared by every model) and the fields of its
  sub-dict ``config.model.<name>`` (which win), keyed by the config dataclass's field names."""
  return {"dtype": mc.dtype, **dict((mc.get(name) or {}).items())}


def model_config(preset, mc, name: str):
  """``preset`` (a size preset of the model's config dataclass) with :func:`model_overrides`:
  ``type(preset).from_dict(overrides, base=preset)``, so an unknown field is a one-line error listing the valid
  ones."""
  try:
    return type(preset).from_dict(model_overrides(mc, name), base=preset)
  except Gen3RInputError as e:
    raise Gen3RInputError(f"config.model.{name}: {e}") from None


def model_configs(mc):
  """``(vggt_cfg, wan_cfg, adapter_cfg)`` for ``config.model``."""
  require(mc.size in ("release", "tiny"), f"model.size must be 'release' or 'tiny', got {mc.size!r}.")
  grid = int((mc.get("adapter") or {}).get("token_grid", TOKEN_GRID))
  require(grid >= 4 and grid % 4 == 0, f"model.adapter.token_grid must be a positive multiple of 4 (40: 560x560 "
          f"frames, 8: 112x112), got {grid}.")
  if mc.size == "release":
    v = model_config(VGGTConfig.vggt_1b(), mc, "vggt")
    w = model_config(WanVAEConfig.wan2_1(), mc, "wan_vae")
    a = model_config(GeometryAdapterConfig.gen3r(), mc, "adapter")
  else:  # the sizes of shared/fixtures/training_stage1_tiny
    v = model_config(VGGTConfig(img_size=28, embed_dim=16, depth=8, num_heads=2, pe_depth=1, pe_num_heads=2,
                                camera_num_heads=2, dpt_features=8, dpt_out_channels=(4, 8, 8, 8),
                                intermediate_layer_idx=(1, 3, 5, 7)), mc, "vggt")
    w = model_config(WanVAEConfig(dim=4), mc, "wan_vae")
    a = model_config(GeometryAdapterConfig(hidden_dim=4, input_dim=10 * v.embed_dim, output_dim=10 * v.embed_dim),
                     mc, "adapter")
  require(a.input_dim == 5 * 2 * v.embed_dim,
          f"adapter input_dim {a.input_dim} must be 5 x VGGT token width {2 * v.embed_dim}.")
  return v, w, a


def check_data_config(dc, patch: int, grid: int = TOKEN_GRID) -> None:
  size = grid * patch
  require(dc.height == size and dc.width == size,
          f"stage 1 needs {size}x{size} frames (model.adapter.token_grid {grid} x patch {patch}), got "
          f"{dc.height}x{dc.width}; set data.height = data.width = {size}, or model.adapter.token_grid to "
          f"data.height / {patch} (a multiple of 4).")
  require(dc.num_frames >= 1 and (dc.num_frames - 1) % 4 == 0,
          f"data.num_frames must be 1 + 4k (1, 5, ..., 49), got {dc.num_frames}.")
  check_validate(dc)
  require(bool(dc.root) + bool(dc.records) + (dc.synthetic_scenes > 0) == 1,
          "set exactly one data source: data.root (official layout), data.records (array_record) or "
          "data.synthetic_scenes > 0.")


def make_data(config, workdir: str):
  return iter(data_pipeline(config, workdir, stage=1))


def adapter_init_params(adapter_cfg, mc, *, seed: int):
  """``init_params`` for the trainer: host-drawn random adapter weights at the tiny size (no jitted init program:
  ~15 s of compile saved on a small CPU), ``None`` (the adapter's own jitted initialisers) at the release size."""
  if mc.size != "tiny":
    return None

  def host_random(abstract, shardings):
    del abstract
    params = nnx.to_pure_dict(nnx.state(random_params(GeometryAdapter, adapter_cfg, seed=seed), nnx.Param))
    return jax.device_put(jax.tree.map(np.asarray, params), shardings)
  return host_random


def make_task(config, mesh, workdir: str) -> Task:
  vcfg, wcfg, acfg = model_configs(config.model)
  check_data_config(config.data, vcfg.patch_size, acfg.token_grid)
  loss_cfg = Stage1LossConfig(**config.loss.to_dict())
  mc = config.model
  frozen: Frozen = build_frozen(vcfg, wcfg, mesh=mesh, seed=int(config.seed) + 1000,
                                vggt_checkpoint=mc.vggt_checkpoint or None,
                                wan_checkpoint=mc.wan_vae_checkpoint or None,
                                overrides={n: model_overrides(mc, n) for n in ("vggt", "wan_vae")},
                                rules=rules_of(config))
  return Task(build=lambda r: GeometryAdapter(acfg, rngs=r), model="adapter",
              loss_fn=lambda m, f, b, k: stage1_task_loss(m, f, b, k, loss_cfg),
              make_data=lambda: make_data(config, workdir), frozen=frozen,
              init_params=adapter_init_params(acfg, config.model, seed=int(config.seed)))
