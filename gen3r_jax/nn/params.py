"""Parameter helpers: every parameter carries logical axis names.

Logical names (see ``gen3r_jax/parallel/rules.py``): ``embed``, ``mlp``, ``heads``, ``kv``, ``vocab``,
``conv_in``, ``conv_out``, ``layers``, ``norm`` and ``None`` for axes that are never sharded (activations use the
distinct ``act_*`` names; ``config.sharding.rules`` maps both to mesh axes).
The names are stored as variable metadata and read back with :func:`logical_axes`, so flax versions that call
the metadata ``out_sharding`` or ``sharding_names`` both work (:mod:`gen3r_jax.compat`).
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.compat import annotated_param, logical_axes  # logical_axes: re-exported (read by nn users)

Axes = tuple[str | None, ...]
Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def param(value: jax.Array, axes: Axes) -> nnx.Param:
  """Wrap ``value`` as an :class:`nnx.Param` annotated with logical ``axes`` (not placed eagerly)."""
  if len(axes) != value.ndim:
    raise ValueError(f"logical axes {axes} do not match parameter rank {value.ndim}")
  return annotated_param(value, axes)


def torch_uniform(fan_in: int) -> Initializer:
  """PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5))."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    # a flat draw, reshaped: bit-identical to the N-d draw, but XLA:CPU compiles N-d threefry very slowly (the
    # tiny stage-1 adapter's jitted random init: 51 s -> 20 s on 2 cores)
    return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)

  return init


def zeros_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.zeros(shape, dtype)


def ones_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.ones(shape, dtype)


_SKIP_INIT = threading.local()


@contextlib.contextmanager
def skip_init():
  """Inside this context :func:`make_param` creates zeros instead of drawing random values.

  Used when only the structure matters (abstract models for conversion, restore and host-side random init):
  tracing hundreds of random initialisers costs seconds to minutes on a small CPU, zeros cost nothing.
  """
  prev = getattr(_SKIP_INIT, "on", False)
  _SKIP_INIT.on = True
  try:
    yield
  finally:
    _SKIP_INIT.on = prev


def abstract_module(build: Callable[[], nnx.Module]) -> nnx.Module:
  """``nnx.eval_shape(build)`` without tracing the random initialisers (see :func:`skip_init`)."""
  with skip_init():
    return nnx.eval_shape(build)


def make_param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], axes: Axes,
               dtype=jnp.float32) -> nnx.Param:
  """Initialise a parameter of ``shape`` with ``init`` and annotate it with ``axes``."""
  if getattr(_SKIP_INIT, "on", False):
    return param(jnp.zeros(tuple(shape), dtype), axes)
  return param(init(rngs.params(), tuple(shape), dtype), axes)
