"""Shared behaviour of the command-line tools in ``launch/``: quiet library logs, one-line errors, and the
persistent XLA compilation cache.

The compilation cache is on by default for every tool run through :func:`run_tool` (and for library users after
one call to ``gen3r_jax.enable_compilation_cache()``): compiled programs are written to
``$GEN3R_JAX_CACHE`` (default ``~/.cache/gen3r_jax/xla``) and read back by the next process, so a second
``launch/sample.py`` run skips XLA compilation (and GPU autotuning). ``GEN3R_JAX_CACHE=off`` disables it; a cache
directory already configured through JAX (``JAX_COMPILATION_CACHE_DIR`` / ``jax_compilation_cache_dir``) is kept.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags, logging
import jax

from gen3r_jax.compilation_cache import CACHE_ENV, default_cache_dir, enable_compilation_cache  # noqa: F401
from gen3r_jax.errors import Gen3RInputError


def quiet_library_logs() -> None:
  """Show warnings and up from absl-logging libraries (Orbax, grain, JAX) unless ``--verbosity`` was given.

  The tools print their own progress lines; Orbax alone logs a dozen INFO lines per restored checkpoint.
  """
  try:
    given = flags.FLAGS["verbosity"].present
  except KeyError:
    given = False
  if not given:
    logging.set_verbosity(logging.WARNING)


def run_tool(fn: Callable, *args, compilation_cache: bool = True, **kwargs) -> int:
  """Run a tool's library entry point: exit status 0, or 2 with a one-line ``error: ...`` for bad input.

  Before it, library logs are quieted and (unless ``compilation_cache=False``: tools that compile nothing, such
  as the viewer) the persistent compilation cache is enabled (one stdout line says where; ``GEN3R_JAX_CACHE=off``
  disables it).
  """
  quiet_library_logs()
  if compilation_cache:
    enable_compilation_cache(log=print)
  try:
    fn(*args, **kwargs)
  except (Gen3RInputError, FileNotFoundError) as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  return 0
