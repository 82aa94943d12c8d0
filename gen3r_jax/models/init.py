"""Random weights for any gen3r_jax model (demos, tests, benchmarks, training from scratch).

* :func:`sharded_init`: the model's own initialisers in one jitted program whose outputs land straight on their
  shards (``mesh``) or on the default device; no parameter passes through the host.
* :func:`init_on_device`: the same placement for any jitted draw of an abstract model's state (what
  :func:`sharded_init` and ``bench.common.device_random`` share).
* :func:`random_params`: numpy draws on the host. NNX's jitted init of the big models compiles for minutes on a
  small CPU; this fills an abstract model instead: kernels ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's
  default, fan-in ignoring a stacked ``layers`` axis), norm gains ``1 + U(-0.1, 0.1)``, biases
  ``U(-0.02, 0.02)``, anything else ``N(0, 0.02)``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.compat import from_flat_state, value_of
from gen3r_jax.nn.params import abstract_module, logical_axes
from gen3r_jax.parallel.rules import DEFAULT_RULES, state_shardings

_GAINS = ("gamma", "scale", "weight")


def init_on_device(abstract: nnx.Module, draw: Callable[[], nnx.State], *, mesh=None,
                   rules=DEFAULT_RULES) -> nnx.Module:
  """``abstract`` (a model of ``ShapeDtypeStruct`` parameters) filled by one jitted ``draw()``, which returns its
  state; with ``mesh`` every value is written straight onto its shard (logical axes through ``rules``)."""
  graphdef, state = nnx.split(abstract)
  shardings = state_shardings(state, mesh, rules) if mesh is not None else None
  return nnx.merge(graphdef, jax.jit(draw, out_shardings=shardings)())


def sharded_init(build: Callable[[nnx.Rngs], nnx.Module], *, seed: int = 0, mesh=None, rules=DEFAULT_RULES,
                 rng_impl: str | None = None) -> nnx.Module:
  """``build(nnx.Rngs(seed))`` with its own random initialisers, run as one jitted init (:func:`init_on_device`).

  ``rng_impl="rbg"`` draws with XLA's RngBitGenerator, which compiles much faster than the default threefry
  (benchmarks and tests); the default keeps ``nnx.Rngs(seed)``.
  """
  def draw():
    key = jax.random.key(seed, impl=rng_impl) if rng_impl else seed
    return nnx.split(build(nnx.Rngs(key)))[1]

  return init_on_device(abstract_module(lambda: build(nnx.Rngs(0))), draw, mesh=mesh, rules=rules)


def random_params(model_cls, cfg, *, seed: int = 0) -> nnx.Module:
  rng = np.random.default_rng(seed)
  graphdef, state = nnx.split(abstract_module(lambda: model_cls(cfg, rngs=nnx.Rngs(0))))
  values = []
  for path, var in nnx.to_flat_state(state):
    v = value_of(var)
    shape, name = tuple(v.shape), str(path[-1])
    axes = logical_axes(var) or (None,) * len(shape)
    if name == "kernel":
      dims = [d for d, a in zip(shape[:-1], axes[:-1]) if a != "layers"]
      bound = 1.0 / np.sqrt(max(int(np.prod(dims)), 1))
      x = rng.uniform(-bound, bound, shape)
    elif name in _GAINS:
      x = 1.0 + rng.uniform(-0.1, 0.1, shape)
    elif name == "bias":
      x = rng.uniform(-0.02, 0.02, shape)
    else:
      x = rng.normal(0.0, 0.02, shape)
    values.append((tuple(path), jnp.asarray(x, v.dtype)))
  model = nnx.merge(graphdef, state)
  nnx.update(model, from_flat_state(values))
  return model
