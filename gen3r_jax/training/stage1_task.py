"""Stage-1 task for the trainer: configs -> (trainable adapter, frozen VGGT + Wan VAE, loss, grain data).

``config.model.size``: ``"release"`` (VGGT-1B, Wan2.1 VAE, adapter 10240 <-> 16 x 70 x 70) with the frozen
weights from ``config.model.vggt_checkpoint`` / ``wan_vae_checkpoint`` (Orbax, ``launch/convert.py``), or
``"tiny"`` (the parity fixture's sizes, randomly initialised frozen models: debugging and tests only). Frames are
``model.token_grid x 14`` square: the release's 560 x 560 (40 x 40 VGGT tokens <-> 70 x 70 latents); the debug
configs use ``token_grid`` 8 (112 x 112 frames, 8 x 8 tokens <-> 14 x 14 latents).
"""

from __future__ import annotations

from flax import nnx
import jax
import numpy as np

from gen3r_jax.errors import require
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
from gen3r_jax.models.init import random_params
from gen3r_jax.models.vggt import VGGTConfig
from gen3r_jax.models.wan_vae.vae import WanVAEConfig
from gen3r_jax.training.losses import Stage1LossConfig
from gen3r_jax.training.stage1 import Frozen, build_frozen, stage1_task_loss
from gen3r_jax.training.task import Task
from gen3r_jax.training.task_data import check_validate, data_pipeline


TOKEN_GRID = 40   # the release's VGGT token grid (560 x 560 frames); config.model.token_grid overrides it


def token_grid(mc) -> int:
  """``config.model.token_grid`` (40 when the config predates the setting)."""
  return int(mc.get("token_grid", TOKEN_GRID))


def model_configs(mc):
  """``(vggt_cfg, wan_cfg, adapter_cfg)`` for ``config.model``."""
  require(mc.size in ("release", "tiny"), f"model.size must be 'release' or 'tiny', got {mc.size!r}.")
  grid = token_grid(mc)
  require(grid >= 4 and grid % 4 == 0, f"model.token_grid must be a positive multiple of 4 (40: 560x560 frames, "
          f"8: 112x112), got {grid}.")
  if mc.size == "release":
    v = VGGTConfig.vggt_1b(dtype=mc.dtype, remat=mc.remat)
    w = WanVAEConfig.wan2_1().replace(dtype=mc.dtype)
    a = GeometryAdapterConfig.gen3r().replace(dtype=mc.dtype, token_grid=grid)
  else:  # the sizes of shared/fixtures/training_stage1_tiny
    v = VGGTConfig(img_size=28, embed_dim=16, depth=8, num_heads=2, pe_depth=1, pe_num_heads=2,
                   camera_num_heads=2, dpt_features=8, dpt_out_channels=(4, 8, 8, 8),
                   intermediate_layer_idx=(1, 3, 5, 7), dtype=mc.dtype, remat=mc.remat)
    w = WanVAEConfig(dim=4).replace(dtype=mc.dtype)
    a = GeometryAdapterConfig(hidden_dim=4, input_dim=10 * v.embed_dim, output_dim=10 * v.embed_dim,
                              dtype=mc.dtype, token_grid=grid)
  require(a.input_dim == 5 * 2 * v.embed_dim,
          f"adapter input_dim {a.input_dim} must be 5 x VGGT token width {2 * v.embed_dim}.")
  return v, w, a


def check_data_config(dc, patch: int, grid: int = TOKEN_GRID) -> None:
  size = grid * patch
  require(dc.height == size and dc.width == size,
          f"stage 1 needs {size}x{size} frames (model.token_grid {grid} x patch {patch}), got "
          f"{dc.height}x{dc.width}; set data.height = data.width = {size}, or model.token_grid to "
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
  frozen: Frozen = build_frozen(vcfg, wcfg, mesh=mesh, seed=int(config.seed) + 1000,
                                vggt_checkpoint=config.model.vggt_checkpoint or None,
                                wan_checkpoint=config.model.wan_vae_checkpoint or None)
  return Task(build=lambda r: GeometryAdapter(acfg, rngs=r),
              loss_fn=lambda m, f, b, k: stage1_task_loss(m, f, b, k, loss_cfg),
              make_data=lambda: make_data(config, workdir), frozen=frozen,
              init_params=adapter_init_params(acfg, config.model, seed=int(config.seed)))
