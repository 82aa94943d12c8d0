"""Mapping table: official Gen3R ``GeometryAdapter`` state dict -> :class:`GeometryAdapter`.

Same blocks as the Wan VAE (shared helpers in :mod:`gen3r_jax.convert.tables.wan_vae`), with the adapter's
resample conv at index 0 (``encode_block_*`` / ``decode_block_*`` have no pad/upsample before the conv) and the
two ends ``encoder.init_block.resample.1`` (after the Upsample) and ``decoder.out_block.resample.2`` (after the
Upsample and the ZeroPad2d). ``GeometryAdapter.state_dict()`` prefixes ``model.`` (stripped); a
``save_pretrained_safetensors`` file has no prefix and extra ``mean``/``std`` entries (ignored).
"""

from __future__ import annotations

from gen3r_jax.convert import registry
from gen3r_jax.convert.table import MappingTable, TableBuilder
from gen3r_jax.convert.tables.wan_vae import autoencoder_core
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig


def table(cfg: GeometryAdapterConfig) -> MappingTable:
  tb = TableBuilder("geometry_adapter", strip_prefixes=("model.",))
  h = cfg.hidden_dim
  enc_dims = [h * u for u in (4, *cfg.dim_mult)]
  dec_dims = [h * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
  tb.conv("encoder.init_block.resample.1", "encoder.init_conv", 2)
  autoencoder_core(tb, cfg, enc_dims, dec_dims, resample_index=0)
  tb.conv("decoder.out_block.resample.2", "decoder.out_conv", 2)
  tb.ignore(r"(model\.)?(mean|std)", "hard-coded constants are used")
  return tb.build()


def spec(name: str = "geometry_adapter", config: dict | None = None) -> registry.ModelSpec:
  cfg = GeometryAdapterConfig.gen3r() if config is None else GeometryAdapterConfig.from_fixture(config)
  return registry.ModelSpec(name, cfg, GeometryAdapter, table)
