"""Benchmark entry point (never run in CI).

    python -m bench.run --what dit,vggt,vae,adapter,sample,stage2_step --torch --out results.json   # GPU, full size
    python -m bench.run --what dit,vae --size tiny --dtype float32 --no-isolate                     # CPU smoke
    python -m bench.run --what vae --kw vae.which=decode --kw repeats=7                             # options

Each ``--what`` names a module ``bench/<what>.py`` with ``run(**options) -> dict | list[dict]`` (and a ``TINY``
dict of the shapes ``--size tiny`` uses). Options: ``--size`` / ``--dtype`` go to every benchmark (``full`` and
``tiny`` everywhere; the DiT also takes ``1.3b`` / ``14b``), ``--kw KEY=VALUE`` to every benchmark whose
``run`` takes ``KEY``, ``--kw BENCH.KEY=VALUE`` to that one only (ints, floats, true/false parsed).

Isolation (default): every benchmark runs in its own ``python -m bench.run --no-isolate`` process, so its
``peak_gib`` is its own, a crash or out-of-memory costs only its row, and the GPU is free for the next one
(JAX holds 75% of it per process). ``--timeout-s`` bounds each, ``--deadline-s`` the whole run (benchmarks that
no longer fit are recorded as skipped). The JSON (``--out``) is rewritten after every benchmark: device, driver,
jax version, date, and one row per measurement.

``--torch`` first runs ``bench.torch_ref`` (the official PyTorch modules at the same shapes) in its own process,
before any JAX process touches the GPU, and adds to each of our rows with the same ``ref_key`` the torch
median, peak memory and ``ratio`` = ours / theirs (< 1: we are faster). ``--torch-json`` reuses a saved result.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

COLUMNS = ("name", "compile_s", "median_s", "spread", "tflops", "peak_gib", "torch_s", "ratio")
TORCH_WHATS = ("dit", "vggt", "vae", "adapter")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fmt(v):
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, float):
    return f"{v:.4g}"
  return "-" if v is None else str(v)


def _value(val: str):
  for conv in (int, float):
    try:
      return conv(val)
    except ValueError:
      continue
  return {"true": True, "false": False, "none": None}.get(val.lower(), val)


def parse_kw(items: list[str]) -> tuple[dict, dict[str, dict]]:
  """``KEY=VALUE`` -> (options for every benchmark, {bench: options for that one})."""
  common, per = {}, {}
  for item in items:
    key, sep, val = item.partition("=")
    if not sep:
      raise SystemExit(f"error: --kw {item!r}: expected KEY=VALUE")
    if "." in key:
      bench, key = key.split(".", 1)
      per.setdefault(bench, {})[key] = _value(val)
    else:
      common[key] = _value(val)
  return common, per


def options_for(mod, what: str, size: str | None, dtype: str | None, common: dict, per: dict) -> dict:
  """The keyword arguments of ``mod.run`` for this invocation (``TINY`` shapes first when ``size == "tiny"``)."""
  params = inspect.signature(mod.run).parameters
  takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
  kw = dict(getattr(mod, "TINY", {})) if size == "tiny" else {}
  for k, v in (("size", size), ("dtype", dtype)):
    if v is not None:
      kw[k] = v
  kw.update({k: v for k, v in common.items() if takes_all or k in params})
  kw.update(per.get(what, {}))
  return kw


def normalise(r: dict) -> dict:
  """Fill the table columns from the field names the individual benchmarks use."""
  r = dict(r)
  if "name" not in r:
    r["name"] = " ".join(str(r[k]) for k in ("bench", "size", "dtype") if k in r) or "?"
  if "tflops" not in r and "tflops_per_s" in r:
    r["tflops"] = r["tflops_per_s"]
  if "peak_gib" not in r and r.get("peak_bytes") is not None:
    r["peak_gib"] = r["peak_bytes"] / 2 ** 30
  return r


def attach_torch(rows: list[dict], torch_rows: list[dict]) -> None:
  """Add ``torch_s``, ``torch_peak_gib``, ``torch_tflops`` and ``ratio`` (ours / theirs) to matching rows."""
  ref = {t["ref_key"]: t for t in torch_rows if "ref_key" in t}
  for r in rows:
    t = ref.get(r.get("ref_key"))
    if t is None:
      continue
    if "error" in t:
      r["torch_error"] = t["error"]
      continue
    r["torch_s"] = t["median_s"]
    r["torch_spread"] = t.get("spread")
    r["torch_peak_gib"] = t.get("peak_gib")
    r["torch_device"] = t.get("device")
    r["torch_version"] = t.get("torch")
    if r.get("tflop"):
      r["torch_tflops"] = r["tflop"] / t["median_s"]
    if r.get("median_s") and "error" not in r:
      r["ratio"] = r["median_s"] / t["median_s"]


def table(info: dict, rows: list[dict]) -> str:
  lines = [f"# {info.get('device', '?')} ({info.get('platform', '?')}, jax {info.get('jax', '?')}, driver "
           f"{info.get('driver', '-')}), {info.get('date', '?')}",
           " | ".join(COLUMNS)]
  for r in rows:
    if "error" in r:
      lines.append(f"{r.get('name', r.get('bench', '?'))} | ERROR: {str(r['error'])[:160]}")
    else:
      lines.append(" | ".join(_fmt(r.get(c)) for c in COLUMNS))
  lines.append("ratio = our median / the official PyTorch module's median at the same shapes (< 1: faster); "
               "tflops from analytic FLOPs; peak_gib = process peak device memory")
  return "\n".join(lines)


def _write(path: str, info: dict, rows: list[dict], torch_rows: list[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"info": info, "rows": rows, "torch_rows": torch_rows}, f, indent=1, default=str)
  os.replace(tmp, path)


def _spawn(args: list[str], timeout: float | None) -> tuple[int | None, str]:
  """Run ``python -m ...`` in its own session; on timeout kill the whole group (its own children too)."""
  proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, start_new_session=True)
  try:
    return proc.wait(timeout=timeout), ""
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return None, f"timed out after {timeout:.0f} s"


def run_isolated(what: str, args, timeout: float | None) -> tuple[dict | None, list[dict]]:
  fd, path = tempfile.mkstemp(prefix=f"bench_{what}_", suffix=".json")
  os.close(fd)
  cmd = ["bench.run", "--what", what, "--no-isolate", "--out", path]
  for flag, v in (("--size", args.size), ("--dtype", args.dtype)):
    if v is not None:
      cmd += [flag, v]
  for item in args.kw:
    cmd += ["--kw", item]
  if timeout is not None and what == "sample":                # its two phases split what is left
    cmd += ["--kw", f"sample.timeout={max(timeout - 30, 30):.0f}"]
  try:
    rc, why = _spawn(cmd, timeout)
    try:
      with open(path) as f:
        res = json.load(f)
    except (OSError, json.JSONDecodeError):
      res = None
    if res is None or rc != 0:
      err = why or f"exit status {rc}"
      rows = (res or {}).get("rows", []) + [{"bench": what, "name": what, "error": err}]
      return (res or {}).get("info"), rows
    return res.get("info"), res.get("rows", [])
  finally:
    if os.path.exists(path):
      os.remove(path)


def run_inprocess(what: str, args, common: dict, per: dict) -> list[dict]:
  try:
    mod = importlib.import_module(f"bench.{what}")
    out = mod.run(**options_for(mod, what, args.size, args.dtype, common, per))
  except Exception as e:  # noqa: BLE001 - recorded as an error row, the others still run
    import traceback
    traceback.print_exc()
    return [{"bench": what, "name": what, "error": f"{type(e).__name__}: {e}"}]
  return [normalise(r) for r in (out if isinstance(out, list) else [out])]


def run_torch(args, whats: list[str], timeout: float | None) -> list[dict]:
  if args.torch_json:
    with open(args.torch_json) as f:
      data = json.load(f)
    return data["torch_rows"] if isinstance(data, dict) else data
  refs = [w for w in whats if w in TORCH_WHATS]
  if not refs:
    return []
  fd, path = tempfile.mkstemp(prefix="bench_torch_", suffix=".json")
  os.close(fd)
  size = "tiny" if args.size == "tiny" else "full"
  cmd = ["bench.torch_ref", "--what", ",".join(refs), "--size", size, "--out", path] + list(args.torch_args)
  try:
    rc, why = _spawn(cmd, timeout)
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, json.JSONDecodeError):
      return [{"bench": "torch_ref", "ref_key": None, "error": why or f"exit status {rc}, no result"}]
  finally:
    os.remove(path)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--what", required=True, help="comma-separated: dit, vggt, vae, adapter, sample, stage2_step, ...")
  ap.add_argument("--out", default="bench/results.json")
  ap.add_argument("--size", default=None, help="full (default of each benchmark) | tiny (CPU smoke) | 1.3b | 14b")
  ap.add_argument("--dtype", default=None, help="compute dtype (default: each benchmark's, bfloat16)")
  ap.add_argument("--kw", action="append", default=[], metavar="[BENCH.]KEY=VALUE",
                  help="extra keyword for the benchmarks' run(), e.g. --kw quick=true --kw vae.which=decode")
  ap.add_argument("--torch", action="store_true", help="also time the official PyTorch modules (bench.torch_ref)")
  ap.add_argument("--torch-json", default=None, help="reuse torch rows from this JSON (a torch_ref or run output)")
  ap.add_argument("--torch-arg", dest="torch_args", action="append", default=[],
                  help="extra argument for bench.torch_ref, e.g. --torch-arg=--sdpa=flash")
  ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                  help="one process per benchmark (default; --no-isolate runs them here)")
  ap.add_argument("--timeout-s", type=float, default=None, help="limit per benchmark process")
  ap.add_argument("--deadline-s", type=float, default=None, help="limit for the whole run; later benchmarks skip")
  args = ap.parse_args(argv)
  t_start = time.monotonic()
  whats = [w.strip() for w in args.what.split(",") if w.strip()]
  common, per = parse_kw(args.kw)

  def remaining():
    return None if args.deadline_s is None else args.deadline_s - (time.monotonic() - t_start)

  def limit():
    r = remaining()
    vals = [v for v in (args.timeout_s, None if r is None else r - 5) if v is not None]
    return min(vals) if vals else None

  info: dict = {}
  rows: list[dict] = []
  torch_rows: list[dict] = []
  if args.torch or args.torch_json:
    torch_rows = run_torch(args, whats, limit())
    for t in torch_rows:
      print(f"[bench] torch {t.get('bench')}: " + (f"ERROR {t['error']}" if "error" in t else
                                                    f"median {t['median_s']:.4g} s"), flush=True)
  for what in whats:
    lim = limit()
    if lim is not None and lim < 30:
      rows.append({"bench": what, "name": what, "error": "skipped: deadline reached"})
      continue
    if args.isolate:
      child_info, new = run_isolated(what, args, lim)
      info = info or (child_info or {})
    else:
      new = run_inprocess(what, args, common, per)
      if not info:                       # only now: `sample` spawns GPU processes before this one may hold it
        from bench.common import device_info
        info = device_info()
    rows.extend(normalise(r) for r in new)
    attach_torch(rows, torch_rows)
    _write(args.out, info, rows, torch_rows)
    for r in new:
      t = r.get("median_s", r.get("first_call_s"))
      print(f"[bench] {r.get('name', r.get('bench'))}: " + (f"ERROR {r['error']}" if "error" in r else
                                                          f"{'median' if 'median_s' in r else 'first call'} "
                                                          f"{t if t is not None else float('nan'):.4g} s"),
            flush=True)
  attach_torch(rows, torch_rows)
  _write(args.out, info, rows, torch_rows)
  print(table(info, rows))
  print(f"wrote {args.out}")
  return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
