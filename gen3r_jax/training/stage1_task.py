"""Stage-1 task for the trainer: configs -> (trainable adapter, frozen VGGT + Wan VAE, loss, grain data).

``config.model.size``: ``"release"`` (VGGT-1B, Wan2.1 VAE, adapter 10240 <-> 16 x 70 x 70) with the frozen
weights from ``config.model.vggt_checkpoint`` / ``wan_vae_checkpoint`` (Orbax, ``launch/convert.py``), or
``"tiny"`` (the parity fixture's sizes, randomly initialised frozen models: debugging and tests only). The
adapter's grids are hard-wired (40 x 40 tokens <-> 70 x 70 latents), so frames are always 560 x 560.
"""

from __future__ import annotations

import os

from gen3r_jax.errors import require
from gen3r_jax.training.losses import Stage1LossConfig
from gen3r_jax.training.loop import Task
from gen3r_jax.training.stage1 import Frozen, build_frozen, stage1_task_loss

TOKEN_GRID = 40


def model_configs(mc):
  """``(vggt_cfg, wan_cfg, adapter_cfg)`` for ``config.model``."""
  from gen3r_jax.models.adapter.geometry_adapter import GeometryAdapterConfig
  from gen3r_jax.models.vggt import VGGTConfig
  from gen3r_jax.models.wan.vae import WanVAEConfig
  require(mc.size in ("release", "tiny"), f"model.size must be 'release' or 'tiny', got {mc.size!r}.")
  if mc.size == "release":
    v = VGGTConfig.vggt_1b(dtype=mc.dtype, remat=mc.remat)
    w = WanVAEConfig.wan2_1().replace(dtype=mc.dtype)
    a = GeometryAdapterConfig.gen3r().replace(dtype=mc.dtype)
  else:  # the sizes of shared/fixtures/training_stage1_tiny
    v = VGGTConfig(img_size=28, embed_dim=16, depth=8, num_heads=2, pe_depth=1, pe_num_heads=2,
                   camera_num_heads=2, dpt_features=8, dpt_out_channels=(4, 8, 8, 8),
                   intermediate_layer_idx=(1, 3, 5, 7), dtype=mc.dtype, remat=mc.remat)
    w = WanVAEConfig(dim=4).replace(dtype=mc.dtype)
    a = GeometryAdapterConfig(hidden_dim=4, input_dim=10 * v.embed_dim, output_dim=10 * v.embed_dim,
                              dtype=mc.dtype)
  require(a.input_dim == 5 * 2 * v.embed_dim,
          f"adapter input_dim {a.input_dim} must be 5 x VGGT token width {2 * v.embed_dim}.")
  return v, w, a


def check_data_config(dc, patch: int) -> None:
  size = TOKEN_GRID * patch
  require(dc.height == size and dc.width == size,
          f"stage 1 needs {size}x{size} frames (the adapter's 40x40 token grid is hard-wired), got "
          f"{dc.height}x{dc.width}; set data.height = data.width = {size}.")
  require(dc.num_frames >= 1 and (dc.num_frames - 1) % 4 == 0,
          f"data.num_frames must be 1 + 4k (1, 5, ..., 49), got {dc.num_frames}.")
  require(bool(dc.root) + bool(dc.records) + (dc.synthetic_scenes > 0) == 1,
          "set exactly one data source: data.root (official layout), data.records (array_record) or "
          "data.synthetic_scenes > 0.")


def data_root(dc, workdir: str) -> str:
  """The dataset root; synthetic scenes are generated once under ``<workdir>/synthetic`` (process 0 writes,
  the others wait on the marker file)."""
  if dc.root:
    return dc.root
  import jax
  root = os.path.join(workdir, "synthetic")
  marker = os.path.join(root, "DONE")
  if jax.process_index() == 0 and not os.path.exists(marker):
    from gen3r_jax.data.synthetic import generate
    generate(root, scenes=int(dc.synthetic_scenes), frames=int(dc.synthetic_frames),
             height=int(dc.synthetic_size), width=int(dc.synthetic_size), seed=0)
    open(marker, "w").close()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("synthetic data ready")
  return root


def data_pipeline(config, workdir: str, stage: int):
  """The grain pipeline of ``config.data`` for ``stage`` 1 or 2 (this process's share of each global batch): scene
  folders (``data.root``, else synthetic scenes under ``workdir``), TFDS records (``data.records``) or, for stage
  2, pre-encoded records (``data.preencoded``)."""
  import jax
  from gen3r_jax.data.clips import ClipConfig
  from gen3r_jax.data.pipeline import (PipelineConfig, make_pipeline, sources_from_preencoded,
                                       sources_from_records, sources_from_root)
  dc = config.data
  clip = ClipConfig(num_frames=int(dc.num_frames), height=int(dc.height), width=int(dc.width),
                    strides=tuple(int(s) for s in dc.strides), order="images" if stage == 1 else "cameras")
  if stage == 2 and dc.get("preencoded"):
    sources = sources_from_preencoded(dc.preencoded)
  elif dc.records:
    sources = sources_from_records(dc.records, stage=stage)
  else:
    sources = sources_from_root(data_root(dc, workdir), stage=stage)
  pc = PipelineConfig(stage=stage, batch_size=int(dc.batch_size) // jax.process_count(), seed=int(config.seed),
                      clip=clip, read_threads=int(dc.read_threads), prefetch=int(dc.prefetch),
                      mp_workers=int(dc.mp_workers))
  return make_pipeline(sources, pc)


def make_data(config, workdir: str):
  return iter(data_pipeline(config, workdir, stage=1))


def make_task(config, mesh, workdir: str) -> Task:
  from gen3r_jax.models.adapter.geometry_adapter import GeometryAdapter
  vcfg, wcfg, acfg = model_configs(config.model)
  check_data_config(config.data, vcfg.patch_size)
  loss_cfg = Stage1LossConfig(**config.loss.to_dict())
  frozen: Frozen = build_frozen(vcfg, wcfg, mesh=mesh, seed=int(config.seed) + 1000,
                                vggt_checkpoint=config.model.vggt_checkpoint or None,
                                wan_checkpoint=config.model.wan_vae_checkpoint or None)
  return Task(build=lambda r: GeometryAdapter(acfg, rngs=r),
              loss_fn=lambda m, f, b, k: stage1_task_loss(m, f, b, k, loss_cfg),
              make_data=lambda: make_data(config, workdir), frozen=frozen)
