"""Orbax checkpoints of converted models: ``<dir>/params`` (Orbax), ``<dir>/config.json`` (model config),
``<dir>/conversion_report.json`` (written by the converter).

Loading builds the model abstractly (``nnx.eval_shape``), derives each parameter's sharding from its logical
axes and restores every array straight onto its shard: no random full-size weights are ever materialised.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Mapping

from flax import nnx
import jax
from jax.sharding import Mesh, SingleDeviceSharding
import numpy as np
import orbax.checkpoint as ocp

from gen3r_jax.atomic import atomic_path, partial_path, refuse_partial, swap_in
from gen3r_jax.compat import to_pure_dict, value_of
from gen3r_jax.nn.params import abstract_module
from gen3r_jax.parallel.rules import DEFAULT_RULES, state_shardings


PARAMS_DIR = "params"
CONFIG_FILE = "config.json"
REPORT_FILE = "conversion_report.json"

Path = tuple[str | int, ...]  # an NNX state path, as gen3r_jax.convert.table.Path


def _nested(flat: Mapping[Path, Any]) -> dict:
  out: dict = {}
  for path, v in flat.items():
    d = out
    for p in path[:-1]:
      d = d.setdefault(str(p), {})
    d[str(path[-1])] = v
  return out


def save_params(directory: str, params: Mapping[Path, np.ndarray] | nnx.State, *,
                config: dict | None = None, overwrite: bool = False) -> str:
  """Write parameters (flat ``{path: array}`` or an ``nnx.State``) and the config to ``directory``."""
  directory = os.path.abspath(os.fspath(directory))
  if isinstance(params, nnx.State):
    params = {tuple(p): (value_of(v))
              for p, v in nnx.to_flat_state(params)}
  os.makedirs(directory, exist_ok=True)
  target = os.path.join(directory, PARAMS_DIR)
  if os.path.exists(target) and not overwrite:
    raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
  # the new parameters are written beside the old ones and swapped in once complete (never delete first)
  staging = partial_path(target)
  if os.path.lexists(staging):
    shutil.rmtree(staging)
  try:
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(staging, _nested(params))
    ckptr.wait_until_finished()
    swap_in(staging, target)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if config is not None:
    with atomic_path(os.path.join(directory, CONFIG_FILE)) as tmp, open(tmp, "w") as f:
      json.dump(config, f, indent=1)
  return directory


def verify_params(directory: str, expected: Mapping[Path, tuple[int, ...]]) -> None:
  """Check that ``directory/params`` holds exactly the parameters ``expected`` (path -> shape), from the Orbax
  metadata (no array is read). Raises ``OSError`` naming the first difference (a write that did not complete)."""
  meta = ocp.StandardCheckpointer().metadata(os.path.join(os.fspath(directory), PARAMS_DIR))
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  found: dict[tuple, tuple] = {}

  def walk(node, prefix):
    if isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, prefix + (str(k),))
    else:
      found[prefix] = tuple(getattr(node, "shape", ()))

  walk(tree, ())
  want = {tuple(str(p) for p in path): tuple(shape) for path, shape in expected.items()}
  if found != want:
    diff = sorted(set(found) ^ set(want)) or sorted(k for k in want if found.get(k) != want[k])
    raise OSError(f"{directory}: the written parameters do not match the converted ones (first difference: "
                  f"{'.'.join(diff[0]) if diff else '?'}); the write did not complete")


def read_config(directory: str) -> dict:
  refuse_partial(directory)
  path = os.path.join(os.fspath(directory), CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {directory} a gen3r_jax checkpoint written by "
                            "launch/convert.py?")
  with open(path) as f:
    return json.load(f)


def restore_model(directory: str, build: Callable[[], nnx.Module], *, mesh: Mesh | None = None,
                  rules=DEFAULT_RULES, memory_kind: str | None = None) -> nnx.Module:
  """Restore a model built by ``build`` (called under ``nnx.eval_shape``) from ``directory/params``.

  ``memory_kind`` (e.g. ``"pinned_host"``) restores into that memory space of the same devices instead of device
  memory (host-resident weights for sequential placement, ``gen3r_jax.sampling.placement``)."""
  directory = os.path.abspath(os.fspath(directory))
  abstract = abstract_module(build)
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  if len(nnx.to_flat_state(rest)):
    raise ValueError("models restored from checkpoints must hold only nnx.Param state")
  if mesh is not None:
    shardings = state_shardings(params, mesh, rules)
  else:
    dev = jax.devices()[0]
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(dev), params,
                             is_leaf=lambda x: isinstance(x, nnx.Variable))
  if memory_kind is not None:
    shardings = jax.tree.map(lambda s: s.with_memory_kind(memory_kind), shardings)

  def to_target(var, sh):
    v = value_of(var)
    return jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sh)

  target = jax.tree.map(to_target, params, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))
  target = _stringify(to_pure_dict(target))
  restored = ocp.StandardCheckpointer().restore(os.path.join(directory, PARAMS_DIR), target)
  nnx.replace_by_pure_dict(params, _intify(restored, params))
  return nnx.merge(graphdef, params, rest)


def _stringify(d):
  if isinstance(d, dict):
    return {str(k): _stringify(v) for k, v in d.items()}
  return d


def _intify(d, like):
  """Orbax returns string keys; nnx states of lists use ints."""
  pure = to_pure_dict(like)

  def rec(src, ref):
    if isinstance(ref, dict):
      return {k: rec(src[str(k)], v) for k, v in ref.items()}
    return src

  return rec(d, pure)


class CheckpointMixin:
  """``Model.from_checkpoint(path, mesh=None)`` for NNX models with a ``Config`` class attribute."""

  Config: Any = None

  @classmethod
  def from_checkpoint(cls, directory: str, *, mesh: Mesh | None = None, rules=DEFAULT_RULES,
                      config=None, memory_kind: str | None = None, **overrides):
    """Load a converted checkpoint. ``overrides`` replace config fields (e.g. ``dtype="bfloat16"``);
    ``memory_kind`` as in :func:`restore_model`."""
    cfg = config if config is not None else cls.Config.from_dict(read_config(directory))
    if overrides:
      cfg = cfg.replace(**overrides)
    return restore_model(directory, lambda: cls(cfg, rngs=nnx.Rngs(0)), mesh=mesh, rules=rules,
                         memory_kind=memory_kind)

  def save_checkpoint(self, directory: str, *, overwrite: bool = False) -> str:
    return save_params(directory, nnx.state(self, nnx.Param), config=self.cfg.to_dict(),
                       overwrite=overwrite)
