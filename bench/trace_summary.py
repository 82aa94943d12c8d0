"""Summarise a JAX Perfetto trace: GPU kernel time by kernel name and by category.

    python -m bench.trace_summary perfetto_trace.json.gz [--top 40] [--calls 2]

Reads the ``traceEvents`` of the device streams (processes whose name contains ``GPU``/``/device:``), sums the
durations of complete events by name, and groups them into coarse categories (attention, matmul, convolution,
elementwise fusions, copies/transposes, collectives). ``--calls`` divides by the number of traced calls.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json

CATEGORIES = (
    ("attention", ("flash", "fmha", "cudnn", "sdpa", "attention")),
    ("matmul", ("gemm", "cutlass", "xmma", "matmul", "dot")),
    ("convolution", ("conv",)),
    ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
    ("collective", ("nccl", "all-gather", "all-reduce", "reduce-scatter")),
    ("fusion", ("fusion", "loop_", "input_", "reduce")),
)


def category(name: str) -> str:
  low = name.lower()
  for cat, keys in CATEGORIES:
    if any(k in low for k in keys):
      return cat
  return "other"


def load(path: str) -> dict:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    return json.load(f)


def summarise(trace: dict, calls: int = 1, top: int = 40) -> str:
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  pname = {e["pid"]: e.get("args", {}).get("name", "") for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  gpu = {p for p, n in pname.items() if "GPU" in n or "/device:" in n}
  by_name: dict[str, float] = collections.Counter()
  count: dict[str, int] = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("pid") in gpu and "dur" in e:
      by_name[e["name"]] += float(e["dur"])
      count[e["name"]] += 1
  total = sum(by_name.values())
  by_cat: dict[str, float] = collections.Counter()
  for n, d in by_name.items():
    by_cat[category(n)] += d
  lines = [f"device streams: {sorted(pname[p] for p in gpu)}",
           f"total kernel time per call: {total / calls / 1e3:.1f} ms", "", "category | ms/call | share"]
  for c, d in sorted(by_cat.items(), key=lambda kv: -kv[1]):
    lines.append(f"{c} | {d / calls / 1e3:.1f} | {d / total:.1%}")
  lines += ["", "kernel | ms/call | launches/call | share"]
  for n, d in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]:
    lines.append(f"{n[:100]} | {d / calls / 1e3:.2f} | {count[n] / calls:.0f} | {d / total:.1%}")
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("trace")
  ap.add_argument("--top", type=int, default=40)
  ap.add_argument("--calls", type=int, default=1)
  args = ap.parse_args(argv)
  print(summarise(load(args.trace), args.calls, args.top))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
