"""Config fields renamed to the one vocabulary, and the check that refuses the old names.

A model's sub-dict uses its config dataclass's field names (``config.model.dit.remat`` is
``WanDiTConfig.remat``) and the sampler's options use :class:`gen3r_jax.sampling.pipeline.SampleOptions`' names,
so configs reach the code with no renaming. Scripts written for the old names get a one-line error naming the new
one (exit status 2) instead of a traceback or a silently ignored setting: ``launch/sample.py`` and
``launch/train.py`` call :func:`exit_on_renamed` on the command line before it is parsed, and
:func:`check_config` on the loaded config (a config file still setting an old field).
"""

from __future__ import annotations

import sys
from typing import Mapping, Sequence

# launch/sample.py (configs/sample.py, configs/demo_tiny.py): old -> SampleOptions field
SAMPLE: dict[str, str] = {
    "steps": "num_steps",
    "trajectory": "cameras",
    "guidance": "guidance_scale",
    "resolution": "size",
}

# launch/calibrate_cache.py (absl flags, same vocabulary as the sampler): old -> SampleOptions field
CALIBRATE: dict[str, str] = {"trajectory": "cameras", "steps": "num_steps", "guidance": "guidance_scale"}

# launch/train.py (configs/base.py and the files built on it): old -> the model dataclass's field in its sub-dict
TRAIN: dict[str, str] = {
    "model.dit_remat": "model.dit.remat",
    "model.attention": "model.dit.attention",
    "model.remat": "model.vggt.remat",
    "model.token_grid": "model.adapter.token_grid",
}


def renamed_flag(argv: Sequence[str], renamed: Mapping[str, str], flag: str = "config") -> str | None:
  """The one-line error for the first ``--<flag>.<old name>[=value]`` in ``argv`` (``flag=""``: plain
  ``--<old name>``), else ``None``."""
  prefix = f"--{flag}." if flag else "--"
  for arg in argv:
    name = arg[len(prefix):].split("=", 1)[0] if arg.startswith(prefix) else None
    if name in renamed:
      return (f"{prefix}{name} was renamed to {prefix}{renamed[name]} (one config vocabulary, CONTRIBUTING.md); "
              f"pass {prefix}{renamed[name]}=... instead.")
  return None


def check_config(config, renamed: Mapping[str, str]) -> str | None:
  """The one-line error for the first old field still set in a loaded ``config``, else ``None``."""
  for old, new in renamed.items():
    node = config
    for part in old.split("."):
      node = node.get(part) if hasattr(node, "get") else None
      if node is None:
        break
    else:
      return (f"config field {old!r} was renamed to {new!r} (one config vocabulary, CONTRIBUTING.md); set "
              f"{new} instead.")
  return None


def exit_on_renamed(argv: Sequence[str], renamed: Mapping[str, str], config=None, flag: str = "config") -> None:
  """Print ``error: ...`` and exit with status 2 when ``argv`` (or ``config``) uses a renamed field."""
  msg = renamed_flag(argv, renamed, flag) or (check_config(config, renamed) if config is not None else None)
  if msg:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)
