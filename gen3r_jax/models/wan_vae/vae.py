"""Wan2.1 causal 3D video VAE (``AutoencoderKLWan`` of the VideoX-Fun copy vendored in Gen3R), Flax NNX.

Layout: video ``[B, T, H, W, 3]`` in ``[-1, 1]`` with ``T = 1 + 4k`` and ``H, W`` multiples of 8; latents
``[B, 1 + k, H/8, W/8, 16]``.

* :meth:`WanVAE.encode` -> :class:`DiagonalGaussian` whose mean is normalised ``(mu - mean) * (1/std)`` (the
  log-variance is not normalised; it is clamped to ``[-30, 20]`` as diffusers does).
* :meth:`WanVAE.decode` de-normalises ``z / (1/std) + mean``, decodes and clamps to ``[-1, 1]`` (``clamp=False``
  gives the raw output). ``1/std`` is computed once in float32, as the official code does.

Time is processed causally in chunks (frame 0, then 4 frames at a time when encoding; one latent frame at a
time when decoding) with a ``jax.lax.scan`` over chunks, so compile time does not depend on the number of
frames and activations stay bounded by one chunk (see :mod:`gen3r_jax.models.wan_vae.blocks` for why this
equals the whole-clip computation; ``chunked=False`` runs the whole clip at once as a reference).

Peak memory of the chunked design at 560x560, base width 96, float32 (bf16 halves it), per batch element: the
largest activations are the full-resolution stages, one 4-frame chunk of ``[4, 560, 560, 96]`` = 482 MB per
tensor (encoder stage 0 and decoder stage 3; a residual block holds about 4 such tensors, including the
cache-extended conv input of 6 frames). The carried caches (2 frames per causal conv, measured with
``jax.eval_shape`` on the released config) total 1.76 GB for the encoder and 2.97 GB for the decoder,
independent of the frame count. A whole-clip pass over 49 frames would instead hold ~5.9 GB per
full-resolution tensor. The traced program has the same size for 9 and 49 frames (the chunks are a
``lax.scan``), so compile time does not grow with the clip length either.

Measured on one NVIDIA H100 (2026-11-26, jax 0.11.2, random weights, B = 1, 49 frames of 560x560): bfloat16
encode 0.30 s and decode 0.49 s after a ~10 s first call (compile); peak GPU memory 3.5 GiB after the encode,
4.5 GiB after encode + decode. float32: encode 0.50 s, decode 0.82 s. XLA's compiled temp buffers
(``memory_analysis``): encode 2.55 / 4.71 GiB, decode 3.15 / 6.46 GiB (bf16 / fp32); the first fp32 call's
process peak (37.7 GiB) was conv autotuning scratch, not the program.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


from gen3r_jax.errors import check_array, require
from gen3r_jax.models.checkpoint import CheckpointMixin
from gen3r_jax.models.config import ModelConfig, dtype_of
from gen3r_jax.models.init import random_params
from gen3r_jax.models.wan_vae.blocks import Decoder3d, Encoder3d, run_decoder, run_encoder
from gen3r_jax.nn.causal_conv import CausalConv3d
from gen3r_jax.nn.jit import FAST_COMPILE, module_jit

WAN_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                   0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                  3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
ENCODE_CHUNK = 4  # frames per encoder chunk after frame 0 (hard-coded in the official code)


@dataclasses.dataclass(frozen=True)
class WanVAEConfig(ModelConfig):
  """Wan VAE sizes. ``dim`` is 96 in the release (the official ``_video_vae`` hard-codes it)."""
  dim: int = 96
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  temperal_downsample: tuple[bool, ...] = (False, True, True)
  in_channels: int = 3
  latent_mean: tuple[float, ...] = WAN_LATENT_MEAN
  latent_std: tuple[float, ...] = WAN_LATENT_STD
  attention: str = "xla"  # head dim is 4*dim (384): too wide for the fused cuDNN kernel
  dtype: str = "float32"
  param_dtype: str = "float32"

  @classmethod
  def tiny(cls) -> "WanVAEConfig":
    return cls(dim=8)

  @classmethod
  def wan2_1(cls) -> "WanVAEConfig":
    return cls()

  @property
  def temperal_upsample(self) -> tuple[bool, ...]:
    return tuple(self.temperal_downsample[::-1])

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.dim_mult) - 1)

  @classmethod
  def from_fixture(cls, d: dict) -> "WanVAEConfig":
    """From a fixture / manifest config (``{latent_channels, inner: {dim, ...}, latent_mean, ...}``)."""
    inner = dict(d.get("inner", {}))
    dim = inner.get("dim", d.get("base_dim", d.get("dim", 96)))
    z = inner.get("z_dim", d.get("z_dim", d.get("latent_channels", 16)))
    td = tuple(bool(v) for v in inner.get("temperal_downsample",
                                          d.get("temperal_downsample", (False, True, True))))
    if "temperal_upsample" in inner and tuple(inner["temperal_upsample"]) != td[::-1]:
      raise ValueError("temperal_upsample must be temperal_downsample reversed")
    if inner.get("attn_scales", d.get("attn_scales", [])):
      raise ValueError("attn_scales other than [] are not supported (Wan2.1 uses none)")
    if inner.get("dropout", 0.0):
      raise ValueError("dropout must be 0 (inference port)")
    return cls(dim=int(dim), z_dim=int(z),
               dim_mult=tuple(inner.get("dim_mult", d.get("dim_mult", (1, 2, 4, 4)))),
               num_res_blocks=int(inner.get("num_res_blocks", d.get("num_res_blocks", 2))),
               temperal_downsample=td,
               latent_mean=tuple(float(v) for v in d.get("latent_mean", WAN_LATENT_MEAN)),
               latent_std=tuple(float(v) for v in d.get("latent_std", WAN_LATENT_STD)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DiagonalGaussian:
  """diffusers ``DiagonalGaussianDistribution`` over channels-last ``parameters = [mean | logvar]``."""
  parameters: jax.Array  # [B, t, h, w, 2z]: normalised mean, raw (unclamped) log-variance

  @property
  def mean(self) -> jax.Array:
    return jnp.split(self.parameters, 2, axis=-1)[0]

  @property
  def logvar(self) -> jax.Array:
    return jnp.clip(jnp.split(self.parameters, 2, axis=-1)[1], -30.0, 20.0)

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  def mode(self) -> jax.Array:
    return self.mean

  def sample(self, key: jax.Array | None = None, *, eps: jax.Array | None = None) -> jax.Array:
    """``mean + std * eps`` with ``eps ~ N(0, 1)`` drawn from ``key`` (or given, e.g. a scripted draw)."""
    if eps is None:
      eps = jax.random.normal(key, self.mean.shape, jnp.float32)
    return (self.mean.astype(jnp.float32) + self.std.astype(jnp.float32) * eps).astype(self.mean.dtype)

  def kl_terms(self) -> jax.Array:
    """Elementwise ``0.5 * (mean^2 + var - 1 - logvar)`` (float32); diffusers' ``kl()`` sums it over the
    PyTorch axes ``[1, 2, 3]`` = channels, frames and height (here axes ``-1, 1, 2``)."""
    m = self.mean.astype(jnp.float32)
    lv = self.logvar.astype(jnp.float32)
    return 0.5 * (m * m + jnp.exp(lv) - 1.0 - lv)


def latent_scale(mean, std):
  """``(mean, 1/std)`` as float32 arrays (``1/std`` rounded once in float32, as torch does)."""
  m = np.asarray(mean, np.float32)
  inv = np.float32(1.0) / np.asarray(std, np.float32)
  return jnp.asarray(m), jnp.asarray(inv)


def normalize_mu(mu: jax.Array, mean, std) -> jax.Array:
  m, inv = latent_scale(mean, std)
  return ((mu.astype(jnp.float32) - m) * inv).astype(mu.dtype)


def denormalize_z(z: jax.Array, mean, std) -> jax.Array:
  m, inv = latent_scale(mean, std)
  return (z.astype(jnp.float32) / inv + m).astype(z.dtype)


def unit_to_vae_range(frames: jax.Array) -> jax.Array:
  """Frames in [0, 1] -> the VAE's input range: ``clamp(2 x - 1, -1, 1)`` (the official preprocessing)."""
  return jnp.clip(frames * 2.0 - 1.0, -1.0, 1.0)


def check_frames(x, name: str) -> None:
  t = x.shape[1]
  require(t >= 1 and (t - 1) % ENCODE_CHUNK == 0,
          f"{name}: the number of frames T = {t} must be 1 + 4k (1, 5, 9, ..., 49); trim or pad the clip, "
          f"e.g. to {1 + ENCODE_CHUNK * max((t - 1) // ENCODE_CHUNK, 0)} frames.")


class CausalLatentCodec:
  """Traced encode/decode shared by :class:`WanVAE` and the geometry adapter (no input checks).

  Needs ``encoder``, ``conv1`` (1x1x1, 2z), ``conv2`` (1x1x1, z), ``decoder`` and ``cfg`` with ``dtype``,
  ``latent_mean``, ``latent_std``.
  """

  def encode_params(self, x: jax.Array, *, chunked: bool = True) -> jax.Array:
    """``[B, T, H, W, C] -> [B, t, h, w, 2z]`` = ``[normalised mu | logvar]`` (unchecked, traceable)."""
    x = x.astype(dtype_of(self.cfg.dtype))
    h = self.conv1(run_encoder(self.encoder, x, chunk=ENCODE_CHUNK, chunked=chunked))
    mu, logvar = jnp.split(h, 2, axis=-1)
    mu = normalize_mu(mu, self.cfg.latent_mean, self.cfg.latent_std)
    return jnp.concatenate([mu, logvar], axis=-1)

  def decode_raw(self, z: jax.Array, *, chunked: bool = True) -> jax.Array:
    """``[B, t, h, w, z] -> [B, 1 + 4(t-1), H, W, C]`` without any clamp (unchecked, traceable)."""
    z = denormalize_z(z.astype(dtype_of(self.cfg.dtype)), self.cfg.latent_mean, self.cfg.latent_std)
    return run_decoder(self.decoder, self.conv2(z), chunked=chunked)


class WanVAE(CausalLatentCodec, nnx.Module, CheckpointMixin):
  """The Wan2.1 VAE: ``encoder`` + ``conv1`` (1x1x1, 2z) / ``conv2`` (1x1x1, z) + ``decoder``."""

  Config = WanVAEConfig

  def __init__(self, cfg: WanVAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    common = dict(num_res_blocks=cfg.num_res_blocks, attention_impl=cfg.attention, **kw)
    z = cfg.z_dim
    enc_dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
    dec_dims = [cfg.dim * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
    self.encoder = Encoder3d(cfg.in_channels, enc_dims, 2 * z, temporal=cfg.temperal_downsample,
                             spatial="down", **common)
    self.conv1 = CausalConv3d(2 * z, 2 * z, 1, **kw)
    self.conv2 = CausalConv3d(z, z, 1, **kw)
    self.decoder = Decoder3d(z, dec_dims, cfg.in_channels, temporal=cfg.temperal_upsample,
                             spatial="up", **common)

  # ---- public API (checks input before any tracing) ----
  def check_video(self, video) -> None:
    check_array(video, "video", ndim=5, layout="[B, T, H, W, C]", floating=True)
    require(video.shape[-1] == self.cfg.in_channels,
            f"video: expected {self.cfg.in_channels} channels last ([B, T, H, W, C] layout), got shape "
            f"{tuple(video.shape)}; transpose a PyTorch [B, C, T, H, W] video with x.transpose(0, 2, 3, 4, 1).")
    check_frames(video, "video")
    f = self.cfg.spatial_factor
    require(video.shape[2] % f == 0 and video.shape[3] % f == 0,
            f"video: height and width must be multiples of {f}, got {video.shape[2]}x{video.shape[3]}; "
            f"resize or crop the frames (e.g. to 560x560).")

  def check_latents(self, z) -> None:
    check_array(z, "z", ndim=5, layout="[B, t, h, w, C]", floating=True)
    require(z.shape[-1] == self.cfg.z_dim,
            f"z: expected {self.cfg.z_dim} latent channels last ([B, t, h, w, C] layout), got shape "
            f"{tuple(z.shape)}; transpose a PyTorch [B, C, t, h, w] latent with z.transpose(0, 2, 3, 4, 1).")
    require(z.shape[1] >= 1, "z: needs at least one latent frame")

  def encode(self, video: jax.Array, *, chunked: bool = True) -> DiagonalGaussian:
    """``video [B, T, H, W, 3]`` in ``[-1, 1]`` -> posterior over ``[B, 1 + (T-1)/4, H/8, W/8, z]``."""
    self.check_video(video)
    return DiagonalGaussian(encode_params_jit(self, jnp.asarray(video), chunked=chunked))

  def decode(self, z: jax.Array, *, clamp: bool = True, chunked: bool = True) -> jax.Array:
    """``z [B, t, h, w, z]`` (normalised latents) -> video ``[B, 1 + 4(t-1), 8h, 8w, 3]``."""
    self.check_latents(z)
    y = decode_raw_jit(self, jnp.asarray(z), chunked=chunked)
    return jnp.clip(y, -1.0, 1.0) if clamp else y


def host_init(model_cls, cfg, *, seed: int = 0):
  """A random model built abstractly and filled on the host with numpy (no XLA init program to compile).

  Kept for the VAE-family tests and demos; see :func:`gen3r_jax.models.init.random_params` (PyTorch-style
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` kernels, norm gains ``1 + U(-0.1, 0.1)``).
  """
  return random_params(model_cls, cfg, seed=seed)


# module_jit: no parameter copies out; no Triton GEMM autotuning (compile time, see gen3r_jax.nn.jit)
@module_jit(static_argnames=("chunked",), compiler_options=FAST_COMPILE)
def encode_params_jit(model, x, chunked):
  """Jitted ``model.encode_params`` (shared with the geometry adapter)."""
  return model.encode_params(x, chunked=chunked)


@module_jit(static_argnames=("chunked",), compiler_options=FAST_COMPILE)
def decode_raw_jit(model, z, chunked):
  """Jitted ``model.decode_raw`` (shared with the geometry adapter)."""
  return model.decode_raw(z, chunked=chunked)
