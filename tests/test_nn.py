"""Shared building blocks against closed-form / numpy / PyTorch-definition references."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from gen3r_jax.nn import attention as attn
from gen3r_jax.nn.causal_conv import CausalConv3d
from gen3r_jax.nn.norms import ChannelRMSNorm, LayerNorm, RMSNorm, channel_rms_norm, layer_norm
from gen3r_jax.nn.resample import nearest_exact, nearest_exact_indices, resize, resize_matrix


def _np_conv3d_causal(x, w, b, pad_t, pad_hw):
  """Direct numpy causal conv: x [B,T,H,W,C], w [kt,kh,kw,C,O]."""
  x = np.pad(x, ((0, 0), (pad_t, 0), (pad_hw, pad_hw), (pad_hw, pad_hw), (0, 0)))
  kt, kh, kw, _, o = w.shape
  B, T, H, W, _ = x.shape
  out = np.zeros((B, T - kt + 1, H - kh + 1, W - kw + 1, o))
  for t in range(out.shape[1]):
    for i in range(out.shape[2]):
      for j in range(out.shape[3]):
        patch = x[:, t:t + kt, i:i + kh, j:j + kw]
        out[:, t, i, j] = np.einsum("bthwc,thwco->bo", patch, w)
  return out + b


def test_causal_conv_matches_numpy_and_chunked_cache():
  conv = CausalConv3d(3, 4, 3, padding=1, rngs=nnx.Rngs(0))
  x = np.random.RandomState(0).randn(2, 9, 5, 6, 3).astype(np.float32)
  ref = _np_conv3d_causal(x, np.asarray(conv.conv.kernel[...]), np.asarray(conv.conv.bias[...]), 2, 1)
  full = np.asarray(conv(jnp.asarray(x)))
  np.testing.assert_allclose(full, ref, atol=1e-5)
  # Wan chunking: [0:1], [1:5], [5:9] with the cache carried between chunks gives the same result.
  cache = conv.init_cache(jnp.asarray(x[:, :1]))
  outs = []
  for s, e in [(0, 1), (1, 5), (5, 9)]:
    y, cache = conv.cached(jnp.asarray(x[:, s:e]), cache)
    outs.append(np.asarray(y))
  np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-5)
  assert cache.shape == (2, 2, 5, 6, 3)
  np.testing.assert_array_equal(np.asarray(cache), x[:, -2:])


def test_channel_rms_norm_is_wan_normalize():
  x = np.random.RandomState(1).randn(3, 4, 7).astype(np.float32)
  g = np.random.RandomState(2).rand(7).astype(np.float32)
  ref = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12) * np.sqrt(7) * g
  np.testing.assert_allclose(np.asarray(channel_rms_norm(jnp.asarray(x), jnp.asarray(g))), ref, rtol=1e-5)
  assert np.all(np.asarray(channel_rms_norm(jnp.zeros((1, 3)), None)) == 0)  # eps keeps zeros finite
  m = ChannelRMSNorm(7, rngs=nnx.Rngs(0))
  assert m.gamma[...].shape == (7,)


def test_rms_and_layer_norm():
  x = np.random.RandomState(3).randn(2, 5, 8).astype(np.float32)
  rms = RMSNorm(8, eps=1e-6, rngs=nnx.Rngs(0))
  ref = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(np.asarray(rms(jnp.asarray(x))), ref, rtol=1e-5)
  ln = LayerNorm(8, eps=1e-5, rngs=nnx.Rngs(0))
  ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(ln(jnp.asarray(x))), ref, rtol=1e-4, atol=1e-5)
  # bf16 input keeps its dtype, statistics in float32
  assert ln(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


def test_attention_xla_matches_numpy_softmax():
  rs = np.random.RandomState(4)
  q, k, v = (rs.randn(2, 5, 3, 4).astype(np.float32) for _ in range(3))
  bias = rs.randn(1, 3, 5, 5).astype(np.float32)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) * 0.5 + bias
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ref = np.einsum("bhqk,bkhd->bqhd", p, v)
  out = attn.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), implementation="xla", bias=bias)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-6)
  mask = np.ones((1, 1, 5, 5), bool)
  mask[..., 3:] = False
  out_m = attn.attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), implementation="xla", mask=mask)
  ref_m = attn.attention(jnp.asarray(q), jnp.asarray(k[:, :3]), jnp.asarray(v[:, :3]), implementation="xla")
  np.testing.assert_allclose(np.asarray(out_m), np.asarray(ref_m), rtol=1e-5, atol=1e-6)


def test_attention_dispatch_rules():
  assert attn.resolve_implementation("auto", jnp.float32) == "xla"
  with pytest.raises(ValueError, match="must be one of"):
    attn.resolve_implementation("flash", jnp.float32)
  q = jnp.zeros((1, 2, 1, 4))
  with pytest.raises(NotImplementedError, match="splash"):
    attn.attention(q, q, q, implementation="splash")


def test_nearest_exact_tables():
  # torch nearest-exact: src = floor((dst + 0.5) * in / out)
  np.testing.assert_array_equal(nearest_exact_indices(4, 8), [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(nearest_exact_indices(70, 80), np.floor((2 * np.arange(80) + 1) * 70 / 160))
  np.testing.assert_array_equal(nearest_exact_indices(40, 70, 1.75), np.floor((2 * np.arange(70) + 1) * 40 / 140))
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  y = nearest_exact(x, (8, 8))
  assert y.shape == (1, 8, 8, 1) and float(y[0, 7, 7, 0]) == 15.0


def test_resize_matrices_closed_form():
  # rows are interpolation weights: they sum to one, identity at equal sizes
  for mode in ("bilinear", "bicubic"):
    for aa in (False, True):
      m = resize_matrix(7, 5, mode, antialias=aa)
      assert m.dtype == np.float32  # PyTorch's float32 weights (module docstring)
      np.testing.assert_allclose(m.sum(1), 1.0, atol=3e-7)
      np.testing.assert_allclose(resize_matrix(6, 6, mode, antialias=aa), np.eye(6), atol=1e-12)
  # bilinear x2 upsample, align_corners=False: out[1] = 0.75 x0 + 0.25 x1
  m = resize_matrix(4, 8, "bilinear", antialias=False)
  np.testing.assert_allclose(m[1, :2], [0.75, 0.25])
  # a constant image stays constant
  x = jnp.full((2, 9, 11, 3), 0.3)
  np.testing.assert_allclose(np.asarray(resize(x, (4, 5), "bicubic", antialias=True)), 0.3, rtol=1e-6)


def test_module_jit_reads_modules_and_takes_compiler_options():
  """``module_jit``: same values as eager, static / traced keywords, modules mixed with arrays, ``.lower``, no
  parameter returned, and the compiler options really reach XLA (an unknown one is refused)."""
  from gen3r_jax.nn.jit import FAST_COMPILE, module_jit
  from gen3r_jax.nn.linear import Dense

  calls = []

  def f(a, x, b, *, scale, bias):
    calls.append(scale)                                  # runs at trace time only
    y = b(a(x)) * scale + bias
    return y if scale > 0 else -y

  fast = module_jit(static_argnames=("scale",), compiler_options=FAST_COMPILE)(f)
  a, b = Dense(3, 4, rngs=nnx.Rngs(0)), Dense(4, 2, rngs=nnx.Rngs(1))
  x, bias = jnp.arange(6.0).reshape(2, 3), jnp.ones((2,))
  want = b(a(x)) * 2.0 + bias
  out = fast(a, x, b, scale=2.0, bias=bias)
  np.testing.assert_allclose(out, want, rtol=1e-6)
  assert isinstance(out, jax.Array)                      # only the function's output, no module state
  np.testing.assert_allclose(fast(a, x, b, scale=-1.0, bias=bias), -(b(a(x)) * -1.0 + bias), rtol=1e-6)
  n = len(calls)
  fast(a, x + 1, b, scale=2.0, bias=bias + 1)            # same static values, new arrays: no retrace
  assert len(calls) == n
  compiled = fast.lower(a, jax.ShapeDtypeStruct((2, 3), jnp.float32), b, scale=2.0, bias=bias).compile()
  assert compiled is not None
  with pytest.raises(Exception, match="xla_no_such_option"):
    module_jit(static_argnames=("scale",), compiler_options={"xla_no_such_option": True})(f)(
        a, x, b, scale=2.0, bias=bias)
  with pytest.raises(ValueError, match="hashable|static"):
    fast(a, x, b, scale=jnp.ones(()), bias=bias)         # a static keyword must be hashable


def test_layer_norm_constant_and_offset_rows_match_torch():
  """A row of one repeated large value normalises to 0 (torch's Welford statistics), not to +-1 as a mean with a
  rounding error would give; rows with a large common offset keep float64 accuracy."""
  import torch
  rows = np.stack([np.full(1000, v, np.float32) for v in (1e5, 1e6, 12345.678, -7e6, 3.0)])
  ours = np.asarray(layer_norm(jnp.asarray(rows), None, None, 1e-5))
  ref = torch.nn.functional.layer_norm(torch.from_numpy(rows), (1000,), eps=1e-5).numpy()
  np.testing.assert_array_equal(ref, 0.0)
  np.testing.assert_array_equal(ours, 0.0)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 768)).astype(np.float32)
  w, b = rng.normal(size=768).astype(np.float32), rng.normal(size=768).astype(np.float32)
  ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (768,), torch.from_numpy(w), torch.from_numpy(b),
                                       eps=1e-6).numpy()
  np.testing.assert_allclose(np.asarray(layer_norm(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), 1e-6)), ref,
                             atol=2e-6)
  xo = (x + 1e4).astype(np.float32)  # offset rows: against float64 (torch's own float32 error here is ~1e-3)
  x64 = xo.astype(np.float64)
  ref64 = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(layer_norm(jnp.asarray(xo), None, None, 1e-5)), ref64, atol=2e-6)


@pytest.mark.parametrize("mode,antialias,src_hw,out_hw", [
    ("bilinear", False, (560, 24), (1400, 60)),    # upscale 560 -> 1400: float32 source coordinates matter
    ("bicubic", False, (560, 24), (1400, 60)),
    ("bilinear", True, (1400, 30), (560, 12)),     # downscale with antialias (PIL-style support)
    ("bicubic", True, (1400, 37), (560, 40)),
])
def test_resize_matches_torch_interpolate(mode, antialias, src_hw, out_hw):
  import torch
  x = np.random.default_rng(1).uniform(size=(1, *src_hw, 2)).astype(np.float32)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=out_hw, mode=mode,
                                        antialias=antialias, align_corners=False).permute(0, 2, 3, 1).numpy()
  ours = np.asarray(resize(jnp.asarray(x), out_hw, mode, antialias=antialias))
  np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
  # The 1-D weights themselves are PyTorch's float32 weights (a one-hot input reads them out).
  for n_in, n_out in zip(src_hw, out_hw):
    eye = torch.eye(n_in, dtype=torch.float32)[None, None]
    w = torch.nn.functional.interpolate(eye, size=(n_out, n_in), mode=mode, antialias=antialias,
                                        align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(resize_matrix(n_in, n_out, mode, antialias=antialias), w, atol=2.5e-7, rtol=0)


def test_resize_scale_factor_divides_in_double_like_torch():
  import torch
  x = np.random.default_rng(2).uniform(size=(1, 30, 21, 1)).astype(np.float32)
  for mode in ("bilinear", "bicubic"):
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=(7 / 3, 1.3),
                                          mode=mode, align_corners=False).permute(0, 2, 3, 1).numpy()
    ours = np.asarray(resize(jnp.asarray(x), ref.shape[1:3], mode, scale_factor=(7 / 3, 1.3)))
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=(7 / 3, 1.3),
                                        mode="nearest-exact").permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(np.asarray(nearest_exact(jnp.asarray(x), ref.shape[1:3], (7 / 3, 1.3))), ref)
