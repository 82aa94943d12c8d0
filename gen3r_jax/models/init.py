"""Random weights drawn on the host for any gen3r_jax model (demos, tests, benchmarks).

NNX's jitted init of the big models compiles for minutes on a small CPU; this fills an abstract model with numpy
draws instead: kernels ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's default, fan-in ignoring a stacked
``layers`` axis), norm gains ``1 + U(-0.1, 0.1)``, biases ``U(-0.02, 0.02)``, anything else ``N(0, 0.02)``.
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.nn.params import abstract_module, logical_axes

_GAINS = ("gamma", "scale", "weight")


def random_params(model_cls, cfg, *, seed: int = 0) -> nnx.Module:
  rng = np.random.default_rng(seed)
  graphdef, state = nnx.split(abstract_module(lambda: model_cls(cfg, rngs=nnx.Rngs(0))))
  values = []
  for path, var in nnx.to_flat_state(state):
    v = var.get_value() if hasattr(var, "get_value") else var.value
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
  nnx.update(model, nnx.from_flat_state(values) if hasattr(nnx, "from_flat_state")
             else nnx.State.from_flat_path(values))
  return model
