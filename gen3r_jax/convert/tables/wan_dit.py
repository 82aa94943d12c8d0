"""Mapping table: official ``WanTransformer3DModel`` (VideoX-Fun Fun-Control-Camera, i2v) -> :class:`WanDiT`.

Every key of the released ``transformer/diffusion_pytorch_model*.safetensors`` is mapped (nothing is ignored):
the 30 / 40 blocks fill the rows of the stacked (scanned) block parameters, the RoPE table is not stored.
"""

from __future__ import annotations

from gen3r_jax.convert import transforms as T
from gen3r_jax.convert.registry import ModelSpec
from gen3r_jax.convert.table import MappingTable, TableBuilder
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import WanDiT

FULL_SIZES = {
    "wan_dit_1_3b_control_camera": WanDiTConfig.wan_1_3b,
    "wan_dit_14b_control_camera": WanDiTConfig.wan_14b,
}


def table(cfg: WanDiTConfig, model: str = "wan_dit") -> MappingTable:
  tb = TableBuilder(model)
  tb.conv("patch_embedding", "patch_embedding", 3)
  tb.linear("text_embedding.0", "text_embedding.fc1").linear("text_embedding.2", "text_embedding.fc2")
  tb.linear("time_embedding.0", "time_embedding.fc1").linear("time_embedding.2", "time_embedding.fc2")
  tb.linear("time_projection.1", "time_embedding.proj")
  tb.norm("img_emb.proj.0", "img_emb.norm_in").linear("img_emb.proj.1", "img_emb.fc1")
  tb.linear("img_emb.proj.3", "img_emb.fc2").norm("img_emb.proj.4", "img_emb.norm_out")
  for i in range(cfg.num_layers):
    src = f"blocks.{i}"
    tb.add(f"{src}.modulation", "blocks.modulation", T.squeeze_leading(1), index=i)
    for attn, names, norms in (("self_attn", "qkvo", ("norm_q", "norm_k")),
                               ("cross_attn", ("q", "k", "v", "o", "k_img", "v_img"),
                                ("norm_q", "norm_k", "norm_k_img"))):
      for n in names:
        tb.linear(f"{src}.{attn}.{n}", f"blocks.{attn}.{n}", index=i)
      if cfg.qk_norm:
        for n in norms:
          tb.add(f"{src}.{attn}.{n}.weight", f"blocks.{attn}.{n}.weight", index=i)
    if cfg.cross_attn_norm:
      tb.norm(f"{src}.norm3", "blocks.norm3", index=i)
    tb.linear(f"{src}.ffn.0", "blocks.ffn.fc1", index=i).linear(f"{src}.ffn.2", "blocks.ffn.fc2", index=i)
  tb.add("head.modulation", "head.modulation", T.squeeze_leading(1))
  tb.linear("head.head", "head.head")
  if cfg.add_control_adapter:
    tb.conv("control_adapter.conv", "control_adapter.conv", 2)
    for j in range(cfg.control_residual_blocks):
      for c in ("conv1", "conv2"):
        tb.conv(f"control_adapter.residual_blocks.{j}.{c}", f"control_adapter.residual_blocks.{j}.{c}", 2)
  return tb.build()


def spec(name: str, config=None) -> ModelSpec:
  """``config=None``: the released size the manifest ``name`` stands for; else an official config dict."""
  if config is None:
    if name not in FULL_SIZES:
      raise KeyError(f"{name!r} is not a Wan DiT checkpoint name; known: {', '.join(sorted(FULL_SIZES))}")
    cfg = FULL_SIZES[name]()
  elif isinstance(config, WanDiTConfig):
    cfg = config
  else:
    cfg = WanDiTConfig.from_fixture(config)
  return ModelSpec(name, cfg, WanDiT, lambda c: table(c, name))
