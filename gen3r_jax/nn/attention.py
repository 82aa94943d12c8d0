"""The one attention dispatch every model uses.

``attention(q, k, v, implementation=...)`` with ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]`` returns
``[B, Lq, H, D]``.

Implementations:
  * ``"xla"``: reference einsum path; logits and softmax in float32, works on every backend and dtype.
  * ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (flash attention on NVIDIA GPUs;
    needs bf16/fp16 inputs and head dim <= 128 for the fused kernel).
  * ``"splash"``: the upstream TPU splash-attention kernel (Pallas, :mod:`gen3r_jax.parallel.splash`); no bias
    or mask. Off TPU it is an error unless Pallas interpret mode is on
    (``gen3r_jax.parallel.splash.splash_options(interpret=True)``, tests only), never a silent fallback.
  * ``"auto"``: ``cudnn`` on GPU when the dtype allows it, else ``xla``.

Context parallelism: inside ``gen3r_jax.parallel.context.use_context_parallel(mesh, strategy)`` (mesh with
``context > 1``) :func:`attention` routes unmasked calls through ``context_attention`` (``shard_map`` over the
sequence axis); models call :func:`attention` unchanged. :func:`local_attention` is the dispatch without that
hook (what runs on each shard).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")


def resolve_implementation(implementation: str, dtype) -> str:
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  if implementation == "auto":
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"
  return implementation


def xla_attention(q, k, v, *, scale: float, bias=None, mask=None):
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


def cudnn_attention(q, k, v, *, scale: float, bias=None, mask=None):
  """cuDNN flash attention.

  * cuDNN's partitioner needs q, k and v sharded alike (text/CLIP keys arrive replicated while the video
    queries are batch-sharded), so under a mesh all three are constrained to ``(batch, -, heads, -)``.
  * cuDNN's backward rejects odd sequence lengths (the DiT's 257 CLIP tokens, VGGT's 1605-token frames): an odd
    query or key length is padded by one row; a sequence-length mask gives the padded key exactly zero weight
    and the padded query row is sliced off, so the values are unchanged.
  """
  from gen3r_jax.parallel.rules import constrain  # lazy: parallel/ imports this module
  b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
  odd = (lq % 2 or lk % 2) and bias is None and mask is None
  same = lambda x, n=0: constrain(jnp.pad(x, ((0, 0), (0, n % 2), (0, 0), (0, 0))) if odd else x,
                                  ("batch", None, "heads", None))
  q, k, v = same(q, lq), same(k, lk), same(v, lk)
  if not odd:
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale, implementation="cudnn")
  lengths = lambda n: constrain(jnp.full((b,), n, jnp.int32), ("batch",))
  out = jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="cudnn",
                                     query_seq_lengths=lengths(lq), key_value_seq_lengths=lengths(lk))
  return out[:, :lq]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "auto",
              scale: float | None = None, bias: jax.Array | None = None,
              mask: jax.Array | None = None) -> jax.Array:
  """Multi-head attention, ``[B, L, H, D]`` layout (see module docstring).

  Args:
    scale: logit scale; defaults to ``1/sqrt(D)``. umT5 passes ``1.0``.
    bias: additive logit bias broadcastable to ``[B, H, Lq, Lk]`` (umT5 relative positions).
    mask: boolean, broadcastable to ``[B, H, Lq, Lk]``; ``False`` = masked out.
  """
  from gen3r_jax.parallel.context import maybe_context_attention  # lazy: parallel/ imports this module
  out = maybe_context_attention(q, k, v, implementation=implementation, scale=scale, bias=bias, mask=mask)
  if out is not None:
    return out
  return local_attention(q, k, v, implementation=implementation, scale=scale, bias=bias, mask=mask)


def local_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "auto",
                    scale: float | None = None, bias: jax.Array | None = None,
                    mask: jax.Array | None = None) -> jax.Array:
  """:func:`attention` on the arrays as given (no context-parallel routing); same arguments."""
  if scale is None:
    scale = 1.0 / math.sqrt(q.shape[-1])
  impl = resolve_implementation(implementation, q.dtype)
  if impl == "xla":
    return xla_attention(q, k, v, scale=scale, bias=bias, mask=mask)
  if impl == "cudnn":
    return cudnn_attention(q, k, v, scale=scale, bias=bias, mask=mask)
  from gen3r_jax.parallel.splash import splash_attention
  return splash_attention(q, k, v, scale=scale, bias=bias, mask=mask)
