"""Convert released PyTorch weights to gen3r_jax Orbax checkpoints.

A whole Gen3R checkpoint (the official directory with model_index.json):
    python launch/convert.py --source <Gen3R checkpoint dir> --out ckpt/gen3r

From the Hugging Face hub (``pip install 'gen3r-jax[hub]'``; converted once into ``$GEN3R_HUB_CACHE``, default
``~/.cache/gen3r_jax/hub/<owner>--<name>@<commit>``, and reused by the next call, the sampler and the app):
    python launch/convert.py --source hf:JaceyH919/Gen3R[@revision] [--out ckpt/gen3r]

One network:
    python launch/convert.py --model wan_vae --source Wan2.1_VAE.pth --out ckpt/wan_vae
    python launch/convert.py --model vggt_1b --source VGGT-1B/model.safetensors --out ckpt/vggt

``--model`` is a manifest name (``gen3r_jax/convert/registry.py``); ``--config`` an optional JSON file with the
official config of that network (default: the released size). For a whole checkpoint, ``--overrides`` is a JSON
file mapping component -> config for checkpoints whose sizes the official classes hard-code (not needed for the
release). Conversion is strict: unknown, missing or misshaped keys, integer tensors for float parameters and NaN /
Inf values stop it, naming each key (``--nostrict`` converts key problems anyway, ``--allow_nonfinite`` NaN / Inf).
``conversion_report.json`` beside each checkpoint records every key's fate. No model is instantiated: weights go
from the source straight to Orbax. The output is written beside ``--out`` and swapped in only when complete, so a
failed or killed run leaves a previous output as it was. Bad input: one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import sys

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "manifest name of ONE network to convert (e.g. wan_vae); omit to "
                             "convert a whole Gen3R checkpoint directory")
_SOURCE = flags.DEFINE_string("source", None, "checkpoint file or directory, or hf:<repo id>[@revision]")
_OUT = flags.DEFINE_string("out", None, "output directory (optional for hf: sources: the hub cache)")
_CONFIG = flags.DEFINE_string("config", None, "JSON file: the official config of the network (--model only)")
_OVERRIDES = flags.DEFINE_string("overrides", None, "JSON file: component -> config dict (whole checkpoints)")
_STRICT = flags.DEFINE_bool("strict", True, "refuse unknown / missing / misshaped keys and integer tensors for "
                            "float parameters")
_ALLOW_NONFINITE = flags.DEFINE_bool("allow_nonfinite", False, "convert weights holding NaN / Inf (refused by "
                                     "default; the report counts them)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars on a terminal (false: plain lines)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing output (only once the new one is complete)")


def main(argv):
  del argv
  from gen3r_jax.apps.cli import setup_console
  setup_console(progress=_PROGRESS.value)
  hub = (_SOURCE.value or "").startswith("hf:")
  missing = [n for n, f in (("--source", _SOURCE), ("--out", _OUT)) if not f.value and not (hub and n == "--out")]
  if missing:
    print(f"error: {', '.join(missing)} required (see --helpfull)", file=sys.stderr)
    return 2
  from gen3r_jax.apps.bundle import convert_any, read_json_arg
  from gen3r_jax.convert.core import ConversionError
  try:
    result = convert_any(_SOURCE.value, _OUT.value, model=_MODEL.value,
                         config=read_json_arg(_CONFIG.value, "--config"),
                         overrides=read_json_arg(_OVERRIDES.value, "--overrides", nested=True),
                         strict=_STRICT.value, overwrite=_OVERWRITE.value, allow_nonfinite=_ALLOW_NONFINITE.value)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)           # first line: the summary; then one line per problem
    return 2
  except (ValueError, FileNotFoundError, FileExistsError, PermissionError, KeyError, NotImplementedError,
          ImportError) as e:                        # Gen3RInputError is a ValueError
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {str(msg).splitlines()[0] if str(msg) else type(e).__name__}", file=sys.stderr)
    return 2
  if hub:
    print(f"bundle: {result}")     # the folder to pass as the checkpoint (or hf:... again: reused)
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
