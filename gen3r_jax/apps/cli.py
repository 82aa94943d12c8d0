"""Shared behaviour of the command-line tools in ``launch/``: a readable console (quiet library logs, progress
bars or lines), one-line errors, and the persistent XLA compilation cache.

Console: library chatter (absl-logging INFO from Orbax, grain, JAX; the ``os.fork()`` RuntimeWarning JAX raises
when ffmpeg is started for a video) stays off the console; with a log file (``launch/train.py`` writes
``<workdir>/train.log``) every INFO line goes there instead. ``--verbosity=0`` (absl) puts INFO back on the
console. Progress is drawn as bars on a terminal and as plain lines otherwise or with ``--progress=false`` /
``config.progress=False`` (:mod:`gen3r_jax.progress`).

The compilation cache is on by default for every tool run through :func:`run_tool` (and for library users after
one call to ``gen3r_jax.enable_compilation_cache()``): compiled programs are written to
``$GEN3R_JAX_CACHE`` (default ``~/.cache/gen3r_jax/xla``) and read back by the next process, so a second
``launch/sample.py`` run skips XLA compilation (and GPU autotuning). ``GEN3R_JAX_CACHE=off`` disables it; a cache
directory already configured through JAX (``JAX_COMPILATION_CACHE_DIR`` / ``jax_compilation_cache_dir``) is kept.
"""

from __future__ import annotations

import logging as pylogging
import os
import sys
from typing import Callable
import warnings

from absl import flags, logging
import jax

from gen3r_jax.compilation_cache import CACHE_ENV, default_cache_dir, enable_compilation_cache  # noqa: F401
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.progress import configure as configure_progress


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


def _verbosity_given() -> bool:
  try:
    return bool(flags.FLAGS["verbosity"].present)
  except KeyError:
    return False


def setup_console(*, progress: bool = True, log_file: str | None = None) -> None:
  """A readable console (module docstring): progress bars allowed or not; library logs quieted, or written to
  ``log_file`` (INFO and up) with only warnings and errors on the console."""
  configure_progress(bars=progress)
  # JAX warns at every fork of its (multithreaded) process; ffmpeg is started with fork + exec at once, which is safe
  warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
  if log_file is None:
    quiet_library_logs()
    return
  os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
  handler = pylogging.FileHandler(log_file)
  handler.setFormatter(logging.PythonFormatter())
  handler.setLevel(pylogging.DEBUG)
  pylogging.getLogger().addHandler(handler)
  if not _verbosity_given():
    logging.set_verbosity(logging.INFO)                       # INFO records are made (for the file) ...
    logging.get_absl_handler().setLevel(pylogging.WARNING)    # ... and only warnings reach the console


def run_tool(fn: Callable, *args, progress: bool = True, **kwargs) -> int:
  """Run a tool's library entry point: exit status 0, or 2 with a one-line ``error: ...`` for bad input.
  ``progress=False``: progress as plain lines even on a terminal.

  Before it, library logs are quieted and the persistent compilation cache is enabled (one stdout line says
  where; ``GEN3R_JAX_CACHE=off`` disables it).
  """
  setup_console(progress=progress)
  enable_compilation_cache(log=print)
  try:
    fn(*args, **kwargs)
  except (Gen3RInputError, FileNotFoundError) as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  return 0
