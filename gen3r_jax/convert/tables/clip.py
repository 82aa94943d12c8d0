"""open-clip XLM-RoBERTa ViT-H/14 (Wan's ``CLIPModel``) -> :class:`CLIPVision`: the visual tower only.

Source: Wan2.1's ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (no prefix) or Gen3R's
``clip_image_encoder/diffusion_pytorch_model.safetensors`` (every key prefixed ``model.``, stripped here).
The file holds the whole CLIP (the official loader is strict); only the visual path is converted:

    visual.patch_embedding.weight            -> patch_embedding.kernel       (conv2d -> [14, 14, 3, D])
    visual.cls_embedding [1, 1, D]           -> cls_embedding [D]
    visual.pos_embedding [1, 1 + N, D]       -> pos_embedding [1 + N, D]
    visual.pre_norm.{weight,bias}            -> pre_norm.{scale,bias}
    visual.transformer.N.norm{1,2}.*         -> blocks.norm{1,2}.{scale,bias}[N]
    visual.transformer.N.attn.to_qkv.*       -> blocks.attn.to_qkv.{kernel,bias}[N]  (fused q, k, v)
    visual.transformer.N.attn.proj.*         -> blocks.attn.proj.{kernel,bias}[N]
    visual.transformer.N.mlp.{0,2}.*         -> blocks.mlp.fc{1,2}.{kernel,bias}[N]
"""

from __future__ import annotations

from gen3r_jax.convert import transforms as T
from gen3r_jax.convert.registry import ModelSpec
from gen3r_jax.convert.table import MappingTable, TableBuilder
from gen3r_jax.models.clip.model import CLIPVision, CLIPVisionConfig


def table(cfg: CLIPVisionConfig) -> MappingTable:
  tb = TableBuilder("clip_xlm_roberta_vit_h_14", strip_prefixes=("model.",))
  tb.conv("visual.patch_embedding", "patch_embedding", 2, bias=False)
  tb.add("visual.cls_embedding", "cls_embedding", T.squeeze_leading(2))
  tb.add("visual.pos_embedding", "pos_embedding", T.squeeze_leading(1))
  tb.norm("visual.pre_norm", "pre_norm")
  for i in range(cfg.num_blocks):
    p = f"visual.transformer.{i}"
    tb.norm(f"{p}.norm1", "blocks.norm1", index=i)
    tb.norm(f"{p}.norm2", "blocks.norm2", index=i)
    tb.linear(f"{p}.attn.to_qkv", "blocks.attn.to_qkv", index=i)
    tb.linear(f"{p}.attn.proj", "blocks.attn.proj", index=i)
    tb.linear(f"{p}.mlp.0", "blocks.mlp.fc1", index=i)
    tb.linear(f"{p}.mlp.2", "blocks.mlp.fc2", index=i)
  if cfg.use_31_block:
    tb.ignore(rf"visual\.transformer\.{cfg.num_layers - 1}\..*",
              "last visual block: CLIPModel.forward runs the ViT with use_31_block=True, which skips it")
  tb.ignore(r"visual\.post_norm\.(weight|bias)", "visual post-norm: never applied (use_31_block output is taken "
            "before it, and the ViT forward never calls it)")
  tb.ignore(r"visual\.head", "visual projection head: unused, Gen3R takes the token sequence, not the pooled "
            "embedding")
  tb.ignore(r"textual\..*", "XLM-RoBERTa text tower: unused, Gen3R encodes text with umT5 (the official loader "
            "is strict, so the file carries it)")
  tb.ignore(r"log_scale", "CLIP contrastive logit scale: unused by the image encoder")
  return tb.build()


def spec(name: str, config: dict | None = None) -> ModelSpec:
  cfg = CLIPVisionConfig.vit_h_14() if config is None else CLIPVisionConfig.from_fixture(config)
  return ModelSpec(name, cfg, CLIPVision, table)
