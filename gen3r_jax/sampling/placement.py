"""Where the weights live while sampling: on the device for the whole run, or in host memory between stages.

Two placements of a :class:`~gen3r_jax.apps.bundle.Gen3RBundle` (chosen at load time,
``load_bundle(..., placement=...)``, or afterwards with :func:`offload_bundle`):

* ``"resident"``: every model's parameters sit in device memory from loading to the end (fastest; the device
  holds the sum of all weights: ~18 GiB in bfloat16 for the 1.3B release, 36 GiB in float32).
* ``"sequential"``: parameters sit in host memory (``pinned_host`` where the backend has it, so the copies are
  DMA transfers; else ``unpinned_host``; else numpy arrays). Each stage copies the model it needs onto the
  device, runs, and deletes the device copy, so device memory peaks at the largest stage, not at the sum. The
  shardings (single device or a mesh) are kept: only the memory kind changes.

:func:`staged` is the context manager the pipeline wraps each stage in; it accepts resident models too (then it
does nothing), so the pipeline has one code path. :class:`StageStats` times each stage and records the device's
memory (``memory_stats``: bytes in use at the end of the stage with its weights still resident, and the
process peak so far) and logs one line per stage.

    bundle = load_bundle("ckpt/gen3r", dtype="bfloat16", param_dtype="bfloat16", placement="sequential")
    with staged(bundle.text_encoder) as (te,):          # te: the same model, parameters on the device
      ...                                               # afterwards the device copy is deleted
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterable, Sequence

from flax import nnx
import jax
import numpy as np

from gen3r_jax.compat import from_flat_state, value_of
from gen3r_jax.errors import require
from gen3r_jax.nn.params import logical_axes
from gen3r_jax.parallel.rules import DEFAULT_RULES, spec_for


PLACEMENTS = ("resident", "sequential")
HOST_KINDS = ("pinned_host", "unpinned_host")
GiB = 2 ** 30


def check_placement(placement: str) -> None:
  require(placement in PLACEMENTS,
          f"placement must be one of {PLACEMENTS} (resident: all weights on the device; sequential: weights in "
          f"host memory, each model on the device only for its stage), got {placement!r}.")


def host_memory_kind(device=None) -> str | None:
  """The host memory space of ``device`` (``pinned_host`` preferred), or ``None`` when it has none."""
  device = device or jax.local_devices()[0]
  try:
    kinds = {m.kind for m in device.addressable_memories()}
  except Exception:  # pragma: no cover - backends without memory spaces
    return None
  return next((k for k in HOST_KINDS if k in kinds), None)


def _params(model) -> nnx.State:
  return nnx.state(model, nnx.Param)


def param_leaves(model) -> list:
  """The parameter arrays of ``model`` (jax arrays or numpy)."""
  return jax.tree.leaves(_params(model)) if model is not None else []


def param_bytes(model) -> int:
  return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in param_leaves(model)))


def _is_host(a) -> bool:
  if isinstance(a, np.ndarray):
    return True
  return isinstance(a, jax.Array) and getattr(a.sharding, "memory_kind", None) in HOST_KINDS


def on_host(model) -> bool:
  """True when every parameter of ``model`` lives in host memory (sequential placement)."""
  leaves = param_leaves(model)
  return bool(leaves) and all(_is_host(a) for a in leaves)


def mesh_of(model):
  """The mesh ``model``'s parameters are sharded over (``NamedSharding``), else ``None``."""
  for a in param_leaves(model):
    sh = getattr(a, "sharding", None)
    if isinstance(sh, jax.sharding.NamedSharding):
      return sh.mesh
  return None


def _device_sharding(a, mesh, rules, var):
  if isinstance(a, jax.Array):
    return a.sharding.with_memory_kind("device")
  if mesh is None:                                          # numpy fallback, one device
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.sharding.NamedSharding(mesh, spec_for(logical_axes(var), a.shape, mesh, rules))


def _map_params(model, fn, prefixes: Sequence[str] | None = None):
  """A new module with ``fn(path, variable)`` applied to the parameters (under ``prefixes`` only, if given)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  flat = []
  for path, var in nnx.to_flat_state(params):
    if prefixes is None or str(path[0]) in prefixes:
      var = var.replace(fn(path, var))
    flat.append((path, var))
  new = from_flat_state(flat)
  return nnx.merge(graphdef, new, rest)


def to_device(model, *, only: Sequence[str] | None = None, mesh=None, rules=None):
  """A copy of ``model`` with its host parameters (or those of the sub-modules named in ``only``) in device
  memory, on the same devices / shardings. Device-resident parameters are shared, not copied."""
  rules = rules or DEFAULT_RULES

  def put(_, var):
    a = value_of(var)
    return jax.device_put(a, _device_sharding(a, mesh, rules, var)) if _is_host(a) else a

  return _map_params(model, put, only)


def to_host(model, *, delete: bool = True):
  """A copy of ``model`` with its parameters in host memory (same shardings, host memory kind; numpy when the
  backend has no host memory space: those go back to one device, or to a mesh passed to :func:`staged`).
  ``delete``: free the device copies."""
  kind = host_memory_kind()
  old = [a for a in param_leaves(model) if isinstance(a, jax.Array) and not _is_host(a)]

  def put(_, var):
    a = value_of(var)
    if _is_host(a):
      return a
    return jax.device_put(a, a.sharding.with_memory_kind(kind)) if kind else np.asarray(a)

  out = _map_params(model, put)
  jax.block_until_ready(param_leaves(out))
  if delete:
    for a in old:
      a.delete()
  return out


def offload_bundle(bundle) -> None:
  """Move every model of ``bundle`` to host memory in place (sequential placement)."""
  for field in ("text_encoder", "clip", "transformer", "vae", "geo_adapter", "vggt"):
    model = getattr(bundle, field)
    if model is not None and not on_host(model):
      setattr(bundle, field, to_host(model))


def _delete_device_copies(models, keep: set[int]) -> None:
  for m in models:
    for a in param_leaves(m):
      if isinstance(a, jax.Array) and id(a) not in keep and not _is_host(a) and not a.is_deleted():
        a.delete()


@contextlib.contextmanager
def staged(*models, only: dict[int, Sequence[str]] | None = None, mesh=None):
  """Yield ``models`` with their parameters in device memory; afterwards delete the copies this made.

  Resident models are yielded unchanged (nothing is copied or deleted). ``only`` maps a position in ``models``
  to the sub-modules to place (e.g. ``{1: ("camera_head", "depth_head", "point_head")}``: VGGT's heads without
  its aggregator). ``None`` entries pass through.
  """
  only = only or {}
  staged_models, copies = [], []
  originals: set[int] = set()             # arrays the caller's models hold: never deleted here
  for i, m in enumerate(models):
    if m is None or not any(_is_host(a) for a in param_leaves(m)):
      staged_models.append(m)
      continue
    originals.update(id(a) for a in param_leaves(m))
    d = to_device(m, only=only.get(i), mesh=mesh if mesh is not None else mesh_of(m))
    staged_models.append(d)
    copies.append(d)
  try:
    yield tuple(staged_models)
  finally:
    if copies:
      _sync()
      _delete_device_copies(copies, originals)


def _sync() -> None:
  """Wait for all queued device work (the stage's outputs) so stage times and memory readings are exact."""
  jax.block_until_ready([a for a in jax.live_arrays() if not a.is_deleted()])


def memory_stats(devices: Iterable | None = None) -> dict | None:
  """``bytes_in_use`` / ``peak_bytes_in_use`` / ``bytes_limit``: the maximum over ``devices`` (default: the local
  ones) of ``Device.memory_stats()``; ``None`` where the backend reports nothing (CPU)."""
  out = None
  for d in devices or jax.local_devices():
    try:
      s = d.memory_stats()
    except Exception:  # pragma: no cover
      s = None
    if not s:
      continue
    out = out or {}
    for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit"):
      if k in s:
        out[k] = max(out.get(k, 0), int(s[k]))
  return out


def fmt_bytes(v) -> str:
  if v is None:
    return "-"
  return f"{v / GiB:.2f} GiB" if v >= GiB // 4 else f"{v / 2 ** 20:.1f} MiB"


# what each sampling stage does, for the line logged when it starts (a long stage is never silent)
STAGE_MESSAGES = {"text": "encoding the prompt (umT5)", "clip": "CLIP tokens of the first frame",
                  "cameras": "cameras (VGGT estimate for built-in trajectories, Plücker map, camera latents)",
                  "vae_encode": "encoding the control video (Wan VAE)", "denoise": "denoising (DiT)",
                  "vae_decode": "decoding the video (Wan VAE)",
                  "geometry_decode": "decoding depth, points and cameras (geometry adapter + VGGT heads)"}


class StageStats:
  """Per-stage wall time, weights placed, and device memory (see the module docstring).

  ``stats.stages[name]`` = ``{"seconds", "weights_bytes", "bytes_in_use", "peak_bytes_in_use",
  "bytes_in_use_after", "params_replaced"}`` (memory fields ``None`` on CPU). ``params_replaced`` counts the
  stage models' parameter arrays that were swapped for new ones during the stage: a jitted entry point that
  returns its parameters (``nnx.jit`` with graph updates) copies them, doubling the model's memory; 0 expected.
  ``probe(name, models)``, if given, is called at the end of each stage while its models are still on the
  device (tests inspect ``jax.live_arrays()`` there).
  """

  def __init__(self, log: Callable[[str], None] = lambda s: None,
               probe: Callable[[str, tuple], None] | None = None):
    self.log, self.probe = log, probe
    self.stages: dict[str, dict] = {}

  @contextlib.contextmanager
  def stage(self, name: str, *models, only: dict[int, Sequence[str]] | None = None, mesh=None):
    self.log(f"[sample] {name}: {STAGE_MESSAGES.get(name, name)} …")
    t0 = time.perf_counter()
    with staged(*models, only=only, mesh=mesh) as placed:
      weights = sum(param_bytes_on_device(m) for m in placed)
      start = [param_leaves(m) for m in placed]
      yield placed
      _sync()
      seconds = time.perf_counter() - t0
      during = memory_stats() or {}
      replaced = sum(a is not b for m, before in zip(placed, start) for a, b in zip(param_leaves(m), before))
      del start
      if self.probe is not None:
        self.probe(name, placed)
    after = memory_stats() or {}
    rec = dict(seconds=seconds, weights_bytes=weights, bytes_in_use=during.get("bytes_in_use"),
               peak_bytes_in_use=during.get("peak_bytes_in_use"), bytes_in_use_after=after.get("bytes_in_use"),
               params_replaced=replaced)
    self.stages[name] = rec
    mem = "" if rec["bytes_in_use"] is None else (f", in use {fmt_bytes(rec['bytes_in_use'])}, peak so far "
                                                   f"{fmt_bytes(rec['peak_bytes_in_use'])}")
    self.log(f"[sample] {name}: done in {seconds:.1f} s, weights on the device {fmt_bytes(weights)}{mem}")

  def summary(self) -> dict:
    peaks = [s["peak_bytes_in_use"] for s in self.stages.values() if s["peak_bytes_in_use"] is not None]
    return {"stages": dict(self.stages), "peak_bytes_in_use": max(peaks) if peaks else None,
            "device": str(jax.local_devices()[0].device_kind)}


def param_bytes_on_device(model) -> int:
  """Bytes of ``model``'s parameters held in device memory (host-resident ones not counted)."""
  return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in param_leaves(model)
                 if isinstance(a, jax.Array) and not _is_host(a)))


__all__ = ("PLACEMENTS", "check_placement", "host_memory_kind", "param_bytes", "param_bytes_on_device",
           "on_host", "mesh_of", "to_device", "to_host", "offload_bundle", "staged", "memory_stats", "StageStats")
