"""Shared behaviour of the command-line tools in ``launch/``: quiet library logs, one-line errors."""

from __future__ import annotations

import sys
from typing import Callable


def quiet_library_logs() -> None:
  """Show warnings and up from absl-logging libraries (Orbax, grain, JAX) unless ``--verbosity`` was given.

  The tools print their own progress lines; Orbax alone logs a dozen INFO lines per restored checkpoint.
  """
  from absl import flags, logging
  try:
    given = flags.FLAGS["verbosity"].present
  except KeyError:
    given = False
  if not given:
    logging.set_verbosity(logging.WARNING)


def run_tool(fn: Callable, *args, **kwargs) -> int:
  """Run a tool's library entry point: exit status 0, or 2 with a one-line ``error: ...`` for bad input."""
  from gen3r_jax.errors import Gen3RInputError
  quiet_library_logs()
  try:
    fn(*args, **kwargs)
  except (Gen3RInputError, FileNotFoundError) as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  return 0
