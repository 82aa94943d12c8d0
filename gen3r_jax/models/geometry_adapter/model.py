"""Gen3R geometry adapter: a modified Wan causal VAE between VGGT token grids and Wan-sized latents (Flax NNX).

``tokens [B, T, 40, 40, input_dim]`` (``T = 1 + 4k``) -> posterior over ``[B, 1 + k, 70, 70, 16]`` and back to
``[B, 1 + 4(t-1), 40, 40, output_dim]``. The encoder/decoder bodies are the Wan VAE's blocks
(:mod:`gen3r_jax.models.wan_vae.blocks`) with stage resamplers that keep the spatial size (``spatial="none"``);
the spatial change lives in two hard-wired per-frame ends:

* encoder ``init_block``: nearest-exact upsample with PyTorch ``scale_factor=1.75`` semantics (40 -> 70), then
  conv 3x3 pad 1 ``input_dim -> input_dim / resample_scale``;
* decoder ``out_block``: nearest-exact resize to ``size=(80, 80)`` (70 -> 80), zero pad right/bottom by 1, conv
  3x3 stride 2 ``output_dim / resample_scale -> output_dim`` (81 -> 40).

The release's grids are 40 <-> 70 (560x560 frames); ``GeometryAdapterConfig.token_grid`` (default 40) sets them
for smaller debug frames with the same arithmetic: ``g`` tokens -> ``1.75 g`` latents -> resize to ``2 g`` ->
``g`` (e.g. 8 <-> 14 for 112x112 frames). Converted checkpoints and the official code use 40.

Latent normalisation ``(mu - mean) * (1/std)`` / ``z / (1/std) + mean`` uses the hard-coded constants (not the
``mean``/``std`` entries a ``save_pretrained_safetensors`` file carries). There is no clamp on decode.

Peak memory (released sizes, 560x560 frames -> 40x40 tokens, float32, per batch element): the heaviest tensors
are the per-frame ends, ``[4, 70, 70, 10240]`` = 803 MB for one encoder chunk after the 40 -> 70 upsample and
``[4, 80, 80, 1024]`` = 105 MB before the decoder's out conv; the bodies run at 70x70 with at most 512 channels
(``[4, 70, 70, 512]`` = 40 MB per tensor). The caches (2 frames per causal conv at 70x70) total 0.25 GB for
the encoder and 0.27 GB for the decoder and do not grow with T.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.models.checkpoint import CheckpointMixin
from gen3r_jax.errors import check_array, require
from gen3r_jax.models.config import ModelConfig, dtype_of
from gen3r_jax.models.wan_vae.vae import (CausalLatentCodec, DiagonalGaussian, check_frames, decode_raw_jit,
                                      encode_params_jit)
from gen3r_jax.models.wan_vae.blocks import Decoder3d, Encoder3d, per_frame
from gen3r_jax.nn.causal_conv import CausalConv3d
from gen3r_jax.nn.linear import Conv
from gen3r_jax.nn.resample import nearest_exact

ADAPTER_LATENT_MEAN = (0.14257538, 0.18577661, 0.14208488, 0.06298031, 0.09738383, -0.06001362, -0.04728968,
                       -0.12326089, -0.04308648, -0.10522724, 0.08278389, -0.00270301, -0.09203526, 0.03170688,
                       0.11458898, 0.10679868)
ADAPTER_LATENT_STD = (0.56929547, 0.61451489, 0.68560797, 0.78598368, 0.51151282, 0.75570852, 0.80284864,
                      0.63438177, 0.82458758, 0.59266430, 0.75781488, 0.70593017, 0.70382243, 0.57837099,
                      0.73155540, 0.71971470)
# Hard-wired in the official Resample('upsample2d' / 'downsample2d'): only these grids work.
TOKEN_GRID = 40         # VGGT token grid (560 / 14)
LATENT_GRID = 70        # Wan latent grid (560 / 8)
UP_SCALE_FACTOR = 1.75  # 40 -> 70, PyTorch scale_factor semantics
OUT_RESIZE = 80         # 70 -> 80 (size semantics), then pad 1 + stride-2 conv -> 40


@dataclasses.dataclass(frozen=True)
class GeometryAdapterConfig(ModelConfig):
  """Adapter sizes; the release is ``hidden_dim 128, input/output 10240, resample_scale 10``."""
  hidden_dim: int = 128
  z_dim: int = 16
  input_dim: int = 10240
  output_dim: int = 10240
  resample_scale: int = 10
  dim_mult: tuple[int, ...] = (4, 2, 1, 1)
  num_res_blocks: int = 2
  temperal_downsample: tuple[bool, ...] = (False, True, True)
  latent_mean: tuple[float, ...] = ADAPTER_LATENT_MEAN
  latent_std: tuple[float, ...] = ADAPTER_LATENT_STD
  attention: str = "xla"
  dtype: str = "float32"
  param_dtype: str = "float32"
  # VGGT token grid (frames / patch 14). The release's 40 (560x560 frames); any multiple of 4 keeps the official
  # resampling arithmetic (tokens g -> latents 1.75 g = frames / 8 -> 2 g -> stride-2 conv -> g): e.g. 8 for
  # 112x112 debug frames (14x14 latents)
  token_grid: int = TOKEN_GRID

  @property
  def latent_grid(self) -> int:
    """The latent grid ``1.75 * token_grid`` (70 for the release)."""
    return int(self.token_grid * UP_SCALE_FACTOR)

  @property
  def out_resize(self) -> int:
    """The decoder's out-block resize ``2 * token_grid`` (80 for the release)."""
    return 2 * self.token_grid

  def __post_init__(self):
    if self.token_grid < 4 or self.token_grid % 4:
      raise ValueError(f"token_grid must be a positive multiple of 4 (40 for 560x560 frames), got {self.token_grid}")

  @classmethod
  def tiny(cls) -> "GeometryAdapterConfig":
    return cls(hidden_dim=8, input_dim=320, output_dim=320)

  @classmethod
  def gen3r(cls) -> "GeometryAdapterConfig":
    return cls()

  @property
  def temperal_upsample(self) -> tuple[bool, ...]:
    return tuple(self.temperal_downsample[::-1])

  @classmethod
  def from_fixture(cls, d: dict) -> "GeometryAdapterConfig":
    """From a fixture / manifest / official ``config.json`` dict (``hidden_dim``, ``input_dim``, ...)."""
    inner = dict(d.get("inner", {}))
    td = tuple(bool(v) for v in inner.get("temperal_downsample", (False, True, True)))
    if "temperal_upsample" in inner and tuple(inner["temperal_upsample"]) != td[::-1]:
      raise ValueError("temperal_upsample must be temperal_downsample reversed")
    if inner.get("attn_scales", []):
      raise ValueError("attn_scales other than [] are not supported (the adapter uses none)")
    if inner.get("dropout", 0.0):
      raise ValueError("dropout must be 0 (inference port)")
    g = lambda k, default: d.get(k, inner.get(k, default))  # noqa: E731
    return cls(hidden_dim=int(d.get("hidden_dim", inner.get("dim", 128))),
               z_dim=int(inner.get("z_dim", d.get("latent_channels", 16))),
               input_dim=int(g("input_dim", 10240)), output_dim=int(g("output_dim", 10240)),
               resample_scale=int(g("resample_scale", 10)),
               dim_mult=tuple(inner.get("dim_mult", (4, 2, 1, 1))),
               num_res_blocks=int(inner.get("num_res_blocks", 2)), temperal_downsample=td,
               latent_mean=tuple(float(v) for v in d.get("latent_mean", ADAPTER_LATENT_MEAN)),
               latent_std=tuple(float(v) for v in d.get("latent_std", ADAPTER_LATENT_STD)))


class AdapterEncoder(Encoder3d):
  """Wan encoder body behind the per-frame ``init_block`` (40 -> 70 nearest-exact + conv)."""

  def __init__(self, input_dim: int, resample_scale: int, *args, dtype, param_dtype, rngs, **kw):
    self.init_conv = Conv(input_dim, input_dim // resample_scale, (3, 3), padding=1, dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)
    super().__init__(input_dim // resample_scale, *args, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **kw)

  def _pre(self, x):  # [B, T, 40, 40, C_in] -> [B, T, 70, 70, C_in / rs]
    def one(f):
      h, w = f.shape[1:3]
      out = (int(h * UP_SCALE_FACTOR), int(w * UP_SCALE_FACTOR))
      up = nearest_exact(f.astype(jnp.float32), out, scale_factor=(UP_SCALE_FACTOR, UP_SCALE_FACTOR))
      return self.init_conv(up.astype(f.dtype))
    return per_frame(one, x)


class AdapterDecoder(Decoder3d):
  """Wan decoder body followed by the per-frame ``out_block`` (70 -> 80 resize, pad, stride-2 conv -> 40)."""

  def __init__(self, output_dim: int, resample_scale: int, *args, dtype, param_dtype, rngs, out_resize=OUT_RESIZE,
               **kw):
    super().__init__(*args, output_dim // resample_scale, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **kw)
    self.out_resize = int(out_resize)
    self.out_conv = Conv(output_dim // resample_scale, output_dim, (3, 3), strides=2, padding=((0, 1), (0, 1)),
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def _post(self, x):  # [B, T, 70, 70, C_out / rs] -> [B, T, 40, 40, C_out]
    def one(f):
      up = nearest_exact(f.astype(jnp.float32), (self.out_resize, self.out_resize)).astype(f.dtype)
      return self.out_conv(up)
    return per_frame(one, x)


class GeometryAdapter(CausalLatentCodec, nnx.Module, CheckpointMixin):
  """``encoder`` (+ init block) + ``conv1`` (1x1x1, 2z) / ``conv2`` (1x1x1, z) + ``decoder`` (+ out block)."""

  Config = GeometryAdapterConfig

  def __init__(self, cfg: GeometryAdapterConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    common = dict(num_res_blocks=cfg.num_res_blocks, attention_impl=cfg.attention, spatial="none", **kw)
    z, h = cfg.z_dim, cfg.hidden_dim
    enc_dims = [h * u for u in (4, *cfg.dim_mult)]
    dec_dims = [h * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
    self.encoder = AdapterEncoder(cfg.input_dim, cfg.resample_scale, enc_dims, 2 * z,
                                  temporal=cfg.temperal_downsample, **common)
    self.conv1 = CausalConv3d(2 * z, 2 * z, 1, **kw)
    self.conv2 = CausalConv3d(z, z, 1, **kw)
    self.decoder = AdapterDecoder(cfg.output_dim, cfg.resample_scale, z, dec_dims,
                                  temporal=cfg.temperal_upsample, out_resize=cfg.out_resize, **common)

  # ---- public API (checks input before any tracing) ----
  def check_tokens(self, tokens) -> None:
    check_array(tokens, "tokens", ndim=5, layout="[B, T, 40, 40, C]", floating=True)
    c = self.cfg.input_dim
    require(tokens.shape[-1] == c,
            f"tokens: expected {c} channels last ([B, T, 40, 40, C] layout), got shape {tuple(tokens.shape)}; "
            f"the adapter input is the 5 VGGT token chunks concatenated on the last axis.")
    g = self.cfg.token_grid
    require(tuple(tokens.shape[2:4]) == (g, g),
            f"tokens: the adapter only accepts a {g}x{g} token grid ({14 * g}x{14 * g} images, patch 14; its "
            f"config's token_grid), got {tokens.shape[2]}x{tokens.shape[3]}; resize the frames to {14 * g}x{14 * g}.")
    check_frames(tokens, "tokens")

  def check_latents(self, z) -> None:
    check_array(z, "z", ndim=5, layout="[B, t, 70, 70, C]", floating=True)
    require(z.shape[-1] == self.cfg.z_dim,
            f"z: expected {self.cfg.z_dim} latent channels last ([B, t, 70, 70, C] layout), got shape "
            f"{tuple(z.shape)}; transpose a PyTorch [B, C, t, h, w] latent with z.transpose(0, 2, 3, 4, 1).")
    lg, g = self.cfg.latent_grid, self.cfg.token_grid
    require(tuple(z.shape[2:4]) == (lg, lg),
            f"z: the adapter only decodes {lg}x{lg} latents (its token_grid {g}: {lg} -> {2 * g} -> {g}), got "
            f"{z.shape[2]}x{z.shape[3]}; pass the geometry half of {8 * lg}x{8 * lg} latents.")

  def encode(self, tokens: jax.Array, *, chunked: bool = True) -> DiagonalGaussian:
    """``tokens [B, T, 40, 40, input_dim]`` -> posterior over ``[B, 1 + (T-1)/4, 70, 70, z]``."""
    self.check_tokens(tokens)
    return DiagonalGaussian(encode_params_jit(self, jnp.asarray(tokens), chunked=chunked))

  def decode(self, z: jax.Array, *, chunked: bool = True) -> jax.Array:
    """``z [B, t, 70, 70, z]`` (normalised) -> ``[B, 1 + 4(t-1), 40, 40, output_dim]`` (no clamp)."""
    self.check_latents(z)
    return decode_raw_jit(self, jnp.asarray(z), chunked=chunked)
