"""What every benchmark shares (never run in CI): device info, the timing helper, on-device random weights and
the analytic FLOP counter.

Timing (:func:`time_jitted`): the jitted function is lowered and compiled explicitly (``compile_s`` = trace +
lower + XLA compile, timed on its own), then called ``warmup`` times untimed and ``repeats`` (>= 5) times timed,
each call synchronised with ``block_until_ready``; rows report the median / min / max and the spread
``(max - min) / median``. Memory: ``peak_gib`` is the process-wide ``peak_bytes_in_use`` of
``device.memory_stats()`` after the timed calls (each benchmark runs in its own process under ``bench.run``, so
this is that benchmark's peak, its weights included; ``None`` on CPU); ``exec_gib`` is XLA's plan for the one
executable (arguments + outputs + temporaries - aliased), from ``compiled.memory_analysis()``.

FLOPs (:func:`count_flops`): 2 x the multiply-adds of every ``dot_general`` and ``conv_general_dilated`` in the
traced program (``jax.make_jaxpr`` on abstract inputs, nothing runs), scan bodies times their length, the larger
branch of a ``cond``; elementwise ops, norms, softmax, resampling and the RNG are not counted. Attention is
counted on an ``attention="xla"`` twin of the model (the fused cuDNN kernel hides its matmuls from the jaxpr),
so ``QK^T`` and ``PV`` are 4 L^2 D per layer, no causal discount. TFLOP/s = FLOPs / median time.

Random weights (:func:`device_random`): the scheme of :func:`gen3r_jax.models.init.random_params` (kernels
``U(+-1/sqrt(fan_in))``, norm gains ``1 + U(+-0.1)``, biases ``U(+-0.02)``, the rest uniform with std 0.02)
drawn by one jitted program with XLA's RngBitGenerator straight in the parameter dtype, with ``out_shardings``
on a mesh (:func:`gen3r_jax.models.init.init_on_device`): no full-size parameter passes through the host.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 tensor-core peaks by device kind (NVIDIA datasheets; the H200 SXM has the H100 SXM's arithmetic),
# matched as substrings of ``device_kind``, first match wins. MFU/HFU use the card the benchmark runs on.
BF16_DENSE_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("H200", 989.4, "H200 SXM dense bf16 (datasheet; the H100 SXM's rate)"),
    ("H100 PCIe", 756.0, "H100 PCIe dense bf16 (datasheet)"),
    ("H100", 989.4, "H100 SXM dense bf16 (datasheet)"),
    ("A100", 312.0, "A100 dense bf16 (datasheet)"),
)


def peak_bf16_tflops(device=None) -> tuple[float | None, str | None]:
  """``(dense bf16 TFLOP/s, source)`` of ``device`` (default: the first local one); ``(None, None)`` when unknown."""
  dev = device or jax.local_devices()[0]
  kind = str(getattr(dev, "device_kind", ""))
  for key, tflops, source in BF16_DENSE_TFLOPS:
    if key.lower() in kind.lower():
      return tflops, source
  return None, None
_GAINS = ("gamma", "scale", "weight")


# ---------------------------------------------------------------------------------------------------------------
# device / environment
# ---------------------------------------------------------------------------------------------------------------

def now_utc() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def gpu_driver() -> str | None:
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=10).stdout.strip()
    return out.splitlines()[0] if out else None
  except (OSError, subprocess.SubprocessError):
    return None


def device_info() -> dict[str, Any]:
  """Device name, platform, count, jax version, date, host and (GPU) driver. Initialises the JAX backend."""
  dev = jax.devices()[0]
  info = {"device": getattr(dev, "device_kind", str(dev)), "platform": dev.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__,
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
          "host": platform.node()}
  if dev.platform == "gpu":
    info["driver"] = gpu_driver() or "?"
  return info


def row_base(bench: str, *, dtype: str | None = None, **fields) -> dict[str, Any]:
  """The fields every row carries: bench name, device, jax version, date, dtype (+ the caller's shapes)."""
  dev = jax.local_devices()[0]
  out = {"bench": bench, "device": f"{dev.platform}:{getattr(dev, 'device_kind', '?')}", "jax": jax.__version__,
         "date": now_utc()}
  if dtype is not None:
    out["dtype"] = dtype
  out.update(fields)
  return out


def peak_memory_bytes() -> int | None:
  """Process-wide peak device memory (``None`` where the backend keeps no statistics, e.g. CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def bytes_in_use() -> int | None:
  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else int(stats.get("bytes_in_use", 0))


def gib(n) -> float | None:
  return None if n is None else n / 2 ** 30


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------

def stats(times: Sequence[float]) -> dict[str, float]:
  med = statistics.median(times)
  return {"median_s": med, "min_s": min(times), "max_s": max(times),
          "spread": (max(times) - min(times)) / med if med > 0 else 0.0, "repeats": len(times),
          "times_s": [float(t) for t in times]}


def exec_memory(compiled) -> dict[str, float | None]:
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    m = None
  if m is None:
    return {"exec_gib": None, "exec_temp_gib": None}
  get = lambda k: int(getattr(m, k, 0) or 0)  # noqa: E731
  total = (get("argument_size_in_bytes") + get("output_size_in_bytes") + get("temp_size_in_bytes")
           - get("alias_size_in_bytes"))
  return {"exec_gib": gib(total), "exec_temp_gib": gib(get("temp_size_in_bytes"))}


# ``python -m bench.profile`` sets this: the timed repeats (only they: not the init, compile or warm-up, whose
# kernels would crowd the trace) then run under ``jax.profiler.trace`` into this folder.
TRACE_ENV = "GEN3R_BENCH_TRACE_DIR"


def _timed(call: Callable[[], Any], repeats: int) -> list[float]:
  """``repeats`` timed calls, traced when :data:`TRACE_ENV` names a folder."""
  trace_dir = os.environ.get(TRACE_ENV)
  ctx = jax.profiler.trace(trace_dir, create_perfetto_trace=True) if trace_dir else contextlib.nullcontext()
  times = []
  with ctx:
    for _ in range(max(repeats, 1)):
      t = time.perf_counter()
      jax.block_until_ready(call())
      times.append(time.perf_counter() - t)
  return times


def time_jitted(fn, *args, warmup: int = 1, repeats: int = 5, flops: float | None = None,
                carry: bool = False) -> dict[str, Any]:
  """Compile ``fn`` (a ``jax.jit`` function) for ``args`` (timed alone), then time ``repeats`` calls.

  ``carry``: ``fn`` returns ``(new_first_arg, ...)`` and donates its first argument (a train step): each call
  gets the previous call's output as its first argument.

  Returns ``compile_s`` (trace + lower + compile), ``lower_s``, ``first_call_s``, median/min/max/spread,
  the per-call ``times_s``, ``peak_gib`` (process), ``exec_gib`` (XLA plan) and, with ``flops``, ``tflop`` and
  ``tflops`` (TFLOP/s at the median).
  """
  args = list(args)

  def call():
    out = compiled(*args)
    jax.block_until_ready(out)
    if carry:
      args[0] = out[0]

  t0 = time.perf_counter()
  lowered = fn.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  call()
  first = time.perf_counter() - t2
  for _ in range(max(warmup - 1, 0)):
    call()
  times = _timed(call, repeats)
  out = {"compile_s": t2 - t0, "lower_s": t1 - t0, "first_call_s": first, "warmup": max(warmup, 1), **stats(times),
         "peak_gib": gib(peak_memory_bytes()), **exec_memory(compiled)}
  if flops is not None:
    out["tflop"] = flops / 1e12
    out["tflops"] = flops / out["median_s"] / 1e12
  return out


def time_calls(call: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> dict[str, Any]:
  """Time an opaque callable (already compiled, or compiling on its first call: ``first_call_s``)."""
  t0 = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    jax.block_until_ready(call())
  times = _timed(call, repeats)
  return {"first_call_s": first, "warmup": max(warmup, 1), **stats(times), "peak_gib": gib(peak_memory_bytes())}


# ---------------------------------------------------------------------------------------------------------------
# analytic FLOPs
# ---------------------------------------------------------------------------------------------------------------

def _jaxprs(value):
  """The (Closed)Jaxprs inside an equation parameter value."""
  core = jax.extend.core if hasattr(jax, "extend") and hasattr(jax.extend, "core") else None
  closed = getattr(core, "ClosedJaxpr", None) if core else None
  plain = getattr(core, "Jaxpr", None) if core else None
  if closed is not None and isinstance(value, closed):
    return [value.jaxpr]
  if plain is not None and isinstance(value, plain):
    return [value]
  if hasattr(value, "jaxpr") and hasattr(value, "consts"):       # ClosedJaxpr of another jax version
    return [value.jaxpr]
  if hasattr(value, "eqns") and hasattr(value, "invars"):
    return [value]
  return []


def _eqn_flops(eqn) -> float:
  name = eqn.primitive.name
  if name == "dot_general":
    (lc, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    contract = math.prod(int(lhs.shape[d]) for d in lc)
    return 2.0 * math.prod(int(s) for s in eqn.outvars[0].aval.shape) * contract
  if name == "conv_general_dilated":
    rhs = eqn.invars[1].aval
    dn = eqn.params["dimension_numbers"]
    rhs_spec = dn.rhs_spec                               # (out feature, in feature, *spatial)
    k = math.prod(int(rhs.shape[d]) for d in rhs_spec[2:])
    cin = int(rhs.shape[rhs_spec[1]])                    # per feature group already
    return 2.0 * math.prod(int(s) for s in eqn.outvars[0].aval.shape) * k * cin
  total = 0.0
  if name == "scan":
    return float(eqn.params["length"]) * sum(_walk(j) for j in _jaxprs(eqn.params["jaxpr"]))
  if name == "cond":
    return max((_walk(j) for b in eqn.params["branches"] for j in _jaxprs(b)), default=0.0)
  for v in eqn.params.values():                          # pjit, remat, custom_vjp/jvp, shard_map, while (once)
    for j in (_jaxprs(v) if not isinstance(v, (tuple, list)) else [x for e in v for x in _jaxprs(e)]):
      total += _walk(j)
  return total


def _walk(jaxpr) -> float:
  return sum(_eqn_flops(e) for e in jaxpr.eqns)


def count_flops(fn: Callable, *args, **kwargs) -> float:
  """2 x multiply-adds of every matmul / conv in ``fn(*args)`` (see module docstring); ``args`` may be
  ``jax.ShapeDtypeStruct`` trees: nothing is computed."""
  closed = jax.make_jaxpr(fn)(*args, **kwargs)
  return _walk(closed.jaxpr)


def abstract_like(tree):
  """``ShapeDtypeStruct`` twin of a pytree of arrays (for tracing only)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


# ---------------------------------------------------------------------------------------------------------------
# random weights on device
# ---------------------------------------------------------------------------------------------------------------

_BUCKET = 1 << 28      # elements drawn by one RNG call (bounds the init's transient memory)


def _affine(u, name: str, shape, axes):
  """``u`` uniform in [-1, 1] -> the initial value of a parameter called ``name``."""
  if name == "kernel":
    dims = [d for d, a in zip(shape[:-1], axes[:-1]) if a != "layers"]
    return u * (1.0 / math.sqrt(max(math.prod(dims), 1)))
  if name in _GAINS:
    return 1.0 + 0.1 * u
  if name == "bias":
    return 0.02 * u
  return (0.02 * math.sqrt(3.0)) * u                    # std 0.02 (uniform, not normal: one RNG for all)


def device_random(model_cls, cfg, *, seed: int = 0, mesh=None, method: str = "auto"):
  """A ``model_cls(cfg)`` with random weights made on device (module docstring); with ``mesh`` every parameter
  lands on its shard (the project's logical-axis rules).

  The leaves are drawn in buckets of up to 2^28 elements, each one ``uniform`` call sliced into parameters, so
  the init program has one RNG per bucket. ``method="auto"`` uses the host instead on CPU
  (:func:`gen3r_jax.models.init.random_params`: XLA:CPU needs ~0.1 s per output to compile, and CPU runs are
  tiny smoke tests); ``"device"`` / ``"host"`` force one.
  """
  if method == "host" or (method == "auto" and jax.default_backend() == "cpu" and mesh is None):
    from gen3r_jax.models.init import random_params
    return random_params(model_cls, cfg, seed=seed)
  from flax import nnx

  from gen3r_jax.models.init import init_on_device
  from gen3r_jax.compat import from_flat_state, value_of
  from gen3r_jax.nn.params import abstract_module, logical_axes

  abstract = abstract_module(lambda: model_cls(cfg, rngs=nnx.Rngs(0)))
  flat = list(nnx.to_flat_state(nnx.split(abstract)[1]))
  leaves = []
  for path, var in flat:
    v = value_of(var)
    axes = logical_axes(var) or (None,) * len(v.shape)
    leaves.append((str(path[-1]), tuple(v.shape), axes, jnp.dtype(v.dtype)))
  buckets: list[list[int]] = []                           # leaf indices per (dtype-homogeneous) bucket
  size = 0
  for i, (_, shape, _, dtype) in enumerate(leaves):
    n = math.prod(shape)
    if not buckets or size + n > _BUCKET or leaves[buckets[-1][0]][3] != dtype:
      buckets.append([])
      size = 0
    buckets[-1].append(i)
    size += n

  def draw():
    key = jax.random.key(seed, impl="rbg")
    out = [None] * len(leaves)
    for b, idx in enumerate(buckets):
      dtype = leaves[idx[0]][3]
      total = sum(math.prod(leaves[i][1]) for i in idx)
      u = jax.random.uniform(jax.random.fold_in(key, b), (max(total, 1),), dtype, -1.0, 1.0)
      off = 0
      for i in idx:
        name, shape, axes, _ = leaves[i]
        n = math.prod(shape)
        out[i] = _affine(u[off:off + n].reshape(shape), name, shape, axes).astype(dtype)
        off += n
    return from_flat_state([(path, var.replace(v)) for (path, var), v in zip(flat, out)])

  return init_on_device(abstract, draw, mesh=mesh)


def random_split(model_cls, cfg, *, seed: int = 0) -> tuple[Any, Any, float]:
  """``(graphdef, state, init_s)`` of :func:`device_random`, synchronised (the init time is part of the row)."""
  from flax import nnx
  t0 = time.perf_counter()
  graphdef, state = nnx.split(device_random(model_cls, cfg, seed=seed))
  jax.block_until_ready(state)
  return graphdef, state, time.perf_counter() - t0


def param_count(state) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


def set_compilation_cache(path: str | None) -> None:
  """Persistent compilation cache in ``path`` (every executable cached, however fast it compiled)."""
  if not path:
    return
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
