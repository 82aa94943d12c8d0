"""Train state created directly sharded.

The trainable module is built abstractly (``nnx.eval_shape``); its parameter shardings come from
:func:`gen3r_jax.parallel.rules.state_shardings` (logical axes -> mesh), and one jitted init with
``out_shardings`` writes every parameter straight onto its shard. Optimiser state (``tx.init``) and the optional
EMA copy are placed the same way (moments follow their parameter's sharding; counters are replicated).

The state is a plain pytree ``{"step", "params", "opt_state", "guard"[, "ema"]}`` with ``params`` a nested pure
dict (``to_pure_dict``), so Orbax saves it as is and :func:`merge_params` turns it back into the module.
``guard`` holds the NaN guard's replicated int32 counters (:func:`new_guard`): updates skipped so far, the current
run of consecutive non-finite steps, and the step at which the run must stop (-1: none). The checkpoint keeps the
first two as JSON beside the state (:mod:`gen3r_jax.training.checkpointing`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gen3r_jax.compat import to_pure_dict
from gen3r_jax.parallel.rules import DEFAULT_RULES, state_shardings


@dataclasses.dataclass
class StateSpec:
  """What the trainer needs to rebuild the module from a state and to place states on the mesh."""
  graphdef: Any
  abstract_params: Any          # nnx.State of ShapeDtypeStruct-valued Params (for replace_by_pure_dict)
  shardings: dict               # same tree as the train state, NamedSharding leaves
  abstract: dict                # same tree as the train state, ShapeDtypeStruct leaves (with shardings)


def merge_params(spec: StateSpec, params: dict) -> nnx.Module:
  """The trainable module with ``params`` (a pure dict) as its parameters (works under tracing)."""
  state = jax.tree.map(lambda x: x, spec.abstract_params)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(spec.graphdef, state)


GUARD_KEYS = ("skipped", "consecutive", "stop_at")


def new_guard(skipped: int = 0, consecutive: int = 0) -> dict:
  """The NaN guard's counters: ``skipped`` updates dropped so far, ``consecutive`` non-finite steps in a row,
  ``stop_at`` the step at which the host must stop (-1 = none)."""
  return {"skipped": jnp.asarray(skipped, jnp.int32), "consecutive": jnp.asarray(consecutive, jnp.int32),
          "stop_at": jnp.asarray(-1, jnp.int32)}


def _init_fn(build, tx, seed: int, ema: bool):
  """``init(params=None) -> state``: the random init of ``build`` (or ``params``) in float32 + optimiser state."""
  def init(params=None):
    if params is None:
      params = to_pure_dict(nnx.split(build(nnx.Rngs(seed)))[1])
    params = jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                          params)
    st = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params), "guard": new_guard()}
    if ema:
      st["ema"] = jax.tree.map(jnp.copy, params)
    return st
  return init


def train_state_spec(build: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation, *, seed: int,
                     mesh: Mesh, rules=DEFAULT_RULES, ema: bool = False) -> StateSpec:
  """The :class:`StateSpec` of :func:`create_train_state` without creating the state: nothing is allocated or
  compiled (``spec.abstract`` is what a checkpoint restores into)."""
  abstract_module = nnx.eval_shape(lambda: build(nnx.Rngs(seed)))
  graphdef, abs_params = nnx.split(abstract_module)
  param_sh = to_pure_dict(state_shardings(abs_params, mesh, rules))
  rep = NamedSharding(mesh, P())
  abs_opt = jax.eval_shape(tx.init, to_pure_dict(abs_params))
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abs_opt, param_sh,
                                 transform_non_params=lambda _: rep)
  shardings = {"step": rep, "params": param_sh, "opt_state": opt_sh, "guard": {k: rep for k in GUARD_KEYS}}
  if ema:
    shardings["ema"] = param_sh
  shapes = jax.eval_shape(_init_fn(build, tx, seed, ema))
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  return StateSpec(graphdef, abs_params, shardings, abstract)


def create_train_state(build: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation, *,
                       seed: int, mesh: Mesh, rules=DEFAULT_RULES, ema: bool = False,
                       init_params: Callable[[dict, dict], dict] | None = None) -> tuple[dict, StateSpec]:
  """``(state, spec)``: a sharded train state for the module ``build(rngs)`` (only ``nnx.Param`` trains).

  Nothing full-size is ever materialised on one device: shapes come from ``nnx.eval_shape`` and values from
  jitted inits with ``out_shardings``. ``init_params(abstract, shardings)`` (pure dicts) replaces the random
  init: it returns the starting parameters already on their shards (a pretrained checkpoint).
  """
  spec = train_state_spec(build, tx, seed=seed, mesh=mesh, rules=rules, ema=ema)
  init = jax.jit(_init_fn(build, tx, seed, ema), out_shardings=spec.shardings)
  if init_params is None:
    return init(), spec
  return init(init_params(to_pure_dict(spec.abstract_params), spec.shardings["params"])), spec
