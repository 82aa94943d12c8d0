"""FlashAttention-3 (Hopper) forward and backward through the XLA FFI targets of ``flash-attn3-jax``.

The optional package ``flash-attn3-jax`` (0.2.3, the ``[fa3]`` extra) registers two FFI targets,
``flash_mha_fwd`` and ``flash_mha_bwd``, and wraps them in its own primitives. Its forward is right; its backward
wrapper is not: it allocates the backward's two float32 row buffers (``softmax_d`` and ``softmax_lse_log2``,
``[B, H, rows]``) with ``rows`` = the query length rounded up to 128, while the kernel writes them with its own
row stride, the query length rounded up to its query tile ``kBlockM``, which for head dim 128 without a causal
mask is **80** rows (FlashAttention-3's ``flash_api.cpp``). Wherever ``round_up(Lq, 80) > round_up(Lq, 128)``
(1,024 or 4,096 queries; and with many heads, 1,000) the kernel writes past the end of the buffer into whatever
XLA placed next to it: wrong gradients that change from call to call (``python -m bench.fa3_check``).

Here the backward target is called directly with those buffers sized for every tile the kernel may use
(:func:`softmax_rows`), so its gradients are right; the forward is the package's primitive (it also returns the
log-sum-exp the backward needs). ``fa3_attention`` is a ``jax.custom_vjp`` over the two.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# The query tiles FlashAttention-3's sm90 backward may use (kBlockM for head dims <= 64, 96, 128, 256; causal,
# local and softcap variants included): the row buffers are sized for the largest rounding among them.
_BWD_QUERY_TILES = (64, 80, 96, 128)


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def softmax_rows(lq: int) -> int:
  """Rows to allocate per (batch, head) for the backward's float32 row buffers: room for any tile rounding."""
  return max(_round_up(lq, t) for t in _BWD_QUERY_TILES)


def _package():
  """Import the optional package (registers its FFI targets). Heavy optional GPU package: imported on use."""
  import flash_attn3_jax.flash_hlo as flash_hlo  # optional GPU package (the [fa3] extra)
  return flash_hlo


def fa3_forward_with_lse(q, k, v, *, scale: float):
  """``(out [B, Lq, H, D], lse [B, H, Lq] float32)``: FlashAttention-3's forward kernel."""
  return _package()._flash_mha_fwd_hlo(q, k, v, softmax_scale=float(scale), is_causal=False, window_size=(-1, -1))


def fa3_backward(dout, q, k, v, out, lse, *, scale: float, rows: int | None = None):
  """``(dq, dk, dv)`` from FlashAttention-3's backward kernel, with correctly sized row buffers.

  Args:
    rows: per-(batch, head) length of the float32 row buffers; default :func:`softmax_rows` (tests and
      ``bench.fa3_check`` pass the package's too-small size to reproduce its fault).
  """
  _package()
  n, lq, h, d = q.shape
  lk = k.shape[1]
  if d % 8:
    raise ValueError(f"FlashAttention-3 needs a head dim that is a multiple of 8, got {d}")
  rows = softmax_rows(lq) if rows is None else rows
  empty = jnp.zeros((0,), jnp.int32)
  result = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
            jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct((n, h, rows), jnp.float32),
            jax.ShapeDtypeStruct((n, h, rows), jnp.float32)]
  dq, dk, dv, _, _ = jax.ffi.ffi_call("flash_mha_bwd", result_shape_dtypes=result, has_side_effect=False,
                                      input_layouts=[None] * 10, output_layouts=[None] * 5)(
      dout, q, k, v, out, lse, empty, empty, empty, empty,
      max_seqlen_q_val=lq, max_seqlen_q_has_value=True, max_seqlen_k_val=lk, max_seqlen_k_has_value=True,
      softmax_scale_val=float(scale), softmax_scale_has_value=True, is_causal=False, window_size_left=-1,
      window_size_right=-1, softcap=0.0, deterministic=False, sm_margin=0)
  return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def fa3_attention(q, k, v, scale: float):
  """FlashAttention-3 attention ``[B, L, H, D]`` (no mask, no bias) with FlashAttention-3's backward."""
  return fa3_forward_with_lse(q, k, v, scale=scale)[0]


def _fwd(q, k, v, scale):
  out, lse = fa3_forward_with_lse(q, k, v, scale=scale)
  return out, (q, k, v, out, lse)


def _bwd(scale, res, g):
  q, k, v, out, lse = res
  return fa3_backward(g.astype(q.dtype), q, k, v, out, lse, scale=scale)


fa3_attention.defvjp(_fwd, _bwd)
