"""Config fields renamed to the one vocabulary, and the check that refuses the old names.

A model's sub-dict uses its config dataclass's field names (``config.model.dit.remat`` is
``WanDiTConfig.remat``) and the sampler's options use :class:`gen3r_jax.sampling.pipeline.SampleOptions`' names,
so configs reach the code with no renaming. Scripts written for the old names get a one-line error naming the new
one (exit status 2) instead of a traceback or a silently ignored setting: ``launch/sample.py`` and
``launch/train.py`` call :func:`exit_on_renamed` on the command line before it is parsed, and
:func:`check_config` on the loaded config (a config file still setting an old field).
"""

from __future__ import annotations

import re
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


def parse_flags(argv: Sequence[str], flag: str = "config") -> list[str]:
  """absl ``flags_parser`` for ``app.run``: ``app.parse_flags_with_usage``, with a ``--<flag>.<path>=value`` whose
  path the config lacks (a misspelt key, or a model field its sub-dict does not set) printed as one ``error: ...``
  line naming the dict form that works, exit status 2 (ml_collections raises a traceback)."""
  from absl import app
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    print(f"error: {missing_field_message(argv, e, flag)}", file=sys.stderr)
    sys.exit(2)


def _flag_values(argv: Sequence[str], prefix: str):
  """``(name, value)`` of each ``--<prefix>name=value`` / ``--<prefix>name value`` in ``argv``."""
  for i, arg in enumerate(argv):
    if arg.startswith(prefix):
      name, eq, value = arg[len(prefix):].partition("=")
      yield name, value if eq else (argv[i + 1] if i + 1 < len(argv) else "")


def missing_field_message(argv: Sequence[str], error: BaseException, flag: str = "config") -> str:
  """The one-line error for the ``--<flag>.<path>`` override that ``error`` (the missing key ml_collections raised)
  came from: the sub-dict that lacks the key, and the whole-sub-dict form with its current fields that sets it."""
  text = str(error.args[0] if error.args else error)
  key = (re.search(r"[A-Za-z_]\w*", text) or re.match("", "")).group(0)
  hint = re.search(r'Did you mean "(\w+)"', text)
  hint = f" (did you mean {hint.group(1)!r}?)" if hint else ""
  for path, value in _flag_values(argv, f"--{flag}."):
    parts = path.split(".")
    if key not in parts:
      continue
    parent = ".".join(parts[:parts.index(key)])
    if not parent or hint:
      return f"--{flag}.{path}: config{'.' * bool(parent)}{parent} has no field {key!r}{hint}; check the spelling."
    try:   # the sub-dict's current fields, so that the suggested dict keeps them
      from absl import flags
      config_arg = next(v for n, v in _flag_values(argv, f"--{flag}") if n in ("", "="))
      node = flags.FLAGS[flag].parser.parse(config_arg.lstrip("="))
      for part in parent.split("."):
        node = node[part]
      fields = {k: node[k] for k in node.keys()}
    except Exception:   # noqa: BLE001  (only the suggestion's detail; the message stands without it)
      fields = {}
    try:
      import ast
      fields[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      fields[key] = value
    form = "{" + ", ".join(f"'{k}': {v!r}" for k, v in fields.items()) + "}"
    return (f"--{flag}.{path}: config.{parent} has no field {key!r} (a sub-dict holds only the fields its config "
            f"sets: check the spelling); set a field it lacks by passing the whole sub-dict, which replaces it: "
            f"--{flag}.{parent}=\"{form}\"")
  return f"a --{flag}.* override names a field the config does not have ({key!r}); check the spelling."
