"""VGGT (Gen3R's vendored class, keys exactly as the released facebook/VGGT-1B ``model.safetensors``).

Stacked blocks (DINOv2 ``blocks``, aggregator ``frame_blocks`` / ``global_blocks``, camera ``trunk``) map one
torch key per layer with ``index=i``. Unused keys: ``track_head.*`` (in the released file; the vendored class has
no track head and Gen3R uses only the camera/depth/point heads) and DINOv2's ``mask_token`` (masked-image
training only; VGGT never passes masks).
"""

from __future__ import annotations

import numpy as np

from gen3r_jax.convert import transforms as T
from gen3r_jax.convert.registry import ModelSpec
from gen3r_jax.convert.table import MappingTable, TableBuilder
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.vggt.model import VGGT

# torch ConvTranspose2d [in, out, kh, kw] -> [kh, kw, in, out]
conv_transpose2d = T.Transform(
    "conv_transpose2d", lambda x: np.ascontiguousarray(np.transpose(x, (2, 3, 0, 1))),
    lambda s: (s[2], s[3], s[0], s[1]))


def _block(tb: TableBuilder, tprefix: str, path: str, i: int, *, qk_norm: bool) -> None:
  tb.norm(f"{tprefix}.norm1", f"{path}.norm1", index=i)
  tb.linear(f"{tprefix}.attn.qkv", f"{path}.attn.qkv", index=i)
  if qk_norm:
    tb.norm(f"{tprefix}.attn.q_norm", f"{path}.attn.q_norm", index=i)
    tb.norm(f"{tprefix}.attn.k_norm", f"{path}.attn.k_norm", index=i)
  tb.linear(f"{tprefix}.attn.proj", f"{path}.attn.proj", index=i)
  tb.add(f"{tprefix}.ls1.gamma", f"{path}.ls1.gamma", index=i)
  tb.norm(f"{tprefix}.norm2", f"{path}.norm2", index=i)
  tb.linear(f"{tprefix}.mlp.fc1", f"{path}.mlp.fc1", index=i)
  tb.linear(f"{tprefix}.mlp.fc2", f"{path}.mlp.fc2", index=i)
  tb.add(f"{tprefix}.ls2.gamma", f"{path}.ls2.gamma", index=i)


def _dpt(tb: TableBuilder, h: str) -> None:
  c1 = T.conv1x1_to_linear()
  tb.norm(f"{h}.norm", f"{h}.norm")
  for i in range(4):
    tb.add(f"{h}.projects.{i}.weight", f"{h}.projects.{i}.kernel", c1)
    tb.add(f"{h}.projects.{i}.bias", f"{h}.projects.{i}.bias")
    tb.add(f"{h}.scratch.layer{i + 1}_rn.weight", f"{h}.layer_rn.{i}.kernel", T.conv2d)
  for i in (0, 1):
    tb.add(f"{h}.resize_layers.{i}.weight", f"{h}.resize{i}.kernel", conv_transpose2d)
    tb.add(f"{h}.resize_layers.{i}.bias", f"{h}.resize{i}.bias")
  tb.conv(f"{h}.resize_layers.3", f"{h}.resize3", 2)
  for i in range(4):
    src, dst = f"{h}.scratch.refinenet{i + 1}", f"{h}.refinenets.{i}"
    tb.add(f"{src}.out_conv.weight", f"{dst}.out_conv.kernel", c1)
    tb.add(f"{src}.out_conv.bias", f"{dst}.out_conv.bias")
    for u, v in ((1, "res1"), (2, "res2")):
      if u == 1 and i == 3:
        continue  # refinenet4 has no residual input
      for conv in ("conv1", "conv2"):
        tb.conv(f"{src}.resConfUnit{u}.{conv}", f"{dst}.{v}.{conv}", 2)
  tb.conv(f"{h}.scratch.output_conv1", f"{h}.output_conv1", 2)
  tb.conv(f"{h}.scratch.output_conv2.0", f"{h}.output_conv2a", 2)
  tb.add(f"{h}.scratch.output_conv2.2.weight", f"{h}.output_conv2b.kernel", c1)
  tb.add(f"{h}.scratch.output_conv2.2.bias", f"{h}.output_conv2b.bias")


def table(cfg: VGGTConfig) -> MappingTable:
  tb = TableBuilder("vggt")
  a = "aggregator"
  tb.add(f"{a}.camera_token", f"{a}.camera_token", T.squeeze_leading(1))
  tb.add(f"{a}.register_token", f"{a}.register_token", T.squeeze_leading(1))
  pe = f"{a}.patch_embed"
  tb.add(f"{pe}.cls_token", f"{pe}.cls_token", T.squeeze_leading(2))
  tb.add(f"{pe}.pos_embed", f"{pe}.pos_embed", T.squeeze_leading(1))
  tb.add(f"{pe}.register_tokens", f"{pe}.register_tokens", T.squeeze_leading(1))
  tb.conv(f"{pe}.patch_embed.proj", f"{pe}.proj", 2)
  for i in range(cfg.pe_depth):
    _block(tb, f"{pe}.blocks.{i}", f"{pe}.blocks", i, qk_norm=False)
  tb.norm(f"{pe}.norm", f"{pe}.norm")
  for i in range(cfg.depth):
    for kind in ("frame_blocks", "global_blocks"):
      _block(tb, f"{a}.{kind}.{i}", f"{a}.{kind}", i, qk_norm=cfg.qk_norm)
  c = "camera_head"
  for i in range(cfg.camera_trunk_depth):
    _block(tb, f"{c}.trunk.{i}", f"{c}.trunk", i, qk_norm=False)
  tb.norm(f"{c}.token_norm", f"{c}.token_norm")
  tb.norm(f"{c}.trunk_norm", f"{c}.trunk_norm")
  tb.add(f"{c}.empty_pose_tokens", f"{c}.empty_pose_tokens", T.squeeze_leading(2))
  tb.linear(f"{c}.embed_pose", f"{c}.embed_pose")
  tb.linear(f"{c}.poseLN_modulation.1", f"{c}.pose_ln_modulation")
  tb.linear(f"{c}.pose_branch.fc1", f"{c}.pose_branch.fc1")
  tb.linear(f"{c}.pose_branch.fc2", f"{c}.pose_branch.fc2")
  _dpt(tb, "point_head")
  _dpt(tb, "depth_head")
  tb.ignore(r"track_head\..*", "the released VGGT-1B file holds a track head; Gen3R's vendored VGGT class has "
                               "none (its from_pretrained loads non-strictly) and uses only camera/depth/point heads")
  tb.ignore(r"aggregator\.patch_embed\.mask_token", "DINOv2 mask token: only used for masked-image training; VGGT "
                                                    "never passes masks")
  return tb.build()


def spec(name: str, config: dict | None = None) -> ModelSpec:
  if config is None:
    cfg = VGGTConfig.vggt_1b()
  elif isinstance(config, VGGTConfig):
    cfg = config
  elif "aggregator" in config:
    cfg = VGGTConfig.from_fixture(config)
  else:
    cfg = VGGTConfig.from_dict(config)
  return ModelSpec(name, cfg, VGGT, table)
