"""Logical axis names -> mesh axes, and the shardings they give.

The mesh always has the five axes ``cfg, data, fsdp, context, tensor`` (size 1 where unused). Models name their
parameter and activation axes logically; this one table decides where they go. A logical axis whose size does
not divide the mesh axes it maps to is replicated instead (reported by :func:`explain`), so tiny test models
still shard on 8 devices; for a logical axis mapped to several mesh axes (``batch``), trailing mesh axes are
dropped until the rest divide it.

``cfg`` is the sampler's classifier-free-guidance axis: the CFG batch ``[unconditional, conditional]`` splits over
it (``batch`` maps to ``cfg`` first) while no parameter does, so each of the two device groups holds the whole
(or its ``fsdp``/``tensor``-sharded) model and runs one branch with no communication until the two predictions
are combined (``gen3r_jax.sampling.denoise``). It is the outermost mesh axis (devices ``[0, n/2)`` and
``[n/2, n)``), the one that communicates least. Training takes ``cfg = 1``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gen3r_jax.compat import logical_axes, value_of
from gen3r_jax.errors import Gen3RInputError

MESH_AXES = ("cfg", "data", "fsdp", "context", "tensor")

# logical name -> mesh axis / axes (None = replicated)
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("cfg", "data", "fsdp")),
    ("length", "context"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("layers", None),
    ("norm", None),
)


def mesh_axes_for(name: str | None, rules=DEFAULT_RULES):
  if name is None:
    return None
  for k, v in rules:
    if k == name:
      return v
  return None


def spec_for(axes: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
             rules=DEFAULT_RULES) -> P:
  """PartitionSpec for an array of ``shape`` with logical ``axes`` (non-dividing axes replicate)."""
  if axes is None:
    return P()
  used: set[str] = set()
  out = []
  for name, size in zip(axes, shape):
    m = mesh_axes_for(name, rules)
    ms = (m,) if isinstance(m, str) else tuple(m or ())
    ms = tuple(a for a in ms if a in mesh.shape and mesh.shape[a] > 1 and a not in used)
    while ms and size % int(np.prod([mesh.shape[a] for a in ms])):
      ms = ms[:-1]          # as constrain(): batch 2 on cfg=2 x fsdp=2 splits over cfg only
    if not ms:
      out.append(None)
      continue
    used.update(ms)
    out.append(ms[0] if len(ms) == 1 else ms)
  return P(*out)


def state_shardings(abstract_state, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for every leaf of an abstract ``nnx.State`` from its logical-axis metadata."""

  def one(var):
    v = value_of(var)
    if isinstance(var, nnx.Variable):
      return NamedSharding(mesh, spec_for(logical_axes(var), v.shape, mesh, rules))
    return NamedSharding(mesh, P())

  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def activation_spec(axes: Sequence[str | None], mesh: Mesh | None, rules=DEFAULT_RULES) -> P:
  """PartitionSpec for an activation with logical ``axes`` (no divisibility check: use on known shapes)."""
  if mesh is None:
    return P()
  out, used = [], set()
  for name in axes:
    m = mesh_axes_for(name, rules)
    ms = (m,) if isinstance(m, str) else tuple(m or ())
    ms = tuple(a for a in ms if a in mesh.shape and a not in used)
    used.update(ms)
    out.append(None if not ms else (ms[0] if len(ms) == 1 else ms))
  return P(*out)


def explain(abstract_state, mesh: Mesh, rules=DEFAULT_RULES) -> list[str]:
  """Human-readable lines ``path shape -> spec`` (for dry runs and docs)."""
  lines = []
  for path, var in nnx.to_flat_state(abstract_state):
    v = value_of(var)
    lines.append(f"{'.'.join(map(str, path))} {tuple(v.shape)} {logical_axes(var)} -> "
                 f"{spec_for(logical_axes(var), v.shape, mesh, rules)}")
  return lines


def make_mesh(shape: Mapping[str, int] | None = None, devices=None) -> Mesh:
  """A mesh over all (or the given) devices with axes ``cfg, data, fsdp, context, tensor``.

  ``shape`` gives sizes per axis; one axis may be ``-1`` to take the remaining devices (default: all devices on
  ``fsdp``). A shape that does not divide the device count is a clear error.
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = dict(shape or {"fsdp": -1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise Gen3RInputError(f"mesh axes must be among {MESH_AXES}, got {sorted(unknown)}")
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise Gen3RInputError(f"at most one mesh axis may be -1, got {free}")
  known = int(np.prod([s for s in sizes.values() if s != -1]))
  if free:
    if len(devices) % known:
      raise Gen3RInputError(
          f"mesh {shape} does not divide the {len(devices)} devices: the fixed axes multiply to {known}")
    sizes[free[0]] = len(devices) // known
  total = int(np.prod(list(sizes.values())))
  if total != len(devices):
    raise Gen3RInputError(
        f"mesh {sizes} needs {total} devices but {len(devices)} are available; make the axis sizes multiply "
        f"to {len(devices)} (or set one axis to -1)")
  arr = np.asarray(devices).reshape([sizes[a] for a in MESH_AXES])
  return Mesh(arr, MESH_AXES)


ACT_AXES = ("batch", "length", "embed")


def active_mesh():
  """The mesh set by ``jax.set_mesh`` / ``jax.sharding.use_abstract_mesh`` (public API), else ``None``.

  The legacy ``with mesh:`` context is not read (JAX has no public reader for it): enter a mesh with
  ``jax.set_mesh(mesh)``, as the trainer, the sampler and the benchmarks do.
  """
  m = jax.sharding.get_abstract_mesh()
  return None if m is None or m.empty else m


def constrain(x: jax.Array, axes=ACT_AXES) -> jax.Array:
  """``with_sharding_constraint`` to logical ``axes`` under an active mesh (no-op without one).

  When the mesh axes of a dimension do not divide it, trailing mesh axes are dropped until they do (batch 2 on
  ``data=2, fsdp=4`` shards over ``data`` only; tiny shapes stay replicated).
  """
  mesh = active_mesh()
  if mesh is None or any("manual" in str(t).lower() for t in getattr(mesh, "axis_types", ())):
    return x  # no mesh, or inside shard_map (manual axes): the caller's layout stands
  spec = activation_spec(axes, mesh)
  fixed = []
  for size, entry in zip(x.shape, tuple(spec) + (None,) * (x.ndim - len(spec))):
    names = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
    names = tuple(a for a in names if mesh.shape[a] > 1)
    while names and size % int(np.prod([mesh.shape[a] for a in names])):
      names = names[:-1]
    fixed.append(None if not names else (names[0] if len(names) == 1 else names))
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*fixed))
