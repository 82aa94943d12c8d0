"""Logging defaults for the command-line tools."""

from __future__ import annotations


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
