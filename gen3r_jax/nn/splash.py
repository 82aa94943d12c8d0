"""TPU splash attention (the upstream Pallas kernel) behind the ``"splash"`` slot of the attention dispatch.

``splash_attention(q, k, v, scale=...)`` takes the dispatch layout ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]``
and returns ``[B, Lq, H, D]``. The kernel (``jax.experimental.pallas.ops.tpu.splash_attention``) works on one
example ``[H, L, D]``: a ``MultiHeadMask`` of ``FullMask`` (bidirectional, the DiT's self-attention) and
``make_splash_mha``, vmapped over the batch. The scale is applied to ``q`` (the kernel has none); additive bias
and boolean masks are not supported (clear error). Inside ``shard_map`` (context parallelism) the kernel is
built from the local shapes, so it runs per shard unchanged.

Off TPU the kernel only runs in Pallas interpret mode (slow; tests): ``with splash_options(interpret=True):``.
Without it a non-TPU backend raises, never silently falls back. Block sizes default to the largest of
512/256/128 that divides the sequence lengths (``splash_options(block_q=..., block_kv=...)`` overrides);
sequence lengths must be multiples of 128 (TPU lanes). On TPU the head dim should be a multiple of 128 for the
fast path (Wan: 128).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa

from gen3r_jax.errors import Gen3RInputError


class SplashUnavailableError(NotImplementedError):
  """Splash attention was asked for where it cannot run (not a TPU and no interpret mode)."""


@dataclasses.dataclass(frozen=True)
class SplashOptions:
  interpret: bool = False          # Pallas interpret mode (CPU tests)
  block_q: int | None = None       # None: largest of _BLOCKS dividing Lq
  block_kv: int | None = None      # None: largest of _BLOCKS dividing Lk


_BLOCKS = (512, 256, 128)
_OPTIONS: contextvars.ContextVar[SplashOptions] = contextvars.ContextVar("splash_options",
                                                                       default=SplashOptions())


@contextlib.contextmanager
def splash_options(**kw):
  """Set :class:`SplashOptions` fields for calls traced inside the block (e.g. ``interpret=True``)."""
  token = _OPTIONS.set(dataclasses.replace(_OPTIONS.get(), **kw))
  try:
    yield _OPTIONS.get()
  finally:
    _OPTIONS.reset(token)


def _block(length: int, forced: int | None, what: str) -> int:
  if forced is not None:
    if length % forced:
      raise Gen3RInputError(f"splash attention: {what} length {length} is not a multiple of the block size "
                            f"{forced}; pad the sequence or pick another block size.")
    return forced
  for b in _BLOCKS:
    if length % b == 0:
      return b
  raise Gen3RInputError(f"splash attention: {what} length {length} must be a multiple of 128 (TPU tiles); "
                        "pad the sequence or use implementation='xla'.")


def _kernel(heads: int, lq: int, lk: int, bq: int, bkv: int, interpret: bool):
  """The splash kernel for ``[heads, lq, D] x [heads, lk, D]`` (full mask). Built at trace time, per call: its
  mask tables become constants of the current trace (a cached kernel would leak shard_map tracers)."""
  mask = sa.MultiHeadMask([sa.FullMask((lq, lk)) for _ in range(heads)])
  blocks = sa.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv,
                         block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
                         block_q_dq=bq, block_kv_dq=bkv)
  return sa.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, bias=None, mask=None,
                     interpret: bool | None = None) -> jax.Array:
  """Splash attention in the dispatch layout ``[B, L, H, D]`` (see the module docstring)."""
  opts = _OPTIONS.get()
  interpret = opts.interpret if interpret is None else interpret
  if not interpret and jax.default_backend() != "tpu":
    raise SplashUnavailableError(
        f"attention implementation 'splash' is the TPU splash-attention kernel; the backend is "
        f"{jax.default_backend()!r}. Use implementation='auto' (cudnn on GPU, xla elsewhere), or Pallas "
        "interpret mode for tests: `with gen3r_jax.nn.splash.splash_options(interpret=True):`.")
  if bias is not None or mask is not None:
    raise Gen3RInputError("splash attention supports neither an additive bias nor a mask (it runs the full "
                          "bidirectional mask); use implementation='xla' or 'cudnn' for masked attention.")
  (b, lq, h, d), lk = q.shape, k.shape[1]
  if k.shape != (b, lk, h, d) or v.shape != k.shape:
    raise Gen3RInputError(f"splash attention: q {q.shape}, k {k.shape}, v {v.shape} must be [B, L, H, D] with "
                          "the same B, H, D (and k, v the same length).")
  kernel = _kernel(h, lq, lk, _block(lq, opts.block_q, "query"), _block(lk, opts.block_kv, "key"),
                   bool(interpret))
  qs = (q.astype(jnp.float32) * scale).astype(q.dtype)
  to_hld = lambda a: jnp.swapaxes(a, 1, 2)                                      # [B, H, L, D]
  out = jax.vmap(kernel)(to_hld(qs), to_hld(k), to_hld(v))                      # [B, H, Lq, D]
  return jnp.swapaxes(out, 1, 2).astype(q.dtype)                                # [B, Lq, H, D]
