"""Mapping table: official Wan2.1 VAE state dict (``Wan2.1_VAE.pth`` / ``AutoencoderKLWan.state_dict()``) -> WanVAE.

The original file has no prefix; ``AutoencoderKLWan.state_dict()`` (and the pipeline's ``wan_vae/`` folder)
puts ``model.`` in front of every key, which the table strips. Torch names: ``residual.{0,2,3,6}`` = RMS gamma,
conv, RMS gamma, conv; ``resample.1`` = the 2-D conv after the pad / upsample; ``head.{0,2}`` = RMS gamma, conv.
The helpers here are shared with the geometry adapter table (same blocks, other resample indices).
"""

from __future__ import annotations

from gen3r_jax.convert import registry
from gen3r_jax.convert import transforms as T
from gen3r_jax.convert.table import MappingTable, TableBuilder
from gen3r_jax.models.wan_vae.blocks import decoder_plan, encoder_plan
from gen3r_jax.models.wan_vae.vae import WanVAE, WanVAEConfig


def causal_conv(tb: TableBuilder, torch_prefix: str, path: str) -> None:
  tb.conv(torch_prefix, f"{path}.conv", 3)


def rms(tb: TableBuilder, torch_key: str, path: str) -> None:
  tb.add(torch_key, f"{path}.gamma", T.flatten)


def residual(tb: TableBuilder, tp: str, p: str, in_dim: int, out_dim: int) -> None:
  rms(tb, f"{tp}.residual.0.gamma", f"{p}.norm1")
  causal_conv(tb, f"{tp}.residual.2", f"{p}.conv1")
  rms(tb, f"{tp}.residual.3.gamma", f"{p}.norm2")
  causal_conv(tb, f"{tp}.residual.6", f"{p}.conv2")
  if in_dim != out_dim:
    causal_conv(tb, f"{tp}.shortcut", f"{p}.shortcut")


def attention_block(tb: TableBuilder, tp: str, p: str) -> None:
  rms(tb, f"{tp}.norm.gamma", f"{p}.norm")
  tb.conv(f"{tp}.to_qkv", f"{p}.to_qkv", 2)
  tb.conv(f"{tp}.proj", f"{p}.proj", 2)


def middle(tb: TableBuilder, tp: str, p: str) -> None:
  residual(tb, f"{tp}.0", f"{p}.0", 1, 1)
  attention_block(tb, f"{tp}.1", f"{p}.1")
  residual(tb, f"{tp}.2", f"{p}.2", 1, 1)


def head(tb: TableBuilder, tp: str, p: str) -> None:
  rms(tb, f"{tp}.0.gamma", f"{p}.norm")
  causal_conv(tb, f"{tp}.2", f"{p}.conv")


def stages(tb: TableBuilder, tp: str, p: str, plan, resample_index: int) -> None:
  """``encoder.downsamples.N`` / ``decoder.upsamples.N`` from an encoder/decoder plan."""
  for i, (kind, a, b) in enumerate(plan):
    if kind == "res":
      residual(tb, f"{tp}.{i}", f"{p}.{i}", a, b)
    else:
      tb.conv(f"{tp}.{i}.resample.{resample_index}", f"{p}.{i}.resample", 2)
      if b:  # temporal resampling
        causal_conv(tb, f"{tp}.{i}.time_conv", f"{p}.{i}.time_conv")


def autoencoder_core(tb: TableBuilder, cfg, enc_dims, dec_dims, resample_index: int) -> None:
  """Everything of the shared causal auto-encoder: encoder/decoder bodies and the 1x1x1 ``conv1``/``conv2``."""
  causal_conv(tb, "encoder.conv1", "encoder.conv1")
  stages(tb, "encoder.downsamples", "encoder.downsamples",
         encoder_plan(enc_dims, cfg.num_res_blocks, cfg.temperal_downsample), resample_index)
  middle(tb, "encoder.middle", "encoder.middle")
  head(tb, "encoder.head", "encoder.head")
  causal_conv(tb, "conv1", "conv1")
  causal_conv(tb, "conv2", "conv2")
  causal_conv(tb, "decoder.conv1", "decoder.conv1")
  middle(tb, "decoder.middle", "decoder.middle")
  stages(tb, "decoder.upsamples", "decoder.upsamples",
         decoder_plan(dec_dims, cfg.num_res_blocks, cfg.temperal_downsample[::-1]), resample_index)
  head(tb, "decoder.head", "decoder.head")


def table(cfg: WanVAEConfig) -> MappingTable:
  tb = TableBuilder("wan_vae", strip_prefixes=("model.",))
  enc_dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
  dec_dims = [cfg.dim * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
  autoencoder_core(tb, cfg, enc_dims, dec_dims, resample_index=1)
  return tb.build()


def spec(name: str = "wan_vae", config: dict | None = None) -> registry.ModelSpec:
  cfg = WanVAEConfig.wan2_1() if config is None else WanVAEConfig.from_fixture(config)
  return registry.ModelSpec(name, cfg, WanVAE, table)
