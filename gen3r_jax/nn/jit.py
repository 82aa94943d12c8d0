"""``module_jit``: ``jax.jit`` for functions that only *read* their NNX modules, with XLA compiler options.

    @module_jit(static_argnames=("chunked",), compiler_options=FAST_COMPILE)
    def decode(model, z, chunked):
      return model.decode_raw(z, chunked=chunked)

Every ``nnx.Module`` passed positionally is split into its graph definition (static) and its state (traced
arrays, sharding kept) and merged again inside the trace, so the compiled function neither copies nor returns
parameters (what ``nnx.jit(graph_updates=False)`` does). Module mutations inside are not written back. Unlike
``nnx.jit``, this takes ``jax.jit``'s ``compiler_options``: :data:`FAST_COMPILE` turns off XLA's Triton GEMM
fusions, whose autotuner compiles ~1,000 candidate kernels per VGGT program. Measured on one H100 (jax 0.11.2,
2026-11-26, ``python -m bench.compile_probe``): the sampler's VGGT camera estimate compiles in 5.6 s instead of
25.9 s and the 49-frame VGGT heads in 6.2 s instead of 25.0 s, and the VGGT forward runs 1.5 % slower (2.168 vs
2.137 s); the DiT, 2.3 % slower without them, keeps them. The ``xla_gpu_*`` options are ignored on CPU and TPU.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import jax
from flax import nnx

FAST_COMPILE: dict[str, Any] = {"xla_gpu_enable_triton_gemm": False}


def module_jit(fun: Callable | None = None, *, static_argnames: Iterable[str] = (),
               compiler_options: dict[str, Any] | None = None):
  """Decorator (module docstring). Keyword arguments named in ``static_argnames`` are static (hashable); other
  keyword arguments are traced. The wrapper has ``.lower(*args, **kwargs)`` like a jitted function."""
  if fun is None:
    return functools.partial(module_jit, static_argnames=static_argnames, compiler_options=compiler_options)
  static_names = frozenset(static_argnames)

  def pure(static, args, kwargs):
    defs, static_kw = static
    args = [a if d is None else nnx.merge(d, a) for d, a in zip(defs, args)]
    return fun(*args, **kwargs, **dict(static_kw))

  pure.__name__ = pure.__qualname__ = getattr(fun, "__name__", "module_jit")  # compile logs and profiles
  pure = jax.jit(pure, static_argnums=(0,), compiler_options=compiler_options)

  def split(args, kwargs):
    defs, flat = [], []
    for a in args:
      if isinstance(a, nnx.Module):
        graphdef, state = nnx.split(a)
        defs.append(graphdef)
        flat.append(state)
      else:
        defs.append(None)
        flat.append(a)
    static_kw = tuple(sorted((k, v) for k, v in kwargs.items() if k in static_names))
    traced_kw = {k: v for k, v in kwargs.items() if k not in static_names}
    return (tuple(defs), static_kw), tuple(flat), traced_kw

  @functools.wraps(fun)
  def call(*args, **kwargs):
    return pure(*split(args, kwargs))

  call.lower = lambda *args, **kwargs: pure.lower(*split(args, kwargs))
  return call


__all__ = ("FAST_COMPILE", "module_jit")
