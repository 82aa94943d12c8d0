"""Causal building blocks shared by the Wan2.1 video VAE and Gen3R's geometry adapter.

Both models are the same causal 3D auto-encoder (``ResidualBlock`` / ``AttentionBlock`` / ``Resample`` / head);
they differ only in channel plans and in what the resampling blocks do spatially. Everything here is
channels-last: ``[B, T, H, W, C]``.

Every block has two entry points that give the same numbers:

* ``block(x)``: the whole clip at once (causal zero padding in time). This is the simple reference path.
* ``block.step(x, cache, first=...)``: one time chunk with an explicit cache, returning ``(y, new_cache)``.
  ``cache=None`` means "start of the clip" (zeros). The static ``first`` flag marks the first chunk, which the
  temporal resamplers treat specially (see :class:`Resample`).

Why the chunked path equals the whole-clip path (Wan's ``feat_cache``, ``CACHE_T = 2``): every causal conv with
temporal kernel 3 carries the last 2 input frames of the previous chunk (zeros at the start), which is exactly
the causal zero padding of the whole clip. The temporal down-sampler (``downsample3d`` / ``encode_block_3d``)
lets chunk 0 (1 frame) pass and then runs its stride-2, unpadded conv on ``cat(last frame of the previous
chunk, chunk)``; over the chunks ``{0}, {1..4}, {5..8}, ...`` that is "frame 0, then a stride-2 valid conv over
the whole sequence". The temporal up-sampler (``upsample3d`` / ``decode_block_3d``) skips latent frame 0 (the
'Rep' marker) and runs a causal conv with zero padding over frames ``1..`` (the cache saved after the 'Rep' call
is ``(0, x_1)``), interleaving the two output channel halves into twice the frames.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.nn.attention import attention
from gen3r_jax.nn.causal_conv import CausalConv3d
from gen3r_jax.nn.linear import Conv
from gen3r_jax.nn.norms import ChannelRMSNorm
from gen3r_jax.nn.resample import nearest_exact

Cache = Any  # a pytree of [B, ctx, H, W, C] arrays (or None at the start of a clip)


def _conv_step(conv: CausalConv3d, x: jax.Array, cache: jax.Array | None):
  """One chunk through a causal conv; ``cache=None`` = zeros (start of the clip)."""
  if cache is None:
    cache = conv.init_cache(x)
  return conv.cached(x, cache)


def per_frame(fn, x: jax.Array) -> jax.Array:
  """Apply a 2-D op ``[N, H, W, C] -> [N, H', W', C']`` to every frame of ``[B, T, H, W, C]``."""
  b, t = x.shape[:2]
  y = fn(x.reshape(b * t, *x.shape[2:]))
  return y.reshape(b, t, *y.shape[1:])


class ResidualBlock(nnx.Module):
  """``x + residual(x)``; residual = RMS, SiLU, causal 3x3x3 conv, RMS, SiLU, causal 3x3x3 conv.

  The shortcut is a 1x1x1 conv when the channel count changes. ``[B, T, H, W, in] -> [B, T, H, W, out]``.
  """

  def __init__(self, in_dim: int, out_dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = ChannelRMSNorm(in_dim, rngs=rngs, param_dtype=param_dtype)
    self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1, **kw)
    self.norm2 = ChannelRMSNorm(out_dim, rngs=rngs, param_dtype=param_dtype)
    self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1, **kw)
    self.shortcut = CausalConv3d(in_dim, out_dim, 1, **kw) if in_dim != out_dim else None

  def _short(self, x):
    return x if self.shortcut is None else self.shortcut(x)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self._short(x)
    x = self.conv1(jax.nn.silu(self.norm1(x)))
    x = self.conv2(jax.nn.silu(self.norm2(x)))
    return x + h

  def step(self, x: jax.Array, cache: Cache, *, first: bool):
    del first
    c1, c2 = cache if cache is not None else (None, None)
    h = self._short(x)
    x, c1 = _conv_step(self.conv1, jax.nn.silu(self.norm1(x)), c1)
    x, c2 = _conv_step(self.conv2, jax.nn.silu(self.norm2(x)), c2)
    return x + h, (c1, c2)


class AttentionBlock(nnx.Module):
  """Single-head self-attention over the ``H*W`` positions of each frame (1x1 conv qkv / proj), residual."""

  def __init__(self, dim: int, *, dtype, param_dtype, attention_impl: str = "xla", rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attention_impl = attention_impl
    self.norm = ChannelRMSNorm(dim, rngs=rngs, param_dtype=param_dtype)
    self.to_qkv = Conv(dim, 3 * dim, (1, 1), **kw)
    self.proj = Conv(dim, dim, (1, 1), **kw)

  def _frames(self, x: jax.Array) -> jax.Array:  # [N, H, W, C]
    n, h, w, c = x.shape
    qkv = self.to_qkv(self.norm(x)).reshape(n, h * w, 1, 3 * c)
    q, k, v = jnp.split(qkv, 3, axis=-1)  # each [N, HW, 1, C]
    o = attention(q, k, v, implementation=self.attention_impl)
    return self.proj(o.reshape(n, h, w, c))

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, C]
    return x + per_frame(self._frames, x)

  def step(self, x: jax.Array, cache: Cache, *, first: bool):
    del first
    return self(x), cache


class Resample(nnx.Module):
  """Per-frame spatial resampling + optional causal temporal resampling.

  ``spatial``:
    * ``"down"``: zero pad right/bottom by 1, conv 3x3 stride 2 (Wan ``downsample2d/3d``), ``dim -> out_dim``;
    * ``"up"``: nearest-exact x2, conv 3x3 pad 1 (Wan ``upsample2d/3d``);
    * ``"none"``: conv 3x3 pad 1 only (adapter ``encode_block_*`` / ``decode_block_*``).
  ``time``:
    * ``None``: frames are independent;
    * ``"down"``: after the spatial conv, causal conv (3,1,1) stride 2 without padding; chunk 0 passes;
    * ``"up"``: before the spatial conv, causal conv (3,1,1) ``dim -> 2 dim`` on frames ``1..`` (zero causal
      padding), channel halves interleaved into ``2x`` frames; frame 0 passes.
  """

  def __init__(self, dim: int, out_dim: int, *, spatial: str, time: str | None, dtype, param_dtype,
               rngs: nnx.Rngs):
    if spatial not in ("down", "up", "none") or time not in (None, "down", "up"):
      raise ValueError(f"bad Resample mode spatial={spatial!r} time={time!r}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.spatial, self.time = spatial, time
    if spatial == "down":
      self.resample = Conv(dim, out_dim, (3, 3), strides=2, padding=((0, 1), (0, 1)), **kw)
    else:
      self.resample = Conv(dim, out_dim, (3, 3), padding=1, **kw)
    if time == "down":
      self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), strides=(2, 1, 1), padding=0, **kw)
    elif time == "up":
      self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), **kw)
    else:
      self.time_conv = None

  def _spatial(self, x: jax.Array) -> jax.Array:  # [B, T, H, W, C] -> [B, T, H', W', C']
    def one(f):  # [N, H, W, C]
      if self.spatial == "up":
        h, w = f.shape[1:3]
        f = nearest_exact(f.astype(jnp.float32), (2 * h, 2 * w), scale_factor=(2.0, 2.0)).astype(f.dtype)
      return self.resample(f)
    return per_frame(one, x)

  @staticmethod
  def _interleave(y: jax.Array) -> jax.Array:
    """``[B, t, H, W, 2C] -> [B, 2t, H, W, C]``: channel half 0 -> even frames, half 1 -> odd frames."""
    b, t, h, w, c2 = y.shape
    y = y.reshape(b, t, h, w, 2, c2 // 2)
    return jnp.moveaxis(y, 4, 2).reshape(b, 2 * t, h, w, c2 // 2)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.time == "up" and x.shape[1] > 1:
      x = jnp.concatenate([x[:, :1], self._interleave(self.time_conv(x[:, 1:]))], axis=1)
    x = self._spatial(x)
    if self.time == "down" and x.shape[1] > 1:
      x = jnp.concatenate([x[:, :1], self.time_conv(x)], axis=1)
    return x

  def step(self, x: jax.Array, cache: Cache, *, first: bool):
    if self.time == "up":
      if first:  # the 'Rep' call: no time conv; later chunks start from zero causal padding
        b, _, h, w, c = x.shape
        cache = jnp.zeros((b, self.time_conv.context, h, w, c), x.dtype)
      else:
        y, cache = self.time_conv.cached(x, cache)
        x = self._interleave(y)
    x = self._spatial(x)
    if self.time == "down":
      last = x[:, -1:]
      if not first:
        x = self.time_conv(jnp.concatenate([cache.astype(x.dtype), x], axis=1))
      cache = last
    return x, cache


class Head(nnx.Module):
  """RMS norm, SiLU, causal 3x3x3 conv."""

  def __init__(self, dim: int, out_dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.norm = ChannelRMSNorm(dim, rngs=rngs, param_dtype=param_dtype)
    self.conv = CausalConv3d(dim, out_dim, 3, padding=1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x):
    return self.conv(jax.nn.silu(self.norm(x)))

  def step(self, x, cache, *, first: bool):
    del first
    return _conv_step(self.conv, jax.nn.silu(self.norm(x)), cache)


class CausalStack(nnx.Module):
  """Shared driver for a sequence of blocks that each have ``__call__`` and ``step``."""

  def _blocks(self) -> Sequence[nnx.Module]:
    raise NotImplementedError

  def _pre(self, x: jax.Array) -> jax.Array:
    return x

  def _post(self, x: jax.Array) -> jax.Array:
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    """Whole clip (reference path)."""
    x = self._pre(x)
    for blk in self._blocks():
      x = blk(x)
    return self._post(x)

  def step(self, x: jax.Array, cache: Cache, *, first: bool):
    """One chunk; ``cache`` is the list returned by the previous chunk (``None`` for the first)."""
    blocks = self._blocks()
    cache = cache if cache is not None else [None] * len(blocks)
    x = self._pre(x)
    new = []
    for blk, c in zip(blocks, cache):
      if isinstance(blk, CausalConv3d):
        x, c = _conv_step(blk, x, c)
      else:
        x, c = blk.step(x, c, first=first)
      new.append(c)
    return self._post(x), new


def encoder_plan(dims: Sequence[int], num_res_blocks: int, temporal: Sequence[bool]):
  """Encoder stage layout: ``[("res", in, out) | ("resample", dim, time_down)]`` in torch index order."""
  plan = []
  for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
    for _ in range(num_res_blocks):
      plan.append(("res", d_in, d_out))
      d_in = d_out
    if i != len(dims) - 2:
      plan.append(("resample", d_out, bool(temporal[i])))
  return plan


def decoder_plan(dims: Sequence[int], num_res_blocks: int, temporal: Sequence[bool]):
  """Decoder stage layout: ``num_res_blocks + 1`` blocks per stage; stages 1.. take half the channels."""
  plan = []
  for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
    if i > 0:
      d_in //= 2
    for _ in range(num_res_blocks + 1):
      plan.append(("res", d_in, d_out))
      d_in = d_out
    if i != len(dims) - 2:
      plan.append(("resample", d_out, bool(temporal[i])))
  return plan


class Encoder3d(CausalStack):
  """``[B, T, H, W, in_dim] -> [B, T', H', W', z_out]``: conv1, stages, middle (Res, Attn, Res), head.

  ``spatial`` is the spatial mode of every stage resampler (``"down"`` in Wan, ``"none"`` in the adapter).
  """

  def __init__(self, in_dim: int, dims: Sequence[int], z_out: int, *, num_res_blocks: int,
               temporal: Sequence[bool], spatial: str, attention_impl: str, dtype, param_dtype,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = CausalConv3d(in_dim, dims[0], 3, padding=1, **kw)
    blocks = []
    for kind, a, b in encoder_plan(dims, num_res_blocks, temporal):
      if kind == "res":
        blocks.append(ResidualBlock(a, b, **kw))
      else:
        blocks.append(Resample(a, a, spatial=spatial, time="down" if b else None, **kw))
    self.downsamples = nnx.List(blocks)
    d = dims[-1]
    self.middle = nnx.List([ResidualBlock(d, d, **kw),
                            AttentionBlock(d, attention_impl=attention_impl, **kw),
                            ResidualBlock(d, d, **kw)])
    self.head = Head(d, z_out, **kw)

  def _blocks(self):
    return [self.conv1, *self.downsamples, *self.middle, self.head]


class Decoder3d(CausalStack):
  """``[B, t, h, w, z] -> [B, 1 + 4(t-1), H, W, out_dim]``: conv1, middle, stages, head.

  ``spatial`` is the spatial mode of every stage resampler (``"up"`` in Wan, ``"none"`` in the adapter); each
  resampler halves the channels.
  """

  def __init__(self, z_dim: int, dims: Sequence[int], out_dim: int, *, num_res_blocks: int,
               temporal: Sequence[bool], spatial: str, attention_impl: str, dtype, param_dtype,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1, **kw)
    d0 = dims[0]
    self.middle = nnx.List([ResidualBlock(d0, d0, **kw),
                            AttentionBlock(d0, attention_impl=attention_impl, **kw),
                            ResidualBlock(d0, d0, **kw)])
    blocks = []
    for kind, a, b in decoder_plan(dims, num_res_blocks, temporal):
      if kind == "res":
        blocks.append(ResidualBlock(a, b, **kw))
      else:
        blocks.append(Resample(a, a // 2, spatial=spatial, time="up" if b else None, **kw))
    self.upsamples = nnx.List(blocks)
    self.head = Head(dims[-1], out_dim, **kw)

  def _blocks(self):
    return [self.conv1, *self.middle, *self.upsamples, self.head]


def run_encoder(stack: CausalStack, x: jax.Array, *, chunk: int = 4, chunked: bool = True) -> jax.Array:
  """Encode ``[B, 1 + chunk*k, ...]`` as Wan does: frame 0, then ``lax.scan`` over ``k`` chunks of ``chunk``.

  Compile time and activation memory do not grow with the frame count (only the stacked output does).
  """
  if not chunked:
    return stack(x)
  y0, cache = stack.step(x[:, :1], None, first=True)
  k = (x.shape[1] - 1) // chunk
  if k == 0:
    return y0
  b, _, *rest = x.shape
  xs = jnp.moveaxis(x[:, 1:].reshape(b, k, chunk, *rest), 1, 0)  # [k, B, chunk, H, W, C]

  def body(c, xc):
    y, c = stack.step(xc, c, first=False)
    return c, y

  _, ys = jax.lax.scan(body, cache, xs)  # [k, B, t, H', W', C']
  ys = jnp.moveaxis(ys, 0, 1)
  ys = ys.reshape(b, -1, *ys.shape[3:])
  return jnp.concatenate([y0, ys], axis=1)


def run_decoder(stack: CausalStack, z: jax.Array, *, chunked: bool = True) -> jax.Array:
  """Decode ``[B, t, ...]`` one latent frame at a time (frame 0 first, then ``lax.scan`` over the rest)."""
  if not chunked:
    return stack(z)
  y0, cache = stack.step(z[:, :1], None, first=True)
  if z.shape[1] == 1:
    return y0
  xs = jnp.moveaxis(z[:, 1:, None], 1, 0)  # [t-1, B, 1, h, w, C]

  def body(c, zc):
    y, c = stack.step(zc, c, first=False)
    return c, y

  _, ys = jax.lax.scan(body, cache, xs)  # [t-1, B, 4, H, W, C]
  ys = jnp.moveaxis(ys, 0, 1)
  ys = ys.reshape(ys.shape[0], -1, *ys.shape[3:])
  return jnp.concatenate([y0, ys], axis=1)
