"""Config of the Wan2.1-Fun Control-Camera i2v DiT (Gen3R's denoiser)."""

from __future__ import annotations

import dataclasses
from typing import Any

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.config import ModelConfig
from gen3r_jax.nn.attention import IMPLEMENTATIONS
from gen3r_jax.nn.stack import REMAT_POLICIES as _POLICIES

REMAT_POLICIES = tuple(_POLICIES)  # gen3r_jax.nn.stack
GEMMS = ("default", "fp8")         # the blocks' Dense layers: compute dtype, or float8 e4m3 (gen3r_jax.nn.fp8)

# Official constructor arguments that exist only for other variants and must keep their default here.
_FIXED = {"model_type": "i2v", "window_size": (-1, -1), "add_ref_conv": False}
# Official constructor arguments with no effect on this model (kept by the official config, unused by forward).
_UNUSED = ("in_channels", "hidden_size", "in_dim_ref_conv")


@dataclasses.dataclass(frozen=True)
class WanDiTConfig(ModelConfig):
  """Sizes follow ``WanTransformer3DModel.__init__`` (i2v, camera control adapter).

  ``in_dim`` = ``out_dim`` noisy latent channels + conditioning channels (Gen3R: 16 + 16 latents + 4 mask).
  """
  patch_size: tuple[int, int, int] = (1, 2, 2)
  text_len: int = 512
  in_dim: int = 36
  dim: int = 1536
  ffn_dim: int = 8960
  freq_dim: int = 256
  text_dim: int = 4096
  out_dim: int = 16
  num_heads: int = 12
  num_layers: int = 30
  qk_norm: bool = True
  cross_attn_norm: bool = True
  eps: float = 1e-6
  add_control_adapter: bool = True
  in_dim_control_adapter: int = 24
  control_unshuffle: int = 8          # PixelUnshuffle factor of the SimpleAdapter
  control_residual_blocks: int = 1
  clip_dim: int = 1280                # CLIP ViT-H penultimate width (MLPProj input)
  clip_tokens: int = 257              # hard-coded split context[:, :257] in the official cross-attention
  img_emb_eps: float = 1e-5           # torch LayerNorm default in MLPProj
  rope_theta: float = 10000.0
  rope_max_len: int = 1024            # positions per axis in the official RoPE table
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention: str = "auto"             # gen3r_jax.nn.attention implementation
  remat: str = "none"                 # one of REMAT_POLICIES (per block)
  gemm: str = "default"               # block linear layers: default (compute dtype) | fp8 (gen3r_jax.nn.fp8)

  def __post_init__(self):
    if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
      raise Gen3RInputError(f"WanDiTConfig: dim {self.dim} must split into {self.num_heads} heads of even size")
    self.require_choice("remat", REMAT_POLICIES)
    self.require_choice("attention", IMPLEMENTATIONS)
    self.require_choice("gemm", GEMMS)
    if self.in_dim <= self.out_dim:
      raise Gen3RInputError(f"WanDiTConfig: i2v needs in_dim > out_dim (conditioning channels), got in_dim "
                            f"{self.in_dim}, out_dim {self.out_dim}")

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  @property
  def cond_dim(self) -> int:
    """Channels of the conditioning input ``y`` (control latents + mask)."""
    return self.in_dim - self.out_dim

  @classmethod
  def tiny(cls, **kw) -> "WanDiTConfig":
    """The ``wan_dit_tiny`` fixture's size (2 layers, dim 32, head_dim 16, text_len 12)."""
    base = dict(text_len=12, dim=32, ffn_dim=64, freq_dim=32, text_dim=24, num_heads=2, num_layers=2)
    return cls(**{**base, **kw})

  @classmethod
  def wan_1_3b(cls, **kw) -> "WanDiTConfig":
    return cls(**{**dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30), **kw})

  @classmethod
  def wan_14b(cls, **kw) -> "WanDiTConfig":
    return cls(**{**dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40), **kw})

  @classmethod
  def from_fixture(cls, cfg: dict[str, Any], **kw) -> "WanDiTConfig":
    """From an official constructor config (fixture or manifest ``config``); unsupported variants are errors."""
    for key, want in _FIXED.items():
      got = cfg.get(key, want)
      got = tuple(got) if isinstance(got, list) else got
      if got != want:
        raise Gen3RInputError(f"WanDiTConfig: only {key}={want!r} is supported (Gen3R's DiT), got {got!r}")
    if not cfg.get("add_control_adapter", True):
      kw.setdefault("add_control_adapter", False)
    names = {f.name for f in dataclasses.fields(cls)}
    skip = set(_FIXED) | set(_UNUSED) | {"add_control_adapter"}
    unknown = set(cfg) - names - skip
    if unknown:
      raise Gen3RInputError(f"WanDiTConfig.from_fixture: unknown official config key(s) {sorted(unknown)}")
    vals = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names and k not in skip}
    return cls(**{**vals, **kw})
