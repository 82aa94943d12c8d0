"""The one attention dispatch every model uses.

``attention(q, k, v, implementation=...)`` with ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]`` returns
``[B, Lq, H, D]``.

Implementations:
  * ``"xla"``: reference einsum path; logits and softmax in float32, works on every backend and dtype.
  * ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (flash attention on NVIDIA GPUs;
    needs bf16/fp16 inputs and head dim <= 128 for the fused kernel); takes a bias or mask.
  * ``"fa3"``: FlashAttention-3 (Hopper, sm90) through the optional package ``flash-attn3-jax``
    (``pip install 'gen3r-jax[fa3]'``, XLA FFI custom calls); bf16/fp16, no bias or mask, any sequence length
    as it is; forward and backward are FA3's kernels (the backward called with correctly sized buffers:
    :mod:`gen3r_jax.nn.fa3`).
  * ``"fa3_fwd"``: FA3's forward when nothing is differentiated (sampling), cuDNN's forward and backward when it
    is (training): ``auto``'s choice at head dim 128 on Hopper (measured: the stage-2 step is faster with
    cuDNN's pair than with FA3's, although FA3's kernels alone are faster; ``bench/RESULTS.md`` "Issue 15").
  * ``"splash"``: the upstream TPU splash-attention kernel (Pallas, :mod:`gen3r_jax.nn.splash`); no bias
    or mask. Off TPU it is an error unless Pallas interpret mode is on
    (``gen3r_jax.nn.splash.splash_options(interpret=True)``, tests only), never a silent fallback.
  * ``"auto"``: per call shape, the fastest *available* implementation of :data:`GPU_PREFERENCE` on a GPU with
    bf16/fp16 inputs (measured on H200, ``bench/RESULTS.md`` "Attention kernels": FA3 for head dim 128 — the
    DiT —, cuDNN for head dim 64 — VGGT, CLIP — and wherever a bias or mask is given), else ``xla``. A kernel
    whose package is missing is simply not chosen; ``auto`` never fails because of it. Each new choice is
    logged once (logger ``gen3r_jax.nn.attention``, INFO) and recorded in :func:`chosen_implementations`.

Models take the implementation from their config (``attention="auto"|"xla"|"cudnn"|"fa3"|...``), so the choice
is overridable per model. An explicitly named kernel that cannot run (package absent, not a GPU) is an error
naming the fix.

Context parallelism: inside ``gen3r_jax.nn.context_parallel.use_context_parallel(mesh, strategy)`` (mesh with
``context > 1``) :func:`attention` routes unmasked calls through ``context_attention`` (``shard_map`` over the
sequence axis); models call :func:`attention` unchanged. :func:`local_attention` is the dispatch without that
hook (what runs on each shard).

Meshes: ``xla`` and ``cudnn`` are partitioned by XLA (GSPMD). FA3's FFI calls and splash's Pallas call have no
sharding rule, so under a mesh they run per device inside a ``shard_map`` over batch and heads
(:func:`per_shard`), never on gathered global arrays.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import logging
import math
from typing import Callable

import jax
import jax.numpy as jnp

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.nn import fa3
from gen3r_jax.nn.splash import splash_attention
from gen3r_jax.parallel.rules import auto_mesh, constrain, current_rules, spec_for

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "fa3", "fa3_fwd", "splash")
GPU_KERNELS = ("cudnn", "fa3", "fa3_fwd")          # fused GPU kernels (bf16/fp16 only)
MASKABLE = ("xla", "cudnn")             # the implementations that take a bias or mask

# ``auto`` on a GPU: candidates in order of measured speed per head dim (H200, jax 0.11.2, 2026-12-04,
# bench/RESULTS.md "Attention kernels"); the first one available and able to run the call wins.
GPU_PREFERENCE: dict[int, tuple[str, ...]] = {
    # DiT: FA3's forward 657 vs cuDNN 580 TFLOP/s on the ragged 31,850 tokens; in the whole stage-2 step cuDNN's
    # forward + backward (2.174 s) beat FA3's (2.32 s) although FA3's kernels alone are faster: fa3_fwd
    128: ("fa3_fwd", "cudnn"),
    64: ("cudnn", "fa3_fwd"),    # VGGT: cuDNN 460 vs FA3 352 TFLOP/s (global), 386 vs 286 (frame)
}
GPU_DEFAULT: tuple[str, ...] = ("cudnn", "fa3_fwd")   # other head dims

FA3_PACKAGE = "flash_attn3_jax"
_log = logging.getLogger(__name__)
_CHOSEN: dict[tuple, str] = {}


@functools.cache
def _has_package(module: str) -> bool:
  """Installed and importable (a package whose import fails, e.g. a CUDA runtime the driver does not take, counts
  as missing, with one warning, so ``auto`` falls back rather than failing)."""
  if importlib.util.find_spec(module) is None:
    return False
  try:
    importlib.import_module(f"{module}.flash_hlo" if module == FA3_PACKAGE else module)
  except Exception as e:  # noqa: BLE001 - any import failure means: not usable here
    _log.warning("attention: %s is installed but does not import (%s: %s); not used", module, type(e).__name__, e)
    return False
  return True


def gpu_capability(device=None) -> tuple[int, int] | None:
  """Compute capability ``(major, minor)`` of ``device`` (default: the first device), ``None`` off GPU,
  ``(0, 0)`` when the GPU does not say."""
  dev = device or jax.devices()[0]
  if dev.platform != "gpu":
    return None
  try:
    major, minor = (int(x) for x in str(getattr(dev, "compute_capability", None)).split(".")[:2])
  except (TypeError, ValueError):
    return (0, 0)
  return major, minor


def kernel_available(name: str) -> bool:
  """Can ``name`` run here: the backend, the chip (FA3 is Hopper-only) and the optional package."""
  if name == "xla":
    return True
  if name == "splash":
    return jax.default_backend() == "tpu"
  cap = gpu_capability()
  if cap is None:
    return False
  if name == "cudnn":
    return cap >= (8, 0)              # cuDNN's fused flash attention: Ampere or newer
  if name in ("fa3", "fa3_fwd"):
    return cap[0] == 9 and _has_package(FA3_PACKAGE)
  return False


def _supports(name: str, *, head_dim: int | None, masked: bool) -> bool:
  if masked and name not in MASKABLE:
    return False
  if name in ("fa3", "fa3_fwd") and head_dim is not None and (head_dim > 256 or head_dim % 8):
    return False
  if name == "cudnn" and head_dim is not None and (head_dim > 128 or head_dim % 8):
    return False
  return True


def resolve_implementation(implementation: str, dtype, head_dim: int | None = None, *, masked: bool = False,
                           available=kernel_available) -> str:
  """The implementation :func:`local_attention` runs for ``implementation`` (``"auto"`` resolved).

  Args:
    dtype: the q/k/v dtype (fused GPU kernels need bf16/fp16).
    head_dim: picks the row of :data:`GPU_PREFERENCE` (``None``: :data:`GPU_DEFAULT`).
    masked: a bias or mask is given (only ``xla`` and ``cudnn`` take one).
    available: ``name -> bool`` (default :func:`kernel_available`; tests pass their own).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  if implementation != "auto":
    return implementation
  if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16) or not available("cudnn"):
    return "xla"
  for name in GPU_PREFERENCE.get(head_dim, GPU_DEFAULT) if head_dim is not None else GPU_DEFAULT:
    if available(name) and _supports(name, head_dim=head_dim, masked=masked):
      return name
  return "xla"


def chosen_implementations() -> dict[str, str]:
  """What ``auto`` picked so far in this process: ``"q [B,Lq,H,D] k [B,Lk,H,D] dtype" -> implementation``."""
  return {" ".join(str(list(p)) if isinstance(p, tuple) else p for p in key if p): impl
          for key, impl in _CHOSEN.items()}


def _record(implementation: str, q, k, masked: bool, impl: str) -> None:
  if implementation != "auto":
    return
  key = ("q", tuple(q.shape), "k", tuple(k.shape), str(jnp.dtype(q.dtype)), "masked" if masked else "")
  if key not in _CHOSEN:
    _CHOSEN[key] = impl
    _log.info("attention auto: %s for q %s k %s %s%s", impl, tuple(q.shape), tuple(k.shape),
              jnp.dtype(q.dtype).name, " (masked)" if masked else "")


def _require_runnable(impl: str) -> None:
  if impl in GPU_KERNELS and not kernel_available(impl):
    if impl in ("fa3", "fa3_fwd") and gpu_capability() is not None and not _has_package(FA3_PACKAGE):
      raise Gen3RInputError(f"attention={impl!r} needs the package flash-attn3-jax: pip install 'gen3r-jax[fa3]' "
                            "(or set attention='auto', which falls back to cuDNN).")
    raise Gen3RInputError(f"attention={impl!r} needs an NVIDIA GPU{' of compute capability 9.x (Hopper)' if impl.startswith('fa3') else ''}"
                          f" (backend here: {jax.default_backend()}); use attention='auto' or 'xla'.")


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
    queries are batch-sharded), so under a mesh all three are constrained to ``(act_batch, -, act_heads, -)``.
  * cuDNN's backward rejects odd sequence lengths (the DiT's 257 CLIP tokens, VGGT's 1605-token frames): an odd
    query or key length is padded by one row; a sequence-length mask gives the padded key exactly zero weight
    and the padded query row is sliced off, so the values are unchanged.
  """
  b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
  odd = (lq % 2 or lk % 2) and bias is None and mask is None
  same = lambda x, n=0: constrain(jnp.pad(x, ((0, 0), (0, n % 2), (0, 0), (0, 0))) if odd else x,
                                  ("act_batch", None, "act_heads", None))
  q, k, v = same(q, lq), same(k, lk), same(v, lk)
  if not odd:
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale, implementation="cudnn")
  lengths = lambda n: constrain(jnp.full((b,), n, jnp.int32), ("act_batch",))
  out = jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="cudnn",
                                     query_seq_lengths=lengths(lq), key_value_seq_lengths=lengths(lk))
  return out[:, :lq]


def forward_with_training_kernel(infer, train):
  """``infer(q, k, v)`` when the result is not differentiated, ``train`` (values and gradients) when it is.

  A ``jax.custom_vjp`` whose primal is ``infer`` and whose forward/backward rules are ``train``'s own
  (``jax.vjp``), so sampling runs the fast forward kernel and training runs ``train``'s kernels only, with no
  extra forward. Both must compute the same attention (they differ by bf16 rounding).
  """

  @jax.custom_vjp
  def f(q, k, v):
    return infer(q, k, v)

  def fwd(q, k, v):
    return jax.vjp(train, q, k, v)

  def bwd(vjp, g):
    return vjp(g)

  f.defvjp(fwd, bwd)
  return f



def fa3_attention(q, k, v, *, scale: float, bias=None, mask=None):
  """FlashAttention-3 forward and backward (``flash-attn3-jax``'s FFI kernels, :mod:`gen3r_jax.nn.fa3`).

  Any sequence length as it is, no bias or mask. The package's own backward wrapper under-allocates two of the
  kernel's buffers (wrong gradients at many shapes); :func:`gen3r_jax.nn.fa3.fa3_attention` calls the same
  kernel with buffers of the right size. The FFI calls have no sharding rule: under a mesh the dispatch runs
  them per device (:func:`per_shard`).
  """
  q, k, v = _fa3_inputs("fa3", q, k, v, bias, mask)
  return fa3.fa3_attention(q, k, v, float(scale))


def _fa3_inputs(name: str, q, k, v, bias, mask):
  """What FA3 takes: no bias or mask, bf16 / fp16, a head dim that is a multiple of 8 up to 256 (one-line errors)."""
  if bias is not None or mask is not None:
    raise Gen3RInputError(f"attention={name!r} takes no bias or mask; use 'cudnn' or 'xla' (or 'auto').")
  if jnp.dtype(q.dtype) not in (jnp.bfloat16, jnp.float16):
    raise Gen3RInputError(f"attention={name!r} needs bfloat16 or float16 inputs, got {jnp.dtype(q.dtype).name}; "
                          "use a bf16 compute dtype, or attention='auto' / 'xla'.")
  if q.shape[-1] % 8 or q.shape[-1] > 256:
    raise Gen3RInputError(f"attention={name!r} needs a head dim that is a multiple of 8 up to 256, got "
                          f"{q.shape[-1]}; use attention='auto' or 'xla'.")
  return q, k, v


def fa3_forward_attention(q, k, v, *, scale: float, bias=None, mask=None):
  """FlashAttention-3's forward when not differentiated (sampling), cuDNN's forward and backward when it is
  (:func:`forward_with_training_kernel`): the fastest pair measured on the H200 (``auto``'s choice)."""
  q, k, v = _fa3_inputs("fa3_fwd", q, k, v, bias, mask)
  f = forward_with_training_kernel(lambda q, k, v: fa3.fa3_attention(q, k, v, float(scale)),
                                   functools.partial(cudnn_attention, scale=scale))
  return f(q, k, v)


# The routing hook (read at trace time): a function offered every :func:`attention` call first; a non-``None``
# result replaces the local dispatch. ``gen3r_jax.nn.context_parallel.use_context_parallel`` sets it.
_ROUTE: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("attention_route", default=None)


@contextlib.contextmanager
def route_attention(route: Callable | None):
  """Within this block, :func:`attention` first calls ``route(q, k, v, *, implementation, scale, bias, mask)``
  and uses its result unless it is ``None`` (``route=None``: no routing)."""
  token = _ROUTE.set(route)
  try:
    yield
  finally:
    _ROUTE.reset(token)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "auto",
              scale: float | None = None, bias: jax.Array | None = None,
              mask: jax.Array | None = None) -> jax.Array:
  """Multi-head attention, ``[B, L, H, D]`` layout (see module docstring).

  Args:
    scale: logit scale; defaults to ``1/sqrt(D)``. umT5 passes ``1.0``.
    bias: additive logit bias broadcastable to ``[B, H, Lq, Lk]`` (umT5 relative positions).
    mask: boolean, broadcastable to ``[B, H, Lq, Lk]``; ``False`` = masked out.
  """
  route = _ROUTE.get()
  out = None if route is None else route(q, k, v, implementation=implementation, scale=scale, bias=bias,
                                         mask=mask)
  if out is not None:
    return out
  return local_attention(q, k, v, implementation=implementation, scale=scale, bias=bias, mask=mask)


def local_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "auto",
                    scale: float | None = None, bias: jax.Array | None = None,
                    mask: jax.Array | None = None) -> jax.Array:
  """:func:`attention` on the arrays as given (no context-parallel routing); same arguments."""
  if scale is None:
    scale = 1.0 / math.sqrt(q.shape[-1])
  masked = bias is not None or mask is not None
  impl = resolve_implementation(implementation, q.dtype, q.shape[-1], masked=masked)
  _record(implementation, q, k, masked, impl)
  if impl == "xla":
    return xla_attention(q, k, v, scale=scale, bias=bias, mask=mask)
  _require_runnable(impl)
  if impl == "cudnn":
    return cudnn_attention(q, k, v, scale=scale, bias=bias, mask=mask)
  kernel = {"fa3": fa3_attention, "fa3_fwd": fa3_forward_attention, "splash": splash_attention}[impl]
  return per_shard(functools.partial(kernel, scale=scale, bias=bias, mask=mask), q, k, v)


def per_shard(fn: Callable, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """``fn(q, k, v)`` on each device's block of a mesh: for the kernels XLA cannot partition (FA3's FFI calls,
  splash's Pallas call have no sharding rule), which under a mesh it would otherwise run whole on every device
  after gathering q, k and v. A ``shard_map`` with batch and heads split as the ``act_batch`` / ``act_heads``
  rules split them (where they divide) and the sequences whole: no communication when the inputs are laid out
  so already, as the models' constraints lay them out. Without a mesh, or inside ``shard_map`` (context
  parallelism: the blocks are already local), ``fn(q, k, v)``."""
  mesh = auto_mesh()
  if mesh is None or math.prod(mesh.shape.values()) == 1:
    return fn(q, k, v)
  axes = ("act_batch", None, "act_heads", None)
  q_spec = spec_for(axes, q.shape, mesh, current_rules())
  kv_spec = spec_for(axes, k.shape, mesh, current_rules())
  return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec, check_vma=False)(q, k, v)
