"""``jax.distributed.initialize`` with the coordination service's timeouts passed where this jax has them.

A multi-process run is aborted by the coordination service when a process misses its heartbeats for
``heartbeat_timeout_s`` (jax's default: 100 s), when the processes do not all connect within
``initialization_timeout_s`` (300 s), or when one waits more than ``shutdown_timeout_s`` (300 s) for the others at
exit. A slow or overloaded host (a 2-core CI box running other tests) can exceed the defaults, so
``launch/train.py`` exposes them as flags. The keyword names differ between jax versions or may be absent; only
those that :func:`jax.distributed.initialize` accepts are passed (jax 0.10.2 and 0.11.x both take
``initialization_timeout``, ``heartbeat_timeout_seconds`` and ``shutdown_timeout_seconds``), and a missing one is
a warning that jax's default applies.
"""

from __future__ import annotations

import inspect
from typing import Callable

import jax
from absl import logging

# our name -> jax.distributed.initialize's keyword
TIMEOUT_KEYWORDS = {"initialization_timeout_s": "initialization_timeout",
                    "heartbeat_timeout_s": "heartbeat_timeout_seconds",
                    "shutdown_timeout_s": "shutdown_timeout_seconds"}


def timeout_kwargs(fn: Callable, **timeouts: int | None) -> dict[str, int]:
  """The keyword arguments of ``fn`` for ``timeouts`` (our names, seconds; ``None`` = jax's default) that ``fn``
  accepts; the others are logged as unsupported."""
  unknown = sorted(set(timeouts) - set(TIMEOUT_KEYWORDS))
  if unknown:
    raise TypeError(f"unknown timeouts {unknown}; expected {sorted(TIMEOUT_KEYWORDS)}")
  params = inspect.signature(fn).parameters
  out, missing = {}, []
  for ours, value in timeouts.items():
    if value is None:
      continue
    theirs = TIMEOUT_KEYWORDS[ours]
    if theirs in params:
      out[theirs] = int(value)
    else:
      missing.append(theirs)
  if missing:
    logging.warning("jax %s: jax.distributed.initialize takes no %s; its default applies", jax.__version__,
                    ", ".join(missing))
  return out


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, initialization_timeout_s: int | None = None,
               heartbeat_timeout_s: int | None = None, shutdown_timeout_s: int | None = None,
               initialize_fn: Callable | None = None) -> dict[str, int]:
  """Call ``jax.distributed.initialize`` (or ``initialize_fn``) with the given address / counts (``None``s: the
  cluster is auto-detected) and the timeouts this jax supports; returns the timeout keywords passed."""
  fn = initialize_fn or jax.distributed.initialize
  kwargs = timeout_kwargs(fn, initialization_timeout_s=initialization_timeout_s,
                          heartbeat_timeout_s=heartbeat_timeout_s, shutdown_timeout_s=shutdown_timeout_s)
  where = {k: v for k, v in dict(coordinator_address=coordinator_address, num_processes=num_processes,
                                 process_id=process_id).items() if v is not None}
  fn(**where, **kwargs)
  return kwargs
