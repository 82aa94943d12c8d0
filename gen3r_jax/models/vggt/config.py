"""VGGT configuration (aggregator with a DINOv2 patch embed, camera head, DPT depth/point heads).

Sizes follow the official ``VGGT()`` defaults (``vggt_1b``); :meth:`VGGTConfig.from_fixture` reads the nested
config dict that the parity fixtures store (``vggt_tiny``), so the same code builds any size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gen3r_jax.models.config import ModelConfig
from gen3r_jax.nn.attention import IMPLEMENTATIONS
from gen3r_jax.nn.stack import REMAT_POLICIES as _POLICIES

REMAT_POLICIES = tuple(_POLICIES)  # gen3r_jax.nn.stack


@dataclasses.dataclass(frozen=True)
class VGGTConfig(ModelConfig):
  """Every constructor value of the vendored VGGT that changes parameters or numerics.

  ``img_size // patch_size`` is the stored DINOv2 positional grid (37 for the release); inputs of any multiple of
  ``patch_size`` are accepted (the grid is interpolated).
  """
  img_size: int = 518
  patch_size: int = 14
  embed_dim: int = 1024
  # aggregator (alternating frame / global attention)
  depth: int = 24
  num_heads: int = 16
  mlp_ratio: float = 4.0
  num_register_tokens: int = 4
  qkv_bias: bool = True
  proj_bias: bool = True
  ffn_bias: bool = True
  qk_norm: bool = True
  rope_freq: float = 100.0
  init_values: float = 0.01
  # DINOv2 patch embed (ViT-L/14 with registers)
  pe_depth: int = 24
  pe_num_heads: int = 16
  pe_mlp_ratio: float = 4.0
  pe_num_register_tokens: int = 4
  pe_init_values: float = 1.0
  pe_interpolate_antialias: bool = True
  pe_interpolate_offset: float = 0.0
  # camera head
  camera_trunk_depth: int = 4
  camera_num_heads: int = 16
  camera_mlp_ratio: float = 4.0
  camera_init_values: float = 0.01
  camera_iterations: int = 4
  trans_act: str = "linear"
  quat_act: str = "linear"
  fl_act: str = "relu"
  # DPT heads
  dpt_features: int = 256
  dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
  intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)
  frames_chunk_size: int = 8    # DPT heads run this many frames at a time (0 = all at once)
  point_activation: str = "inv_log"
  point_conf_activation: str = "expp1"
  depth_activation: str = "exp"
  depth_conf_activation: str = "expp1"
  # numerics / execution
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"          # one of REMAT_POLICIES, for the scanned transformer stacks
  attention: str = "auto"      # gen3r_jax.nn.attention implementation

  def __post_init__(self):
    self.require_choice("remat", REMAT_POLICIES)
    self.require_choice("attention", IMPLEMENTATIONS)
    if len(self.dpt_out_channels) != 4 or len(self.intermediate_layer_idx) != 4:
      raise ValueError("the DPT heads read exactly 4 layers: dpt_out_channels and intermediate_layer_idx need "
                       "4 entries each")
    if max(self.intermediate_layer_idx) >= self.depth:
      raise ValueError(f"intermediate_layer_idx {self.intermediate_layer_idx} exceeds depth {self.depth}")
    if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
      raise ValueError("embed_dim / num_heads must be a multiple of 4 (2D RoPE splits the head dim in 4)")

  @property
  def patch_start_idx(self) -> int:
    """Camera token + register tokens come before the patch tokens."""
    return 1 + self.num_register_tokens

  @property
  def pos_grid(self) -> int:
    """Side of the stored DINOv2 positional-embedding grid."""
    return self.img_size // self.patch_size

  @classmethod
  def vggt_1b(cls, **kw) -> "VGGTConfig":
    """The released VGGT-1B (``VGGT()`` defaults; 1.19 B parameters with the unused mask token)."""
    return cls(**kw)

  @classmethod
  def tiny(cls, **kw) -> "VGGTConfig":
    """A small random-weight model for fast tests (same structure as ``vggt_tiny``, fewer layers)."""
    base = dict(img_size=28, embed_dim=32, depth=6, num_heads=2, pe_depth=2, pe_num_heads=2, camera_num_heads=2,
                dpt_features=16, dpt_out_channels=(8, 16, 32, 32), intermediate_layer_idx=(1, 2, 4, 5))
    base.update(kw)
    return cls(**base)

  @classmethod
  def from_fixture(cls, cfg: dict[str, Any], **kw) -> "VGGTConfig":
    """Build from the ``config`` dict of a ``vggt_tiny``-style fixture (nested as the official constructors)."""
    agg = cfg.get("aggregator", {})
    vit = cfg.get("patch_embed_vit", {})
    cam = cfg.get("camera_head", {})
    dpt = cfg.get("dpt_common", cfg.get("dpt_heads", {}))  # vggt_tiny vs pipeline_tiny naming
    pt = cfg.get("point_head", {})
    dh = cfg.get("depth_head", {})
    if agg.get("aa_order", ["frame", "global"]) != ["frame", "global"] or agg.get("aa_block_size", 1) != 1:
      raise ValueError("only aa_order ['frame', 'global'] with aa_block_size 1 (the released VGGT) is supported")
    if agg.get("patch_embed", "dinov2_vitl14_reg") != "dinov2_vitl14_reg":
      raise ValueError(f"unsupported patch embed {agg.get('patch_embed')!r}")
    if vit.get("ffn_layer", "mlp") != "mlp" or vit.get("qk_norm", False):
      raise ValueError("only the DINOv2 'mlp' FFN without qk-norm is supported")
    if cam.get("pose_encoding_type", "absT_quaR_FoV") != "absT_quaR_FoV":
      raise ValueError(f"unsupported pose encoding {cam.get('pose_encoding_type')!r}")
    if dpt.get("down_ratio", 1) != 1 or not dpt.get("pos_embed", True) or dpt.get("feature_only", False):
      raise ValueError("only DPT heads with down_ratio 1, pos_embed and feature_only=False are supported")
    embed_dim = cfg.get("embed_dim", 1024)
    for d in (cam, dpt):
      if "dim_in" in d and d["dim_in"] != 2 * embed_dim:
        raise ValueError(f"head dim_in {d['dim_in']} must be 2 * embed_dim = {2 * embed_dim}")
    out = dict(
        img_size=cfg.get("img_size", 518), patch_size=cfg.get("patch_size", 14), embed_dim=embed_dim,
        depth=agg.get("depth", 24), num_heads=agg.get("num_heads", 16), mlp_ratio=agg.get("mlp_ratio", 4.0),
        num_register_tokens=agg.get("num_register_tokens", 4), qkv_bias=agg.get("qkv_bias", True),
        proj_bias=agg.get("proj_bias", True), ffn_bias=agg.get("ffn_bias", True),
        qk_norm=agg.get("qk_norm", True), rope_freq=float(agg.get("rope_freq", 100)),
        init_values=agg.get("init_values", 0.01),
        pe_depth=vit.get("depth", 24), pe_num_heads=vit.get("num_heads", 16),
        pe_mlp_ratio=float(vit.get("mlp_ratio", 4.0)),
        pe_num_register_tokens=vit.get("num_register_tokens", agg.get("num_register_tokens", 4)),
        pe_init_values=vit.get("init_values", 1.0),
        pe_interpolate_antialias=vit.get("interpolate_antialias", True),
        pe_interpolate_offset=float(vit.get("interpolate_offset", 0.0)),
        camera_trunk_depth=cam.get("trunk_depth", 4), camera_num_heads=cam.get("num_heads", 16),
        camera_mlp_ratio=float(cam.get("mlp_ratio", 4)), camera_init_values=cam.get("init_values", 0.01),
        trans_act=cam.get("trans_act", "linear"), quat_act=cam.get("quat_act", "linear"),
        fl_act=cam.get("fl_act", "relu"),
        dpt_features=dpt.get("features", 256), dpt_out_channels=tuple(dpt.get("out_channels", (256, 512, 1024, 1024))),
        intermediate_layer_idx=tuple(dpt.get("intermediate_layer_idx", (4, 11, 17, 23))),
        point_activation=pt.get("activation", "inv_log"), point_conf_activation=pt.get("conf_activation", "expp1"),
        depth_activation=dh.get("activation", "exp"), depth_conf_activation=dh.get("conf_activation", "expp1"),
    )
    for name, d, n in (("point_head", pt, 4), ("depth_head", dh, 2)):
      if d.get("output_dim", n) != n:
        raise ValueError(f"{name}.output_dim must be {n}, got {d.get('output_dim')}")
    out.update(kw)
    return cls(**out)
