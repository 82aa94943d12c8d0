"""VGGT DPT head (depth or point maps + confidence), channels-last, evaluated in frame chunks.

Per kept layer ``[B, S, P, 2C]``: drop the special tokens, LayerNorm, 1x1 projection, + UV sin/cos pos-embed
(ratio 0.1), resize (ConvTranspose x4, ConvTranspose x2, identity, Conv 3x3 stride 2) -> RefineNet fusion from the
deepest level (bilinear ``align_corners=True`` resizes) -> ``output_conv1`` -> bilinear resize to the image size
-> pos-embed again -> ``conv3x3 -> ReLU -> conv1x1`` -> activation (points/depth) and ``1 + exp`` confidence.

Trap kept from the reference: ``ResidualConvUnit`` applies an in-place ReLU to its input, so its skip connection
adds ``relu(x)``, not ``x``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.models.config import dtype_of
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.nn.linear import Conv, Dense
from gen3r_jax.nn.norms import LayerNorm
from gen3r_jax.nn.params import make_param, torch_uniform
from gen3r_jax.nn.resample import resize


def _linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  """``torch.linspace(..., dtype=float32)``: two-sided formula in float32 (torch's vectorised CPU kernel groups
  the products per SIMD block, so a few values differ by 1 ulp; negligible after the 0.1-scaled sin/cos)."""
  start, end = np.float32(start), np.float32(end)
  if steps == 1:
    return np.array([start], np.float32)
  step = (end - start) / np.float32(steps - 1)
  i = np.arange(steps)
  half = steps // 2
  lo = start + step * i.astype(np.float32)
  hi = end - step * (steps - i - 1).astype(np.float32)
  return np.where(i < half, lo, hi).astype(np.float32)


@functools.lru_cache(maxsize=64)
def uv_pos_tables(h: int, w: int, channels: int, aspect: float) -> tuple[np.ndarray, np.ndarray]:
  """Separable halves of VGGT's UV pos-embed: column table ``[w, C/2]`` and row table ``[h, C/2]``.

  The full embedding at ``(i, j)`` is ``concat(col[j], row[i])`` (``create_uv_grid`` + ``position_grid_to_embed``
  with omega_0 = 100; sin/cos in float64, cast to float32).
  """
  diag = (aspect ** 2 + 1.0) ** 0.5
  span_x, span_y = aspect / diag, 1.0 / diag
  xs = _linspace_f32(-span_x * (w - 1) / w, span_x * (w - 1) / w, w)
  ys = _linspace_f32(-span_y * (h - 1) / h, span_y * (h - 1) / h, h)
  d = channels // 2
  omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
  omega = 1.0 / 100.0 ** omega

  def table(pos):
    out = pos.astype(np.float64)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1).astype(np.float32)

  return table(xs), table(ys)


def add_pos_embed(x: jax.Array, img_h: int, img_w: int, ratio: float = 0.1) -> jax.Array:
  """``x [N, h, w, C] + ratio * uv_embed`` (aspect ratio of the image ``img_w / img_h``)."""
  n, h, w, c = x.shape
  col, row = uv_pos_tables(h, w, c, img_w / img_h)
  col = jnp.broadcast_to(jnp.asarray(col)[None], (h, w, c // 2))
  row = jnp.broadcast_to(jnp.asarray(row)[:, None], (h, w, c // 2))
  pe = jnp.concatenate([col, row], axis=-1) * jnp.float32(ratio)          # [h, w, C]
  return (x.astype(jnp.float32) + pe).astype(x.dtype)


class ConvTranspose(nnx.Module):
  """``ConvTranspose2d`` with ``kernel == stride`` and no padding (non-overlapping), kernel ``[k, k, in, out]``."""

  def __init__(self, cin: int, cout: int, k: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.k, self.dtype = k, dtype
    init = torch_uniform(cout * k * k)
    self.kernel = make_param(rngs, init, (k, k, cin, cout), (None, None, "conv_in", "conv_out"), param_dtype)
    self.bias = make_param(rngs, init, (cout,), ("conv_out",), param_dtype)

  def __call__(self, x):                                                    # [N, h, w, Cin] -> [N, kh, kw, Cout]
    n, h, w, _ = x.shape
    y = jnp.einsum("nhwc,abco->nhawbo", x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                   preferred_element_type=jnp.float32 if self.dtype == jnp.float32 else None)
    y = y.reshape(n, h * self.k, w * self.k, -1) + self.bias[...].astype(y.dtype)
    return y.astype(self.dtype)


class ResidualConvUnit(nnx.Module):
  def __init__(self, f: int, **kw):
    self.conv1 = Conv(f, f, (3, 3), padding=1, **kw)
    self.conv2 = Conv(f, f, (3, 3), padding=1, **kw)

  def __call__(self, x):
    x = jax.nn.relu(x)  # the reference's in-place ReLU also replaces the skip input
    return self.conv2(jax.nn.relu(self.conv1(x))) + x


class FusionBlock(nnx.Module):
  """``out_conv(resize(RCU2(x0 + RCU1(x1))))`` (RCU1 only with a residual input)."""

  def __init__(self, f: int, has_residual: bool, **kw):
    self.res1 = ResidualConvUnit(f, **kw) if has_residual else None
    self.res2 = ResidualConvUnit(f, **kw)
    self.out_conv = Dense(f, f, axes=("conv_in", "conv_out"), **kw)

  def __call__(self, x, skip=None, size=None):
    if skip is not None:
      x = x + self.res1(skip)
    x = self.res2(x)
    size = size or (2 * x.shape[1], 2 * x.shape[2])
    x = resize(x, size, "bilinear", align_corners=True)
    return self.out_conv(x)


class DPTHead(nnx.Module):
  def __init__(self, cfg: VGGTConfig, output_dim: int, activation: str, conf_activation: str, *,
               rngs: nnx.Rngs):
    self.cfg, self.activation, self.conf_activation = cfg, activation, conf_activation
    d, oc, f = 2 * cfg.embed_dim, cfg.dpt_out_channels, cfg.dpt_features
    kw = dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    self.norm = LayerNorm(d, eps=1e-5, rngs=rngs, param_dtype=kw["param_dtype"])
    self.projects = nnx.List([Dense(d, o, axes=("embed", "conv_out"), **kw) for o in oc])
    self.resize0 = ConvTranspose(oc[0], oc[0], 4, **kw)
    self.resize1 = ConvTranspose(oc[1], oc[1], 2, **kw)
    self.resize3 = Conv(oc[3], oc[3], (3, 3), strides=2, padding=1, **kw)
    self.layer_rn = nnx.List([Conv(o, f, (3, 3), padding=1, use_bias=False, **kw) for o in oc])
    self.refinenets = nnx.List([FusionBlock(f, has_residual=(i < 3), **kw) for i in range(4)])
    self.output_conv1 = Conv(f, f // 2, (3, 3), padding=1, **kw)
    self.output_conv2a = Conv(f // 2, 32, (3, 3), padding=1, **kw)
    self.output_conv2b = Dense(32, output_dim, axes=("conv_in", "conv_out"), **kw)

  def _features(self, tokens: jax.Array, h: int, w: int, img_h: int, img_w: int) -> list[jax.Array]:
    """``tokens [4, N, P, 2C]`` -> four feature maps at 4x, 2x, 1x, 1/2x the patch grid."""
    ps = self.cfg.patch_start_idx
    feats = []
    for i in range(4):
      x = tokens[i][:, ps:]
      x = self.norm(x.reshape(x.shape[0], h, w, x.shape[-1]))               # [N, h, w, 2C]
      x = add_pos_embed(self.projects[i](x), img_h, img_w)
      x = (self.resize0, self.resize1, None, self.resize3)[i](x) if i != 2 else x
      feats.append(x)
    return feats

  def _forward_frames(self, tokens: jax.Array, img_h: int, img_w: int):
    """``tokens [4, N, P, 2C]`` (N = frames) -> (preds ``[N, H, W, out-1]``, conf ``[N, H, W]``)."""
    p = self.cfg.patch_size
    h, w = img_h // p, img_w // p
    l1, l2, l3, l4 = [rn(x) for rn, x in zip(self.layer_rn, self._features(tokens, h, w, img_h, img_w))]
    r1, r2, r3, r4 = self.refinenets
    out = r4(l4, size=l3.shape[1:3])
    out = r3(out, l3, size=l2.shape[1:3])
    out = r2(out, l2, size=l1.shape[1:3])
    out = r1(out, l1)
    out = self.output_conv1(out)
    out = resize(out, (h * p, w * p), "bilinear", align_corners=True)
    out = add_pos_embed(out, img_h, img_w)
    out = self.output_conv2b(jax.nn.relu(self.output_conv2a(out))).astype(jnp.float32)  # [N, H, W, out]
    return head_activation(out[..., :-1], self.activation), conf_activation(out[..., -1], self.conf_activation)

  def __call__(self, tokens: jax.Array, image_hw: tuple[int, int], frames_chunk_size: int | None = None):
    """``tokens [4, B, S, P, 2C]`` -> (preds ``[B, S, H, W, out-1]``, conf ``[B, S, H, W]``), float32.

    Frames are independent, so they run in chunks of ``frames_chunk_size`` (``cfg.frames_chunk_size`` by default;
    ``lax.map`` over zero-padded chunks) to bound memory.
    """
    img_h, img_w = image_hw
    k, b, s = tokens.shape[:3]
    chunk = self.cfg.frames_chunk_size if frames_chunk_size is None else frames_chunk_size
    if not chunk or chunk >= s:
      preds, conf = self._forward_frames(tokens.reshape(k, b * s, *tokens.shape[3:]), img_h, img_w)
      return preds.reshape(b, s, *preds.shape[1:]), conf.reshape(b, s, *conf.shape[1:])
    n = -(-s // chunk)
    pad = n * chunk - s
    t = jnp.pad(tokens, ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0)))
    t = t.reshape(k, b, n, chunk, *t.shape[3:])
    t = jnp.moveaxis(t, 2, 0).reshape(n, k, b * chunk, *t.shape[4:])        # [n, 4, B*chunk, P, 2C]
    preds, conf = jax.lax.map(lambda x: self._forward_frames(x, img_h, img_w), t)
    def unchunk(a):                                                          # [n, B*chunk, ...] -> [B, S, ...]
      a = a.reshape(n, b, chunk, *a.shape[2:])
      return jnp.moveaxis(a, 0, 1).reshape(b, n * chunk, *a.shape[3:])[:, :s]
    return unchunk(preds), unchunk(conf)


def head_activation(x: jax.Array, kind: str) -> jax.Array:
  if kind == "inv_log":
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))
  if kind == "exp":
    return jnp.exp(x)
  if kind == "linear":
    return x
  if kind == "relu":
    return jax.nn.relu(x)
  if kind == "sigmoid":
    return jax.nn.sigmoid(x)
  if kind == "norm_exp":
    d = jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
    return x / d * jnp.expm1(d)
  raise ValueError(f"unknown DPT activation {kind!r}")


def conf_activation(x: jax.Array, kind: str) -> jax.Array:
  if kind == "expp1":
    return 1 + jnp.exp(x)
  if kind == "expp0":
    return jnp.exp(x)
  if kind == "sigmoid":
    return jax.nn.sigmoid(x)
  raise ValueError(f"unknown confidence activation {kind!r}")
