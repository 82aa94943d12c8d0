"""CLIP image encoder of Wan / Gen3R: the visual tower of open-clip XLM-RoBERTa ViT-H/14 (``CLIPModel``).

    frames [B, H, W, 3] in [-1, 1] ─► bicubic to 224 (torch, a=-0.75, no antialias) ─► x*0.5+0.5 ─► (x-mean)/std
      ─► patch conv 14 (no bias) ─► [cls | patches] + pos ─► LayerNorm ─► 31 of 32 blocks ─► [B, 257, 1280]

* Pre-norm blocks: ``x += proj(attn(ln1(x)))``; ``x += fc2(gelu_erf(fc1(ln2(x))))``; attention scaled by
  ``1/sqrt(head_dim)``, no mask; fused ``to_qkv`` viewed as ``[B, S, 3, heads, head_dim]``.
* ``use_31_block``: the last transformer block is dropped (not even built) and there is no post-norm or head:
  the token sequence before them is the DiT's ``clip_fea``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.errors import Gen3RInputError, check_array, require
from gen3r_jax.models.checkpoint import CheckpointMixin
from gen3r_jax.models.config import ModelConfig, dtype_of
from gen3r_jax.nn.attention import IMPLEMENTATIONS, attention
from gen3r_jax.nn.jit import FAST_COMPILE, module_jit
from gen3r_jax.nn.linear import Conv, Dense
from gen3r_jax.nn.norms import LayerNorm
from gen3r_jax.nn.params import make_param
from gen3r_jax.nn.resample import resize
from gen3r_jax.nn.stack import REMAT_POLICIES, scan_layers, stack

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ACTIVATIONS = ("gelu", "quick_gelu")


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(ModelConfig):
  """The ViT of ``XLMRobertaCLIP`` (``vision_*`` constructor values) plus preprocessing and compute settings.

  ``num_layers`` counts the blocks in the checkpoint; with ``use_31_block`` the model builds and runs
  ``num_layers - 1`` of them.
  """
  image_size: int = 224
  patch_size: int = 14
  dim: int = 1280
  mlp_ratio: float = 4
  num_heads: int = 16
  num_layers: int = 32
  use_31_block: bool = True
  activation: str = "gelu"      # "gelu" = exact erf (ViT-H/14); "quick_gelu" = x * sigmoid(1.702 x)
  norm_eps: float = 1e-5
  mean: tuple[float, ...] = CLIP_MEAN
  std: tuple[float, ...] = CLIP_STD
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention: str = "auto"
  remat: str = "none"

  def __post_init__(self):
    require(self.dim % self.num_heads == 0,
            f"CLIPVisionConfig: dim {self.dim} must be divisible by num_heads {self.num_heads}")
    require(self.image_size % self.patch_size == 0,
            f"CLIPVisionConfig: image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
    require(self.num_blocks >= 1, f"CLIPVisionConfig: {self.num_layers} layer(s) leave no block to run")
    self.require_choice("activation", ACTIVATIONS)
    self.require_choice("attention", IMPLEMENTATIONS)
    self.require_choice("remat", REMAT_POLICIES)

  @property
  def num_blocks(self) -> int:
    """Blocks built and run."""
    return self.num_layers - 1 if self.use_31_block else self.num_layers

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_tokens(self) -> int:
    return 1 + self.grid ** 2

  @property
  def mlp_dim(self) -> int:
    return int(self.dim * self.mlp_ratio)

  @classmethod
  def vit_h_14(cls, **kw) -> "CLIPVisionConfig":
    """open-clip xlm-roberta-large ViT-H/14 as used by Wan2.1 / Gen3R: 257 x 1280 tokens."""
    return cls(**kw)

  @classmethod
  def tiny(cls, **kw) -> "CLIPVisionConfig":
    base = dict(image_size=28, patch_size=14, dim=32, num_heads=4, num_layers=3)
    return cls(**{**base, **kw})

  @classmethod
  def from_fixture(cls, cfg: dict[str, Any], **kw) -> "CLIPVisionConfig":
    """From a fixture config (``{"vision": {...}, "normalize_mean": ...}``) or ``XLMRobertaCLIP`` kwargs
    (``vision_dim``, ``vision_heads``, ... as in the manifest and ``clip_image_encoder/config.json``)."""
    if "vision" in cfg:
      v = cfg["vision"]
      vals = dict(image_size=v["image_size"], patch_size=v["patch_size"], dim=v["dim"],
                  mlp_ratio=v.get("mlp_ratio", 4), num_heads=v["num_heads"], num_layers=v["num_layers"],
                  activation=v.get("activation", "gelu"), norm_eps=v.get("norm_eps", 1e-5))
      _check_supported(v.get("pool_type", "token"), v.get("pre_norm", True))
    else:
      vals = dict(image_size=cfg.get("image_size", 224), patch_size=cfg.get("patch_size", 14),
                  dim=cfg.get("vision_dim", 1280), mlp_ratio=cfg.get("vision_mlp_ratio", 4),
                  num_heads=cfg.get("vision_heads", 16), num_layers=cfg.get("vision_layers", 32),
                  activation=cfg.get("activation", "gelu"), norm_eps=cfg.get("norm_eps", 1e-5))
      _check_supported(cfg.get("vision_pool", "token"), cfg.get("vision_pre_norm", True))
    if "normalize_mean" in cfg:
      vals.update(mean=tuple(cfg["normalize_mean"]), std=tuple(cfg["normalize_std"]))
    return cls(**{**vals, **kw})


def _check_supported(pool_type: str, pre_norm: bool) -> None:
  if pool_type != "token" or not pre_norm:
    raise Gen3RInputError(f"CLIPVisionConfig: only pool_type='token' with pre_norm=True (open-clip ViT-H/14) is "
                          f"supported, got pool_type={pool_type!r}, pre_norm={pre_norm}")


class CLIPAttention(nnx.Module):
  def __init__(self, cfg: CLIPVisionConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    self.to_qkv = Dense(cfg.dim, 3 * cfg.dim, axes=("embed", "heads"), **kw)
    self.proj = Dense(cfg.dim, cfg.dim, axes=("heads", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, s, c = x.shape
    h = self.cfg.num_heads
    qkv = self.to_qkv(x).reshape(b, s, 3, h, c // h)  # [B, S, 3, H, Dh]
    y = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], implementation=self.cfg.attention)
    return self.proj(y.reshape(b, s, c))  # [B, S, D]


class CLIPMlp(nnx.Module):
  def __init__(self, cfg: CLIPVisionConfig, *, rngs: nnx.Rngs):
    self.activation = cfg.activation
    kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    self.fc1 = Dense(cfg.dim, cfg.mlp_dim, axes=("embed", "mlp"), **kw)
    self.fc2 = Dense(cfg.mlp_dim, cfg.dim, axes=("mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.fc1(x)
    y = jax.nn.gelu(y, approximate=False) if self.activation == "gelu" else y * jax.nn.sigmoid(1.702 * y)
    return self.fc2(y)


class CLIPBlock(nnx.Module):
  def __init__(self, cfg: CLIPVisionConfig, *, rngs: nnx.Rngs):
    pd = dtype_of(cfg.param_dtype)
    self.norm1 = LayerNorm(cfg.dim, eps=cfg.norm_eps, rngs=rngs, param_dtype=pd)
    self.attn = CLIPAttention(cfg, rngs=rngs)
    self.norm2 = LayerNorm(cfg.dim, eps=cfg.norm_eps, rngs=rngs, param_dtype=pd)
    self.mlp = CLIPMlp(cfg, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))  # [B, S, D]


class CLIPVision(CheckpointMixin, nnx.Module):
  """``images [B, H, W, 3]`` in [-1, 1] -> tokens ``[B, 1 + (image_size/patch)^2, dim]`` (see module doc)."""

  Config = CLIPVisionConfig

  def __init__(self, cfg: CLIPVisionConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt, pd = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    p = cfg.patch_size
    self.patch_embedding = Conv(3, cfg.dim, (p, p), strides=p, use_bias=False, dtype=dt, param_dtype=pd,
                                axes=(None, None, None, "embed"), rngs=rngs)
    std = cfg.dim ** -0.5
    self.cls_embedding = make_param(rngs, nnx.initializers.normal(std), (cfg.dim,), ("embed",), pd)
    self.pos_embedding = make_param(rngs, nnx.initializers.normal(std), (cfg.num_tokens, cfg.dim),
                                    (None, "embed"), pd)
    self.pre_norm = LayerNorm(cfg.dim, eps=cfg.norm_eps, rngs=rngs, param_dtype=pd)
    self.blocks = stack(lambda r: CLIPBlock(cfg, rngs=r), cfg.num_blocks, rngs)

  def preprocess(self, images: jax.Array) -> jax.Array:
    """``[B, H, W, 3]`` in [-1, 1] -> normalised ``[B, S, S, 3]`` (S = image_size), float32."""
    check_images(images, "images")
    s = self.cfg.image_size
    x = resize(images.astype(jnp.float32), (s, s), "bicubic", antialias=False)
    x = x * 0.5 + 0.5
    return (x - jnp.asarray(self.cfg.mean, jnp.float32)) / jnp.asarray(self.cfg.std, jnp.float32)

  def visual(self, x: jax.Array) -> jax.Array:
    """The ViT on preprocessed ``[B, S, S, 3]`` -> ``[B, 1 + N, D]`` (all built blocks, no post-norm)."""
    cfg = self.cfg
    check_array(x, "pixels", ndim=4, layout="[B, S, S, 3]",
                dims={1: cfg.image_size, 2: cfg.image_size, 3: 3})
    dt = dtype_of(cfg.dtype)
    b = x.shape[0]
    x = self.patch_embedding(x.astype(dt))  # [B, g, g, D]
    x = x.reshape(b, -1, cfg.dim)  # [B, N, D], row-major patches
    cls = jnp.broadcast_to(self.cls_embedding[...].astype(dt), (b, 1, cfg.dim))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embedding[...].astype(dt)  # [B, 1 + N, D]
    x = self.pre_norm(x)
    return scan_layers(self.blocks, x, remat=cfg.remat)

  def __call__(self, images: jax.Array) -> jax.Array:
    """``[B, H, W, 3]`` frames in [-1, 1] (any H, W) -> ``[B, 1 + N, D]`` CLIP tokens."""
    return self.visual(self.preprocess(images))


def check_images(images, name: str) -> None:
  check_array(images, name, ndim=4, layout="[B, H, W, 3] (channels-last frames in [-1, 1])", floating=True)
  if images.shape[-1] != 3:
    raise Gen3RInputError(f"{name}: expected 3 (RGB) channels last, [B, H, W, 3], got shape "
                          f"{tuple(images.shape)}; PyTorch-layout [B, 3, H, W] frames must be transposed first")


def encode_videos(model: CLIPVision, videos: Sequence[jax.Array]) -> jax.Array:
  """``CLIPModel.forward``: a list of ``[T_i, H_i, W_i, 3]`` clips in [-1, 1] (sizes may differ), each resized on
  its own, concatenated along frames -> ``[sum T_i, 1 + N, D]``."""
  if not isinstance(videos, (list, tuple)) or not videos:
    raise Gen3RInputError("videos: expected a non-empty list of [T, H, W, 3] arrays")
  for i, v in enumerate(videos):
    check_images(v, f"videos[{i}]")
  pixels = jnp.concatenate([_preprocess(model, jnp.asarray(v)) for v in videos], axis=0)
  return _visual(model, pixels)


@module_jit(compiler_options=FAST_COMPILE)  # no parameter copies out, no Triton GEMM autotuning
def _preprocess(model: CLIPVision, x):
  return model.preprocess(x)


@module_jit(compiler_options=FAST_COMPILE)
def _visual(model: CLIPVision, x):
  return model.visual(x)


__all__ = ("CLIPVisionConfig", "CLIPVision", "encode_videos", "CLIP_MEAN", "CLIP_STD")
