"""umT5-XXL encoder: Wan / VideoX-Fun ``WanT5EncoderModel`` names (no prefix) -> :class:`UMT5Encoder`.

Source: Gen3R's ``text_encoder/diffusion_pytorch_model*.safetensors`` or Wan2.1's
``models_t5_umt5-xxl-enc-bf16.pth``. NOT the HF ``UMT5EncoderModel`` naming (``encoder.block.N.layer...``):
the official loader would silently ignore such keys, here they are reported as unknown.

    token_embedding.weight                    -> token_embedding                [vocab, dim]
    blocks.N.norm{1,2}.weight                 -> blocks.norm{1,2}.weight[N]
    blocks.N.attn.{q,k,v,o}.weight            -> blocks.attn.{q,k,v,o}.kernel[N] (transposed)
    blocks.N.ffn.gate.0.weight                -> blocks.ffn.gate.kernel[N]
    blocks.N.ffn.fc{1,2}.weight               -> blocks.ffn.fc{1,2}.kernel[N]
    blocks.N.pos_embedding.embedding.weight   -> blocks.pos_embedding[N]        [buckets, heads]
    norm.weight                               -> norm.weight
"""

from __future__ import annotations

from gen3r_jax.convert import transforms as T
from gen3r_jax.convert.registry import ModelSpec
from gen3r_jax.convert.table import MappingTable, TableBuilder
from gen3r_jax.models.umt5.t5 import UMT5Config, UMT5Encoder


def table(cfg: UMT5Config) -> MappingTable:
  tb = TableBuilder("umt5_xxl_encoder")
  tb.add("token_embedding.weight", "token_embedding")
  for i in range(cfg.num_layers):
    p = f"blocks.{i}"
    tb.add(f"{p}.norm1.weight", "blocks.norm1.weight", T.identity, i)
    tb.add(f"{p}.norm2.weight", "blocks.norm2.weight", T.identity, i)
    for name in ("q", "k", "v", "o"):
      tb.linear(f"{p}.attn.{name}", f"blocks.attn.{name}", bias=False, index=i)
    tb.linear(f"{p}.ffn.gate.0", "blocks.ffn.gate", bias=False, index=i)
    tb.linear(f"{p}.ffn.fc1", "blocks.ffn.fc1", bias=False, index=i)
    tb.linear(f"{p}.ffn.fc2", "blocks.ffn.fc2", bias=False, index=i)
    tb.add(f"{p}.pos_embedding.embedding.weight", "blocks.pos_embedding", T.identity, i)
  tb.add("norm.weight", "norm.weight")
  return tb.build()


def spec(name: str, config: dict | None = None) -> ModelSpec:
  cfg = UMT5Config.umt5_xxl() if config is None else UMT5Config.from_fixture(config)
  return ModelSpec(name, cfg, UMT5Encoder, table)
