"""Logical axis names -> mesh axes (the sharding rules, data), and the shardings they give.

The mesh always has the five axes ``cfg, data, fsdp, context, tensor`` (size 1 where unused). Models name the axes of
their parameters (``embed``, ``mlp``, ``heads``, ...) and of the activations they constrain (``act_batch``,
``act_length``, ``act_embed``, ``act_heads``, ...: always ``act_``-prefixed, so a rule for a weight never moves an
activation and the reverse); a :class:`Rules` table maps each name to mesh axes. The table is config data: the
trainer and the sampler build it from ``config.sharding`` (``Rules.from_config``: ``rules``, per-model
``model_rules``, ``allow_replicated``); library calls without one use :data:`DEFAULT_RULES`, the same table as
``configs/base.py``.

A logical axis whose size the mesh axes it maps to do not divide is left unsharded, so tiny test models still run
on 8 devices; for a logical axis mapped to several mesh axes (``act_batch``), trailing mesh axes are dropped until
the rest divide it. A parameter above ``replicated_limit_bytes`` (1 MiB) that the rules mean to shard (one of its axes
maps to a mesh axis of size > 1) but that ends up fully replicated that way is an error naming the parameter, its
shape and the rule to add, unless ``allow_replicated`` lists it. :func:`explain` prints where every parameter goes.

``cfg`` is the sampler's classifier-free-guidance axis: the CFG batch ``[unconditional, conditional]`` splits over
it (``act_batch`` maps to ``cfg`` first) while no parameter does, so each of the two device groups holds the whole
(or its ``fsdp``/``tensor``-sharded) model and runs one branch with no communication until the two predictions
are combined (``gen3r_jax.sampling.denoise``). It is the outermost mesh axis (devices ``[0, n/2)`` and
``[n/2, n)``), the one that communicates least. Training takes ``cfg = 1``.

Activation constraints (:func:`constrain`) read the rules made active by :func:`use_rules` (default
:data:`DEFAULT_RULES`) when a function is traced: trace (``jit``) inside the block, as the trainer and the sampler do.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fnmatch
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gen3r_jax.compat import logical_axes, value_of
from gen3r_jax.errors import Gen3RInputError

MESH_AXES = ("cfg", "data", "fsdp", "context", "tensor")
ACT_PREFIX = "act_"
MIB = 1 << 20

# logical name -> mesh axes (() = replicated). The project's defaults; configs/base.py spells out the same table as
# config.sharding.rules (tests/test_sharding_rules.py keeps the two equal).
DEFAULT_TABLE: dict[str, tuple[str, ...]] = {
    # parameters
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv": (),
    "vocab": ("tensor",),
    "conv_in": (),
    "conv_out": ("fsdp",),
    "layers": (),
    "norm": (),
    # activations
    "act_batch": ("cfg", "data", "fsdp"),
    "act_length": ("context",),
    "act_embed": (),
    "act_heads": ("tensor",),
    "act_kv": (),
}

# the names a model goes by in model_rules: the config sub-dict names (config.model.<name>); the bundle's
# component / field names and the frozen modules' attribute names resolve to them
MODEL_NAMES = ("dit", "vggt", "wan_vae", "adapter", "text_encoder", "clip")
MODEL_ALIASES = {"transformer": "dit", "geo_adapter": "adapter", "vae": "wan_vae", "clip_image_encoder": "clip"}
# the keys of a config.sharding section (configs/base.py's sharding())
SHARDING_KEYS = ("rules", "model_rules", "allow_replicated", "replicated_limit_mib")

MeshAxes = tuple[str, ...]
Table = tuple[tuple[str, MeshAxes], ...]


def _mesh_axes(value: Any, where: str) -> MeshAxes:
  """A rule's value (a mesh axis, a sequence of them, or None/() for replicated) as a tuple, checked."""
  axes = () if value is None else (value,) if isinstance(value, str) else tuple(value)
  bad = [a for a in axes if a not in MESH_AXES]
  if bad or len(set(axes)) != len(axes):
    raise Gen3RInputError(f"{where}: {value!r} must be mesh axes among {MESH_AXES} (each at most once), or () for "
                          "replicated.")
  return axes


def _table(rules: Mapping[str, Any] | Sequence, where: str) -> Table:
  items = rules.items() if hasattr(rules, "items") else rules
  return tuple((str(k), _mesh_axes(v, f"{where}.{k}")) for k, v in items)


def _known_table(rules: Mapping[str, Any], where: str) -> Table:
  """:func:`_table` of a config's rules, whose names must be logical axes the models use (:data:`DEFAULT_TABLE`)."""
  table = _table(rules, where)
  unknown = sorted(k for k, _ in table if k not in DEFAULT_TABLE)
  if unknown:
    raise Gen3RInputError(f"{where}: unknown logical axis name(s) {unknown}; the known ones are "
                          f"{', '.join(DEFAULT_TABLE)}.")
  return table


def model_name(name: str) -> str:
  """The model_rules key of a model (``"transformer"`` -> ``"dit"``; see :data:`MODEL_ALIASES`)."""
  return MODEL_ALIASES.get(name, name)


@dataclasses.dataclass(frozen=True)
class Rules:
  """Logical axis name -> mesh axes, plus what may be replicated (hashable: a static ``jit`` argument).

  ``table``: ``((name, mesh axes), ...)`` for every parameter and activation name the models use;
  ``models``: ``((model, table), ...)`` overrides for one model (:meth:`for_model`); ``allow_replicated``:
  ``fnmatch`` patterns of parameter paths (``"blocks.*.ffn.*"``, ``"*"``) that may fall back to replication;
  ``replicated_limit_bytes``: parameters at most this big may always fall back; ``model``: the model these rules
  were made for (:meth:`for_model`), whose name prefixes parameter paths in errors and patterns.
  """
  table: Table = tuple(DEFAULT_TABLE.items())
  models: tuple[tuple[str, Table], ...] = ()
  allow_replicated: tuple[str, ...] = ()
  replicated_limit_bytes: int = MIB
  model: str = ""

  def __post_init__(self):
    # a canonical order (by name), so equal rules compare and hash equal (a static jit argument)
    object.__setattr__(self, "table", tuple(sorted(self.table)))
    object.__setattr__(self, "models", tuple(sorted((m, tuple(sorted(t))) for m, t in self.models)))

  @classmethod
  def from_config(cls, sharding) -> "Rules":
    """Rules from a ``config.sharding`` section (``rules``, ``model_rules``, ``allow_replicated``,
    ``replicated_limit_mib``); ``None`` gives :data:`DEFAULT_RULES`."""
    if sharding is None:
      return DEFAULT_RULES
    get = sharding.get
    unknown = sorted(set(sharding.keys()) - set(SHARDING_KEYS))
    if unknown:
      raise Gen3RInputError(f"config.sharding: unknown key(s) {unknown}; the known ones are {list(SHARDING_KEYS)}.")
    models = get("model_rules") or {}
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if unknown:
      raise Gen3RInputError(f"sharding.model_rules: unknown model(s) {unknown}; use {list(MODEL_NAMES)}.")
    allow = get("allow_replicated") or ()
    allow = (allow,) if isinstance(allow, str) else tuple(str(a) for a in allow)
    limit = float(get("replicated_limit_mib", 1.0))
    return cls(table=_known_table(get("rules") or DEFAULT_TABLE, "sharding.rules"),
               models=tuple((m, _known_table(t, f"sharding.model_rules.{m}")) for m, t in models.items() if len(t)),
               allow_replicated=allow, replicated_limit_bytes=int(limit * MIB))

  def mesh_axes(self, name: str | None) -> MeshAxes:
    """The mesh axes of logical ``name`` (``None``: an axis never sharded); an unknown name is an error."""
    if name is None:
      return ()
    for k, v in self.table:
      if k == name:
        return v
    kind = "activation" if name.startswith(ACT_PREFIX) else "parameter"
    raise Gen3RInputError(f"no sharding rule for the {kind} axis {name!r}; add one to config.sharding.rules (known: "
                          f"{', '.join(k for k, _ in self.table)}).")

  def for_model(self, name: str | None) -> "Rules":
    """These rules with ``model_rules.<name>`` (aliases resolved) laid over the table, for model ``name`` (one of
    :data:`MODEL_NAMES` or :data:`MODEL_ALIASES`); rules already made for ``name`` are returned as they are, rules
    made for another model are an error (their table holds that model's overrides)."""
    if name is None:
      return self
    name = model_name(name)
    if name not in MODEL_NAMES:
      raise Gen3RInputError(f"no model {name!r} to take sharding rules for; use one of {', '.join(MODEL_NAMES)} "
                            f"(or {', '.join(MODEL_ALIASES)}).")
    if self.model:
      if self.model == name:
        return self
      raise Gen3RInputError(f"these sharding rules were made for model {self.model!r}, not {name!r}; call "
                            f"for_model({name!r}) on the config's rules (Rules.from_config(config.sharding)).")
    over = dict(self.models).get(name, ())
    return dataclasses.replace(self, table=tuple({**dict(self.table), **dict(over)}.items()), models=(), model=name)

  def qualified(self, path: str) -> str:
    """``path`` prefixed with the model's name (``"wan_vae.encoder.head.conv.conv.kernel"``)."""
    return f"{self.model}.{path}" if self.model else path

  def allows_replicated(self, path: str) -> bool:
    """Whether an ``allow_replicated`` pattern matches ``path`` or ``<model>.<path>``."""
    names = {path, self.qualified(path)}
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in self.allow_replicated)


DEFAULT_RULES = Rules()


def as_rules(rules) -> Rules:
  """``rules`` as :class:`Rules`: a ``Rules``, ``None`` (the defaults), a ``config.sharding`` section or a plain
  ``{name: mesh axes}`` table."""
  if rules is None:
    return DEFAULT_RULES
  if isinstance(rules, Rules):
    return rules
  if hasattr(rules, "get") and rules.get("rules") is not None:
    return Rules.from_config(rules)
  return Rules(table=_table(rules, "rules"))


def mesh_axes_for(name: str | None, rules=DEFAULT_RULES) -> MeshAxes:
  return as_rules(rules).mesh_axes(name)


def _check_kind(axes, activation: bool, where: str) -> None:
  for name in axes:
    if name is not None and name.startswith(ACT_PREFIX) != activation:
      want = f"'{ACT_PREFIX}'-prefixed" if activation else f"not '{ACT_PREFIX}'-prefixed"
      kind = "an activation" if activation else "a parameter"
      raise Gen3RInputError(f"{where}: logical axis {name!r} of {kind} must be {want} (activation and parameter "
                            "axes have distinct names).")


def spec_axes(entry) -> tuple[str, ...]:
  """The mesh axes of one ``PartitionSpec`` entry (``None``, an axis name or a tuple of them) as a tuple."""
  return () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))


def fit_axes(names: Sequence[str], size: int, mesh_shape: Mapping[str, int]) -> tuple[str, ...]:
  """``names`` less trailing mesh axes until their product divides ``size`` (batch 2 on ``cfg=2 x fsdp=2``
  splits over ``cfg`` only; tiny shapes stay replicated)."""
  names = tuple(names)
  while names and size % int(np.prod([mesh_shape[a] for a in names])):
    names = names[:-1]
  return names


def spec_for(axes: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
             rules=DEFAULT_RULES) -> P:
  """PartitionSpec for an array of ``shape`` with logical ``axes`` (axes the mesh does not divide stay unsharded).

  No replication check: parameters go through :func:`param_spec`."""
  if axes is None:
    return P()
  rules = as_rules(rules)
  used: set[str] = set()
  out = []
  for name, size in zip(axes, shape):
    ms = fit_axes([a for a in rules.mesh_axes(name) if a in mesh.shape and mesh.shape[a] > 1 and a not in used],
                  size, mesh.shape)
    if not ms:
      out.append(None)
      continue
    used.update(ms)
    out.append(ms[0] if len(ms) == 1 else ms)
  return P(*out)


def param_spec(path: str, axes: Sequence[str | None] | None, shape: Sequence[int], itemsize: int, mesh: Mesh,
               rules=DEFAULT_RULES) -> P:
  """:func:`spec_for` of a parameter, refusing a silent fallback to replication (module docstring)."""
  rules = as_rules(rules)
  if axes is None:
    return P()
  _check_kind(axes, False, f"parameter {path}")
  spec = spec_for(axes, shape, mesh, rules)
  nbytes = int(np.prod(shape)) * int(itemsize)
  if any(e is not None for e in spec) or nbytes <= rules.replicated_limit_bytes or rules.allows_replicated(path):
    return spec
  meant = {name: tuple(a for a in rules.mesh_axes(name) if a in mesh.shape and mesh.shape[a] > 1)
           for name in axes if name is not None}
  meant = {k: v for k, v in meant.items() if v}
  if not meant:
    return spec   # the rules shard none of its axes on this mesh: replicated by intent (e.g. pure data parallel)
  tried = ", ".join(f"{k}->{'x'.join(v)} ({'x'.join(str(mesh.shape[a]) for a in v)})" for k, v in meant.items())
  sizes = ", ".join(f"{a}={mesh.shape[a]}" for a in MESH_AXES if a in mesh.shape and mesh.shape[a] > 1)
  name = rules.qualified(path)
  where = f"sharding.model_rules.{rules.model}" if rules.model else "sharding.rules"
  raise Gen3RInputError(
      f"parameter {name} {tuple(int(d) for d in shape)} ({nbytes / MIB:.1f} MiB, logical axes {tuple(axes)}) would be "
      f"replicated on every device: {tried} divides none of its dimensions on the mesh {sizes}; map one of its "
      f"axes to a mesh axis that divides it in config.{where}, or allow it: "
      f"config.sharding.allow_replicated=('{name}',).")


def path_str(path) -> str:
  """``('blocks', 0, 'ffn', 'kernel')`` or a jax key path -> ``"blocks.0.ffn.kernel"``."""
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _var_spec(path, var, mesh, rules) -> P:
  v = value_of(var)
  return param_spec(path_str(path), logical_axes(var), v.shape, np.dtype(v.dtype).itemsize, mesh, rules)


def state_shardings(abstract_state, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for every leaf of an abstract ``nnx.State`` from its logical-axis metadata (a parameter
  above the limit that would fall back to replication is an error, see :func:`param_spec`)."""
  rules = as_rules(rules)

  def one(path, var):
    if isinstance(var, nnx.Variable):
      return NamedSharding(mesh, _var_spec(path, var, mesh, rules))
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def module_shardings(abstract_state, mesh: Mesh, rules=DEFAULT_RULES):
  """:func:`state_shardings` of a state whose top-level entries are models (a trainer's frozen modules, a
  bundle): each entry with its own ``model_rules`` (``rules.for_model(<entry name>)``; an entry that is no model, a
  buffer such as ``empty_context``, the global rules)."""
  rules = as_rules(rules)

  def one(path, var):
    if isinstance(var, nnx.Variable) and path:
      name = str(getattr(path[0], "key", path[0]))
      r = rules.for_model(name) if model_name(name) in MODEL_NAMES else rules   # a buffer beside the models: global
      return NamedSharding(mesh, _var_spec(path[1:], var, mesh, r))   # paths within the model, as for one model
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def activation_spec(axes: Sequence[str | None], mesh: Mesh | None, rules=None) -> P:
  """PartitionSpec for an activation with logical ``act_*`` axes (no divisibility check: use on known shapes).
  ``rules``: default the active ones (:func:`use_rules`)."""
  if mesh is None:
    return P()
  rules = current_rules() if rules is None else as_rules(rules)
  _check_kind(axes, True, "activation")
  out, used = [], set()
  for name in axes:
    ms = tuple(a for a in rules.mesh_axes(name) if a in mesh.shape and a not in used)
    used.update(ms)
    out.append(None if not ms else (ms[0] if len(ms) == 1 else ms))
  return P(*out)


def explain(abstract_state, mesh: Mesh, rules=DEFAULT_RULES) -> list[str]:
  """Human-readable lines ``path shape axes -> spec`` (for dry runs and docs; no replication check)."""
  lines = []
  for path, var in nnx.to_flat_state(abstract_state):
    v = value_of(var)
    lines.append(f"{path_str(path)} {tuple(v.shape)} {logical_axes(var)} -> "
                 f"{spec_for(logical_axes(var), v.shape, mesh, rules)}")
  return lines


def make_mesh(shape: Mapping[str, int] | None = None, devices=None) -> Mesh:
  """A mesh over all (or the given) devices with axes ``cfg, data, fsdp, context, tensor``.

  ``shape`` gives sizes per axis (each >= 1); one axis may be ``-1`` to take the remaining devices (default: all
  devices on ``fsdp``). A size below 1 or a shape that does not divide the device count is a clear error.
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = dict(shape or {"fsdp": -1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise Gen3RInputError(f"mesh axes must be among {MESH_AXES}, got {sorted(unknown)}")
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  bad = {a: s for a, s in sizes.items() if s < 1 and s != -1}
  if bad:
    raise Gen3RInputError(f"mesh axis sizes must be >= 1 (or -1 for the remaining devices), got "
                          f"{', '.join(f'{a}={s}' for a, s in bad.items())}")
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


ACT_AXES = ("act_batch", "act_length", "act_embed")   # the residual stream [B, L, D]

_ACTIVE_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar("sharding_rules", default=DEFAULT_RULES)


@contextlib.contextmanager
def use_rules(rules):
  """Make ``rules`` (a :class:`Rules` or anything :func:`as_rules` takes) the ones :func:`constrain` and
  :func:`activation_spec` read in this block (at trace time: trace the step inside it)."""
  token = _ACTIVE_RULES.set(as_rules(rules))
  try:
    yield
  finally:
    _ACTIVE_RULES.reset(token)


def current_rules() -> Rules:
  """The rules of the innermost :func:`use_rules` block (default :data:`DEFAULT_RULES`)."""
  return _ACTIVE_RULES.get()


def active_mesh():
  """The mesh set by ``jax.set_mesh`` / ``jax.sharding.use_abstract_mesh`` (public API), else ``None``.

  The legacy ``with mesh:`` context is not read (JAX has no public reader for it): enter a mesh with
  ``jax.set_mesh(mesh)``, as the trainer, the sampler and the benchmarks do.
  """
  m = jax.sharding.get_abstract_mesh()
  return None if m is None or m.empty else m


def auto_mesh():
  """The active mesh (:func:`active_mesh`) where XLA partitions the program, ``None`` without one or inside
  ``shard_map`` (manual axes: each device's block is already what the code sees)."""
  mesh = active_mesh()
  if mesh is None or any("manual" in str(t).lower() for t in getattr(mesh, "axis_types", ())):
    return None
  return mesh


def constrain(x: jax.Array, axes=ACT_AXES) -> jax.Array:
  """``with_sharding_constraint`` to logical activation ``axes`` (``act_*``, by the active rules, :func:`use_rules`)
  under an active mesh (no-op without one).

  When the mesh axes of a dimension do not divide it, trailing mesh axes are dropped until they do (batch 2 on
  ``data=2, fsdp=4`` shards over ``data`` only; tiny shapes stay replicated).
  """
  mesh = auto_mesh()
  if mesh is None:
    return x  # no mesh, or inside shard_map (manual axes): the caller's layout stands
  spec = activation_spec(axes, mesh)
  fixed = []
  for size, entry in zip(x.shape, tuple(spec) + (None,) * (x.ndim - len(spec))):
    names = fit_axes([a for a in spec_axes(entry) if mesh.shape[a] > 1], size, mesh.shape)
    fixed.append(None if not names else (names[0] if len(names) == 1 else names))
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*fixed))
