"""Benchmark entry point (never run in CI).

    python -m bench.run --what dit,vae [--out bench/results.json] [--size 1.3b] [--dtype bfloat16]
    python -m bench.run --what dit --size tiny --dtype float32 --kw frames=3 --kw h=8 --kw w=16   # CPU smoke

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


def _parse_kw(items: list[str]) -> dict:
  out = {}
  for item in items:
    key, _, val = item.partition("=")
    for conv in (int, float):
      try:
        out[key] = conv(val)
        break
      except ValueError:
        continue
    else:
      out[key] = {"true": True, "false": False}.get(val.lower(), val)
  return out


def _normalise(r: dict) -> dict:
  """Fill the table columns from the field names the individual benchmarks use."""
  r = dict(r)
  if "name" not in r:
    r["name"] = " ".join(str(r[k]) for k in ("bench", "size", "dtype") if k in r) or "?"
  if "tflops" not in r and "tflops_per_s" in r:
    r["tflops"] = r["tflops_per_s"]
  if "peak_gib" not in r and r.get("peak_bytes") is not None:
    r["peak_gib"] = r["peak_bytes"] / 2**30
  return r


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--what", required=True, help="comma-separated: dit, vae, adapter, vggt, sample")
  ap.add_argument("--out", default="bench/results.json")
  ap.add_argument("--size", default=None, help="model size passed to the benchmark (e.g. 1.3b, 14b, tiny)")
  ap.add_argument("--dtype", default=None)
  ap.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE",
                  help="extra keyword for the benchmarks' run() (ints/floats parsed), e.g. --kw frames=3")
  args = ap.parse_args(argv)
  info = device_info()
  rows = []
  for what in args.what.split(","):
    mod = importlib.import_module(f"bench.{what.strip()}")
    kw = {k: v for k, v in (("size", args.size), ("dtype", args.dtype)) if v is not None}
    kw.update(_parse_kw(args.kw))
    out = mod.run(**kw)
    for r in out if isinstance(out, list) else [out]:
      rows.append(_normalise({"device": info["device"], **r}))
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
