"""Timing utilities shared by the benchmark scripts (never run in CI).

Each benchmark returns a dict row; :func:`bench.run.main` prints them as a table and writes JSON with the device,
driver, jax version and date. Times: compile time of the first call, then the median / min / max of ``repeats``
timed calls (each synchronised with ``block_until_ready``), after ``warmup`` untimed calls.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import subprocess
import time
from typing import Any, Callable

import jax


def device_info() -> dict[str, Any]:
  dev = jax.devices()[0]
  info = {"device": getattr(dev, "device_kind", str(dev)), "platform": dev.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__,
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
          "host": platform.node()}
  if dev.platform == "gpu":
    try:
      out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
      info["driver"] = out.splitlines()[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
      info["driver"] = "?"
  return info


def peak_memory_gib() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**30


def time_fn(fn: Callable[..., Any], *args, warmup: int = 2, repeats: int = 5) -> dict[str, float]:
  """Compile + time ``fn(*args)``; ``fn`` should be jitted. Returns seconds."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return {"compile_s": compile_s, "median_s": statistics.median(times), "min_s": min(times),
          "max_s": max(times), "repeats": repeats}
