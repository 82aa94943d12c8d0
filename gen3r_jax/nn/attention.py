"""The one attention dispatch every model uses.

``attention(q, k, v, implementation=...)`` with ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]`` returns
``[B, Lq, H, D]``.

Implementations:
  * ``"xla"``: reference einsum path; logits and softmax in float32, works on every backend and dtype.
  * ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (flash attention on NVIDIA GPUs;
    needs bf16/fp16 inputs and head dim <= 128 for the fused kernel).
  * ``"splash"``: TPU splash attention (Pallas). Its slot is here; the kernel arrives with the
    context-parallel work and until then asking for it is an error, never a silent fallback.
  * ``"auto"``: ``cudnn`` on GPU when the dtype allows it, else ``xla``.
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


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "auto",
              scale: float | None = None, bias: jax.Array | None = None,
              mask: jax.Array | None = None) -> jax.Array:
  """Multi-head attention, ``[B, L, H, D]`` layout (see module docstring).

  Args:
    scale: logit scale; defaults to ``1/sqrt(D)``. umT5 passes ``1.0``.
    bias: additive logit bias broadcastable to ``[B, H, Lq, Lk]`` (umT5 relative positions).
    mask: boolean, broadcastable to ``[B, H, Lq, Lk]``; ``False`` = masked out.
  """
  if scale is None:
    scale = 1.0 / math.sqrt(q.shape[-1])
  impl = resolve_implementation(implementation, q.dtype)
  if impl == "xla":
    return xla_attention(q, k, v, scale=scale, bias=bias, mask=mask)
  if impl == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                        implementation="cudnn")
  raise NotImplementedError(
      "attention implementation 'splash' (TPU) is not available yet; use implementation='xla' on TPU "
      "for now (it is numerically identical, only slower).")
