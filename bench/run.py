"""Benchmark entry point (never run in CI).

    python -m bench.run --what dit,vae [--out bench/results.json] [--size 1.3b] [--dtype bfloat16]

Each ``--what`` names a module ``bench/<what>.py`` with ``run(**options) -> dict | list[dict]``. Prints a table
and writes JSON with device, driver, jax version and date.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from bench.common import device_info

COLUMNS = ("name", "device", "compile_s", "median_s", "min_s", "max_s", "tflops", "peak_gib")


def _fmt(v):
  if isinstance(v, float):
    return f"{v:.4g}"
  return "-" if v is None else str(v)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--what", required=True, help="comma-separated: dit, vae, adapter, vggt, sample")
  ap.add_argument("--out", default="bench/results.json")
  ap.add_argument("--size", default=None, help="model size passed to the benchmark (e.g. 1.3b, 14b, tiny)")
  ap.add_argument("--dtype", default=None)
  args = ap.parse_args(argv)
  info = device_info()
  rows = []
  for what in args.what.split(","):
    mod = importlib.import_module(f"bench.{what.strip()}")
    kw = {k: v for k, v in (("size", args.size), ("dtype", args.dtype)) if v is not None}
    out = mod.run(**kw)
    for r in out if isinstance(out, list) else [out]:
      rows.append({"device": info["device"], **r})
  print(f"# {info['device']} ({info['platform']}, jax {info['jax']}, driver {info.get('driver', '-')}), "
        f"{info['date']}")
  print(" | ".join(COLUMNS))
  for r in rows:
    print(" | ".join(_fmt(r.get(c)) for c in COLUMNS))
  with open(args.out, "w") as f:
    json.dump({"info": info, "rows": rows}, f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
