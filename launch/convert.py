"""Convert released PyTorch weights to gen3r_jax Orbax checkpoints.

One model:
    python launch/convert.py --model wan_vae --source Wan2.1_VAE.pth --out ckpt/wan_vae
    python launch/convert.py --model geometry_adapter --source geo_adapter/ --out ckpt/geo_adapter

``--model`` is a manifest name (see ``gen3r_jax/convert/registry.py``); ``--config`` is an optional JSON file with
the official config dict (defaults to the released full size). Conversion is strict: unknown, missing or
misshaped keys stop it with a list of each (``--nostrict`` converts anyway). The JSON report is always written
next to the checkpoint (``conversion_report.json``). No model is instantiated: weights go from the source file
straight to Orbax, one tensor at a time.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "manifest name of the model to convert, e.g. wan_vae")
_SOURCE = flags.DEFINE_string("source", None, "checkpoint file or directory (.safetensors, sharded, .pth)")
_OUT = flags.DEFINE_string("out", None, "output directory")
_CONFIG = flags.DEFINE_string("config", None, "optional JSON file with the official model config")
_STRICT = flags.DEFINE_bool("strict", True, "refuse unknown / missing / misshaped keys")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing output")


def convert_one(model: str, source: str, out: str, *, config: dict | None = None, strict: bool = True,
                overwrite: bool = False, log=print):
  """Convert one model; returns the report. Library entry point used by the tests and the bundle converter."""
  from gen3r_jax.convert.checkpoint import REPORT_FILE, save_params
  from gen3r_jax.convert.core import ConversionError, convert, param_targets
  from gen3r_jax.convert.registry import get_spec
  from gen3r_jax.convert.sources import open_source

  t0 = time.time()
  spec = get_spec(model, config)
  src = open_source(source) if isinstance(source, str) else source
  log(f"[convert] {model}: reading {src.description} ({len(src)} tensors)")
  targets = param_targets(spec.abstract())
  os.makedirs(out, exist_ok=True)
  try:
    params, report = convert(spec.table(spec.config), src, targets, strict=strict)
  except ConversionError as e:
    e.report.write(os.path.join(out, REPORT_FILE))
    raise
  report.write(os.path.join(out, REPORT_FILE))
  save_params(out, params, config=spec.config.to_dict(), overwrite=overwrite)
  log(f"[convert] {report.summary()}")
  log(f"[convert] wrote {out} in {time.time() - t0:.1f} s (report: {os.path.join(out, REPORT_FILE)})")
  return report


def main(argv):
  del argv
  missing = [n for n, f in (("--model", _MODEL), ("--source", _SOURCE), ("--out", _OUT)) if not f.value]
  if missing:
    print(f"error: {', '.join(missing)} required (see --helpfull)", file=sys.stderr)
    return 2
  config = None
  if _CONFIG.value:
    with open(_CONFIG.value) as f:
      config = json.load(f)
  from gen3r_jax.convert.core import ConversionError
  try:
    convert_one(_MODEL.value, _SOURCE.value, _OUT.value, config=config, strict=_STRICT.value,
                overwrite=_OVERWRITE.value)
  except ConversionError as e:
    print(str(e), file=sys.stderr)
    return 1
  except (FileNotFoundError, FileExistsError, KeyError, ValueError, NotImplementedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
