"""Summarise a JAX compile log (``JAX_LOG_COMPILES=1``): XLA compile seconds per jitted function.

    JAX_LOG_COMPILES=1 python -m bench.sample --phase cold ... 2> compiles.log
    python -m bench.compile_log compiles.log [--top 30]

Sums the ``Finished XLA compilation of <fn> in <s> sec`` lines by function name: which programs (including the
small eager ops, each compiled on its own) make up a cold start.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

LINE = re.compile(r"Finished XLA compilation of (.+?) in ([0-9.eE+-]+) sec")


def summarise(lines) -> list[tuple[str, float, int]]:
  tot, cnt = collections.Counter(), collections.Counter()
  for line in lines:
    m = LINE.search(line)
    if m:
      tot[m.group(1)] += float(m.group(2))
      cnt[m.group(1)] += 1
  return [(n, s, cnt[n]) for n, s in tot.most_common()]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("log")
  ap.add_argument("--top", type=int, default=30)
  args = ap.parse_args(argv)
  with open(args.log, errors="replace") as f:
    rows = summarise(f)
  total = sum(s for _, s, _ in rows)
  print(f"{sum(c for *_, c in rows)} compiles, {total:.1f} s in all ({len(rows)} distinct functions)")
  for name, s, c in rows[:args.top]:
    print(f"{s:8.2f} s  x{c:<4d} {name[:120]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
