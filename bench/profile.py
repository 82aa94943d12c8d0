"""Kernel-time breakdown of one benchmark: run ``bench/<what>.py`` under the JAX profiler and summarise.

    python -m bench.profile --what vggt --out /tmp/prof [--kw repeats=2]

The trace covers only the timed calls (``bench.common.TRACE_ENV``: init, compile and warm-up stay out of it, so
their kernels neither crowd the trace nor fill its event buffer, as a stage-2 step's initialisation did); the
kernel totals are divided by ``repeats``, so the table is per call. The Perfetto trace is copied to ``<out>/perfetto_trace.json.gz``.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import shutil


from bench.common import TRACE_ENV
from bench.run import parse_kw
from bench.trace_summary import load, summarise


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--what", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--kw", action="append", default=[])
  ap.add_argument("--top", type=int, default=30)
  args = ap.parse_args(argv)
  common, per = parse_kw(args.kw)
  kw = {"repeats": 2, "warmup": 1, **common, **per.get(args.what, {})}
  mod = importlib.import_module(f"bench.{args.what}")
  tdir = os.path.join(args.out, "trace")
  os.environ[TRACE_ENV] = tdir
  try:
    mod.run(**kw)
  finally:
    os.environ.pop(TRACE_ENV, None)
  src = glob.glob(os.path.join(tdir, "plugins", "profile", "*", "perfetto_trace.json.gz"))[0]
  dst = os.path.join(args.out, "perfetto_trace.json.gz")
  shutil.copy(src, dst)
  shutil.rmtree(tdir)
  print(summarise(load(dst), calls=kw["repeats"], top=args.top))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
