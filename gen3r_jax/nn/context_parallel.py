"""Context (sequence) parallel attention: ``shard_map`` over the mesh axis ``context``.

``context_attention(q, k, v, mesh=mesh, strategy=...)`` computes exactly ``attention(q, k, v)`` for
``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]`` with the sequence split over ``context`` (batch over the mesh axes
of the ``act_batch`` rule, heads over those of ``act_heads`` when they divide, else replicated):

* ``"allgather"``: each shard all-gathers K/V over ``context`` (``[B, Lk, H_local, D]``) and runs the local
  dispatch (``xla | cudnn | splash``) on its query block. Simple, any kernel; K/V memory is the full sequence.
* ``"ring"``: K/V blocks travel around the ``context`` ring (``ppermute``, issued before each block's compute so
  the transfer overlaps it) while a float32 online softmax (running max, denominator, numerator) accumulates;
  K/V memory stays one block. Einsum blocks (XLA); gradients by autodiff through the scan.
* ``"replicate_kv"``: only ``q`` is split; K/V are replicated over ``context`` (cross-attention to text/image
  tokens, whose length has nothing to do with the video's). No communication.
* ``"ulysses"`` (DeepSpeed-Ulysses): one ``all_to_all`` over ``context`` turns the sequence-split q/k/v
  ``[B, L/n, H, D]`` into head-split ones ``[B, L, H/n, D]``, the local dispatch (any kernel: cuDNN, FA3,
  splash) runs on the full sequence for ``H/n`` heads, and one ``all_to_all`` turns the result back. Two
  all-to-alls per call (q, k, v stacked in one, then out) instead of the ring's ``n - 1`` K/V transfers; needs the
  (per-``tensor``-shard) head count to be divisible by the ``context`` size.
* ``"ulysses_ring"`` / ``"ulysses_allgather"`` (USP-style hybrid): Ulysses over ``u = gcd(heads, n)`` devices
  (contiguous groups of the ``context`` axis), then ring / all-gather attention over the ``r = n / u`` groups
  for the sequence chunk each group now holds. With ``u == n`` this is plain Ulysses, with ``u == 1`` plain ring
  / all-gather. Chosen over padding the heads to a multiple of ``n`` because it is exact without wasted work:
  the 1.3B DiT's 12 heads on ``context=8`` would pad to 16 heads (33 % more attention compute and activation
  memory), whereas the hybrid runs Ulysses over 4 and a 2-step ring. Both stages communicate inside one
  ``shard_map`` over the mesh's ``context`` axis (``axis_index_groups`` / group-local permutations), so the
  sequence layout outside is the plain ``context`` split, the same as for every other strategy.

Model hook (models need no change): inside ``with use_context_parallel(mesh, "ring"):`` every
``gen3r_jax.nn.attention.attention`` call traced with ``bias=None, mask=None`` and ``Lq`` divisible by the
``context`` size goes through :func:`context_attention` (the hook ``nn.attention.route_attention``): ``Lk == Lq``
as self-attention with ``strategy``, otherwise with ``"replicate_kv"``. Other calls (masked umT5, lengths that do
not divide, and under plain ``"ulysses"`` a head count it cannot split, such as the 1-head attention of the frozen
VAE encoder inside an online stage-2 step) run the plain dispatch under GSPMD, or raise with ``strict=True``. The
network the strategy is for is checked before compiling (:func:`check_strategy`), so a misconfigured DiT never
falls back silently. The hook is read at trace time:
trace (``jit``) the step inside the block; a function traced before stays cached without it.

How the Wan DiT uses it: its activations are constrained to logical ``(act_batch, act_length, act_embed)`` at
block boundaries, and the rules map ``act_length -> context``, so under ``jax.set_mesh(mesh)`` the residual stream
is already split along the sequence. Wrap the jitted train/sample step in ``use_context_parallel(mesh)``: the
per-token work (projections, RoPE, norms, FFN) stays sharded by GSPMD, self-attention becomes the shard_map
above (no re-layout: its in_specs match), cross-attention splits the queries and replicates the text/image K/V.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import types

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.nn.attention import local_attention, resolve_implementation, route_attention
from gen3r_jax.parallel.rules import DEFAULT_RULES, Rules, as_rules, current_rules, spec_axes, spec_for

if not hasattr(jax, "shard_map"):  # pragma: no cover - older jax
  from jax.experimental.shard_map import shard_map as _legacy_shard_map

AXIS = "context"
# self-attention strategies (what configs choose), then the cross-attention one the hook picks by itself
SELF_STRATEGIES = ("allgather", "ring", "ulysses", "ulysses_ring", "ulysses_allgather")
STRATEGIES = SELF_STRATEGIES + ("replicate_kv",)


def _shard_map(f, mesh, in_specs, out_specs, check: bool):
  """``jax.shard_map`` (new jax) or ``jax.experimental.shard_map.shard_map`` (older). ``check`` turns the
  varying-axes (replication) check on; custom kernels (Pallas splash, cuDNN) do not declare how their outputs
  vary over manual axes, so their shard_maps run unchecked (gradients are tested equal either way)."""
  if hasattr(jax, "shard_map"):
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check)
  return _legacy_shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs,  # pragma: no cover
                           check_rep=check)


def context_size(mesh: Mesh | None) -> int:
  return int(mesh.shape.get(AXIS, 1)) if mesh is not None else 1


def qkv_spec(shape, mesh: Mesh, rules=DEFAULT_RULES, *, split_length: bool = True) -> P:
  """``PartitionSpec`` of one ``[B, L, H, D]`` operand: batch and heads by the ``act_batch`` / ``act_heads`` rules
  (replicated where they do not divide), ``L`` over ``context`` (or replicated with ``split_length=False``)."""
  b, _, h, _ = shape
  batch = spec_for(("act_batch",), (b,), mesh, rules)[0]
  heads = spec_for(("act_heads",), (h,), mesh, rules)[0]
  require(AXIS not in spec_axes(batch) + spec_axes(heads),
          f"the rules map act_batch/act_heads onto '{AXIS}'; context parallelism needs it for the sequence only")
  if set(spec_axes(batch)) & set(spec_axes(heads)):  # one mesh axis cannot split two dimensions
    heads = None
  return P(batch, AXIS if split_length else None, heads, None)


def _check(q, k, v, mesh, strategy):
  require(strategy in STRATEGIES, f"context strategy must be one of {STRATEGIES}, got {strategy!r}")
  require(AXIS in mesh.shape, f"the mesh has no '{AXIS}' axis (axes {tuple(mesh.shape)}); build it with "
                              "gen3r_jax.parallel.rules.make_mesh")
  for name, a in (("q", q), ("k", k), ("v", v)):
    require(a.ndim == 4, f"context_attention: {name} must be [B, L, H, D], got shape {a.shape}")
  require(k.shape == v.shape and q.shape[0] == k.shape[0] and q.shape[2:] == k.shape[2:],
          f"context_attention: q {q.shape}, k {k.shape}, v {v.shape} must share B, H, D (k, v equal)")
  n = context_size(mesh)
  lengths = (("q", q.shape[1]),) + ((("k/v", k.shape[1]),) if strategy != "replicate_kv" else ())
  for name, length in lengths:
    require(length % n == 0, f"context_attention: {name} length {length} is not divisible by the mesh "
                             f"'{AXIS}' size {n}; pad the sequence to a multiple of {n} or change the mesh.")


def _online_block(q, k, v, carry, scale):
  """One K/V block into the float32 online-softmax accumulator ``(m [b,h,q], l [b,h,q], acc [b,q,h,d])``;
  ``carry=None`` starts it (the initial state derives from the inputs, so it has their shard_map type)."""
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  m_blk = s.max(-1)
  m_new = jax.lax.stop_gradient(m_blk if carry is None else jnp.maximum(carry[0], m_blk))  # a stabiliser only
  p = jnp.exp(s - m_new[..., None])
  pv = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  if carry is None:
    return m_new, p.sum(-1), pv
  m, l, acc = carry
  corr = jnp.exp(m - m_new)                                   # <= 1: rescales what was accumulated so far
  return m_new, l * corr + p.sum(-1), acc * jnp.swapaxes(corr, 1, 2)[..., None] + pv


def _ring_local(q, k, v, *, scale, n, perm=None):
  """Per-shard ring attention: ``q [b, lq, h, d]`` attends to all ``n`` K/V blocks passed around ``context``.

  Each step sends the block it holds to the next device before computing on it (transfer and compute
  overlap); ``n - 1`` transfers in all. ``perm``: the ``(source, destination)`` pairs over ``context`` of one
  step (default: the whole axis as one ring; the Ulysses hybrid passes several disjoint rings of ``n``).
  """
  perm = perm if perm is not None else [(i, (i + 1) % n) for i in range(n)]
  send = lambda k, v: jax.lax.ppermute((k, v), AXIS, perm)
  carry = None
  if n > 1:
    k_next, v_next = send(k, v)
    carry = _online_block(q, k, v, None, scale)
    k, v = k_next, v_next

    def step(state, _):
      carry, k, v = state
      k_next, v_next = send(k, v)
      return (_online_block(q, k, v, carry, scale), k_next, v_next), None

    if n > 2:
      (carry, k, v), _ = jax.lax.scan(step, (carry, k, v), None, length=n - 2)
  _, l, acc = _online_block(q, k, v, carry, scale)
  return (acc / jnp.swapaxes(l, 1, 2)[..., None]).astype(q.dtype)


def ulysses_split(heads: int, n: int) -> tuple[int, int]:
  """``(u, r)``: Ulysses (all-to-all over heads) across ``u = gcd(heads, n)`` devices of the ``context`` axis,
  ring / all-gather across the ``r = n // u`` groups. ``heads`` is the count per ``tensor`` shard."""
  u = math.gcd(int(heads), int(n))
  return u, int(n) // u


def ulysses_groups(u: int, r: int) -> tuple[list[list[int]], list[list[int]]]:
  """``(ulysses_groups, ring_groups)`` of ``context`` indices for :func:`ulysses_split`'s ``(u, r)``.

  Ulysses groups are contiguous (``[i*u, ..., i*u + u - 1]``): their all-to-all concatenates ``u`` adjacent
  sequence blocks, so group ``i`` then holds sequence chunk ``i`` of ``r`` for head slice ``j`` (its member
  index). Ring group ``j`` links the members of index ``j`` of every Ulysses group (same heads, all chunks).
  """
  return ([[i * u + j for j in range(u)] for i in range(r)],
          [[i * u + j for i in range(r)] for j in range(u)])


def local_heads(shape, spec: P, mesh: Mesh) -> int:
  """Heads per shard of a ``[B, L, H, D]`` operand with ``spec`` (the ``tensor`` split of :func:`qkv_spec`)."""
  return shape[2] // int(math.prod(mesh.shape[a] for a in spec_axes(spec[2])))


def check_ulysses(strategy: str, heads: int, n: int) -> None:
  """Plain ``"ulysses"`` needs ``heads`` (per ``tensor`` shard) divisible by the ``context`` size ``n``; the
  hybrids take any count. A one-line error naming the fix otherwise."""
  if strategy != "ulysses" or n <= 1 or heads % n == 0:
    return
  u, r = ulysses_split(heads, n)
  raise Gen3RInputError(
      f"context strategy 'ulysses' needs the attention heads per shard ({heads}) divisible by the mesh "
      f"'{AXIS}' size {n}; use 'ulysses_ring' or 'ulysses_allgather' (Ulysses over {u}, then ring / all-gather "
      f"over {r}), or a '{AXIS}' size that divides {heads}.")


def check_strategy(strategy: str, num_heads: int, mesh_shape, rules=None) -> None:
  """Before compiling: ``strategy`` is a self-attention strategy and, for ``"ulysses"``, a model of
  ``num_heads`` heads can use it on a mesh of ``mesh_shape`` (``{axis: size}`` or a ``Mesh``'s ``.shape``) with
  its heads split as :func:`qkv_spec` splits them: by the ``act_heads`` rule of ``rules`` (default: the active
  rules), over the mesh axes that divide them."""
  require(strategy in SELF_STRATEGIES, f"context strategy must be one of {SELF_STRATEGIES}, got {strategy!r}.")
  sizes = {a: max(int(n), 1) for a, n in dict(mesh_shape).items()}   # -1 ("the rest") is checked once resolved
  rules = current_rules() if rules is None else as_rules(rules)
  entry = spec_for(("act_heads",), (num_heads,), types.SimpleNamespace(shape=sizes), rules)[0]
  check_ulysses(strategy, num_heads // int(math.prod(sizes[a] for a in spec_axes(entry))), sizes.get(AXIS, 1))


def _ulysses_local(q, k, v, *, u, r, inner, implementation, scale):
  """Per-shard Ulysses (+ ring / all-gather over ``r`` groups when ``r > 1``); see the module docstring.

  q/k/v ``[b, L/n, h, d]`` -> (one all-to-all of the stacked q/k/v within each Ulysses group) ``[b, L/r, h/u, d]``
  -> attention over the whole sequence (locally when ``r == 1``) -> one all-to-all back -> ``[b, L/n, h, d]``.
  """
  ulysses, rings = ulysses_groups(u, r)
  groups = ulysses if r > 1 else None       # None: the whole axis (the plain collective)
  if u > 1:
    qkv = jax.lax.all_to_all(jnp.stack([q, k, v]), AXIS, 3, 2, tiled=True, axis_index_groups=groups)
    q, k, v = qkv[0], qkv[1], qkv[2]
  if r == 1:
    out = local_attention(q, k, v, implementation=implementation, scale=scale)
  elif inner == "ring":
    perm = [(g[i], g[(i + 1) % r]) for g in rings for i in range(r)]
    out = _ring_local(q, k, v, scale=scale, n=r, perm=perm)
  else:
    k, v = (jax.lax.all_gather(a, AXIS, axis=1, tiled=True, axis_index_groups=rings) for a in (k, v))
    out = local_attention(q, k, v, implementation=implementation, scale=scale)
  if u > 1:
    out = jax.lax.all_to_all(out, AXIS, 1, 2, tiled=True, axis_index_groups=groups)
  return out


def context_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, mesh: Mesh, implementation: str = "auto",
                      strategy: str = "allgather", scale: float | None = None, rules=DEFAULT_RULES) -> jax.Array:
  """Attention with the sequence split over the mesh axis ``context`` (see the module docstring).

  ``q: [B, Lq, H, D]``, ``k, v: [B, Lk, H, D]`` -> ``[B, Lq, H, D]``, equal to the unsharded
  ``attention(q, k, v)``. Works inside or outside ``jit``; the inputs may carry any sharding.
  """
  _check(q, k, v, mesh, strategy)
  if scale is None:
    scale = 1.0 / math.sqrt(q.shape[-1])
  n = context_size(mesh)
  q_spec = qkv_spec(q.shape, mesh, rules)
  kv_spec = qkv_spec(k.shape, mesh, rules, split_length=strategy != "replicate_kv")
  xla_local = resolve_implementation(implementation, q.dtype, q.shape[-1]) == "xla"  # checkable by shard_map
  if strategy.startswith("ulysses") and n > 1:
    heads = local_heads(q.shape, q_spec, mesh)
    check_ulysses(strategy, heads, n)
    u, r = ulysses_split(heads, n)
    inner = strategy.partition("_")[2] or None
    local = functools.partial(_ulysses_local, u=u, r=r, inner=inner, implementation=implementation, scale=scale)
    check = xla_local or (r > 1 and inner == "ring")
  elif strategy == "ring" and n > 1:
    local = functools.partial(_ring_local, scale=scale, n=n)
    check = True
  else:
    def local(q, k, v):
      if strategy == "allgather" and n > 1:
        k, v = (jax.lax.all_gather(a, AXIS, axis=1, tiled=True) for a in (k, v))  # [b, Lk, h, d]
      return local_attention(q, k, v, implementation=implementation, scale=scale)
    check = xla_local
  return _shard_map(local, mesh, (q_spec, kv_spec, kv_spec), q_spec, check)(q, k, v)


# ------------------------------------------------------------------------------------------------ model hook


@dataclasses.dataclass(frozen=True)
class ContextParallel:
  mesh: Mesh
  strategy: str = "allgather"
  rules: Rules = DEFAULT_RULES
  strict: bool = False


_ACTIVE: contextvars.ContextVar[ContextParallel | None] = contextvars.ContextVar("context_parallel",
                                                                                default=None)


@contextlib.contextmanager
def use_context_parallel(mesh: Mesh, strategy: str = "allgather", *, rules=None, strict: bool = False):
  """Route ``nn.attention.attention`` through :func:`context_attention` for calls traced in this block.

  No-op when ``mesh`` has ``context == 1``. ``strict=True`` raises for an attention call that cannot be routed
  (mask/bias or a length that does not divide) instead of running it unsharded-by-sequence. ``rules``: the
  sharding rules of the batch and head axes (default: the active ones, :func:`gen3r_jax.parallel.rules.use_rules`).
  """
  if strategy not in SELF_STRATEGIES:
    raise Gen3RInputError(f"use_context_parallel: strategy must be one of {SELF_STRATEGIES}, got {strategy!r}")
  rules = current_rules() if rules is None else as_rules(rules)
  cp = ContextParallel(mesh, strategy, rules, strict) if context_size(mesh) > 1 else None
  token = _ACTIVE.set(cp)
  try:
    with route_attention(maybe_context_attention if cp is not None else None):
      yield
  finally:
    _ACTIVE.reset(token)


def active() -> ContextParallel | None:
  """The active :class:`ContextParallel` setting, or ``None``."""
  return _ACTIVE.get()


def maybe_context_attention(q, k, v, *, implementation, scale, bias, mask):
  """The dispatch hook: the context-parallel result, or ``None`` when the plain dispatch should run."""
  cp = _ACTIVE.get()
  if cp is None:
    return None
  n = context_size(cp.mesh)
  why = ("a bias or mask is given" if bias is not None or mask is not None else
         f"the query length {q.shape[1]} is not divisible by '{AXIS}'={n}" if q.shape[1] % n else None)
  strategy = cp.strategy if k.shape[1] == q.shape[1] else "replicate_kv"  # self- vs cross-attention
  if why is None and strategy == "ulysses":
    heads = local_heads(q.shape, qkv_spec(q.shape, cp.mesh, cp.rules), cp.mesh)
    if heads % n:   # another network than the checked one (check_strategy), e.g. a frozen encoder's 1-head attention
      why = (f"plain 'ulysses' cannot split its {heads} heads per shard over '{AXIS}'={n} ('ulysses_ring' and "
             f"'ulysses_allgather' split any count)")
  if why is not None:
    require(not cp.strict, f"use_context_parallel(strict=True): cannot split this attention call over "
                           f"'{AXIS}' because {why} (q {q.shape}, k {k.shape}).")
    return None
  return context_attention(q, k, v, mesh=cp.mesh, implementation=implementation, strategy=strategy,
                           scale=scale, rules=cp.rules)
