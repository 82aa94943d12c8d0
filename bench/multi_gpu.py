"""Scaling over the visible GPUs (issue 20): stage-2 train steps, the 14B sampling step and loop, CFG-parallel 1.3B
sample. Never run in CI.

    python -m bench.multi_gpu --out bench/results/<date>_multi_gpu.json           # N = every visible GPU
    python -m bench.multi_gpu --only train --sizes 1.3b --devices 1,2,4,8          # a part
    python -m bench.multi_gpu --tiny --out /tmp/mg.json                            # CPU: 8 fake devices, tiny sizes

Parts (``--only``, comma-separated; default all):

* ``train``: the stage-2 train step (``bench.stage2_step``: the trainer's step, loss, AdamW, remat ``full``,
  49 frames at 560², bf16 compute, fp32 master weights) for the 1.3B and the 14B DiT, on each device count ``d``
  of ``--devices`` (default 1, 2, 4, 8 up to N): ``fsdp=d``, and ``fsdp=d/c x context=c`` for each ``c`` of
  ``--context`` (default 2) with each self-attention scheme (``allgather``, ``ring``, ``ulysses`` — the hybrid
  ``ulysses_allgather`` where the heads do not divide ``c``; the row's ``context_strategy`` says which ran).
  One clip per data-parallel rank. ``tokens_per_s_per_gpu`` = tokens / step / d; ``scaling_efficiency`` = that
  over the same size's ``fsdp`` row on the fewest devices that ran (1 GPU for the 1.3B; the 14B's fp32 weights +
  Adam, ~225 GB, need several).
* ``sample14b``: the sampler's CFG denoising step (``sampling.denoise.time_denoise_step``: DiT on the
  ``[uncond, cond]`` pair + UniPC, random bf16 weights made on their shards) for the 14B DiT on each ``d``: ``fsdp=d``,
  ``context=d`` x (allgather, ring, ulysses), ``cfg=2 x fsdp=d/2``, ``cfg=2 x context=d/2`` (ulysses). ``median_s``
  per step over 5 steady steps (the first compiles); ``loop_s`` = 50 x that median (the 50-step denoising loop
  without compilation; the other stages are not parallelised and are in the ``cfg`` part's latency); ``speedup``
  = the 1-GPU row's step (same size) over this one (the target: 8 GPUs <= 0.16 x, i.e. speedup >= 6.25).
* ``cfg``: the whole 1.3B sample (``sampling.pipeline.generate``: text, CLIP, cameras, VAE, the loop, decoders;
  ``bench.sample``'s random full-size bundle) on 1 GPU and with the DiT CFG-parallel over ``cfg=2`` (2 GPUs), the
  other stages on the first GPU. ``latency_s`` = the second call (the first compiles); ``ratio`` = cfg=2 / 1 GPU
  (the target: <= 0.55).

Isolation (GPU default): every row runs in its own ``python -m bench.multi_gpu --case ...`` process, so memory is
its own and an out-of-memory costs one row (recorded with its error). ``--tiny`` runs everything in this process
on 8 fake CPU devices at tiny sizes (5 frames at 32², 2 steps; the 1-frame tiny bundle): a smoke test of the
code paths, not a measurement. The JSON (``--out``) holds ``device_info`` and the rows, rewritten after each row;
a markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PARTS = ("train", "sample14b", "cfg")
SCHEMES = ("allgather", "ring", "ulysses")
# steps: the sample's denoising steps (loop_s, the cfg part); iters: timed steady steps of the sampling step
TINY = dict(frames=5, image=32, steps=2, iters=1, repeats=2, num_frames=1)
FULL = dict(frames=49, image=560, steps=50, iters=5, repeats=5, num_frames=49)


def resolve_scheme(scheme: str, heads: int, context: int, tensor: int = 1) -> str:
  """``ulysses`` where the heads (per ``tensor`` shard) divide ``context``, else the hybrid ``ulysses_allgather``
  (``nn.context_parallel``); ``allgather`` / ``ring`` as they are."""
  if scheme != "ulysses":
    return scheme
  per = heads // tensor if heads % tensor == 0 else heads
  return "ulysses" if per % context == 0 else "ulysses_allgather"


def _dit_heads(size: str) -> int:
  from bench.dit import SIZES as DIT_SIZES
  return DIT_SIZES[size]().num_heads


def device_counts(n: int, wanted: str | None) -> list[int]:
  counts = [int(x) for x in wanted.split(",")] if wanted else [d for d in (1, 2, 4, 8) if d <= n]
  bad = [d for d in counts if d < 1 or d > n]
  if bad:
    raise SystemExit(f"error: --devices {bad} not in 1..{n} (the visible devices)")
  return counts


def plan(parts, sizes, counts, contexts, tiny: bool) -> list[dict]:
  """The cases to run, in order (each a dict of :func:`run_case` keywords)."""
  cases = []
  train_sizes = ["tiny"] if tiny else sizes
  for size in train_sizes if "train" in parts else ():
    heads = _dit_heads(size)
    for d in counts:
      cases.append(dict(part="train", size=size, devices=d, mesh={"fsdp": d}))
      for c in contexts:
        if 1 < c <= d and d % c == 0:
          for s in SCHEMES:
            cases.append(dict(part="train", size=size, devices=d, mesh={"fsdp": d // c, "context": c},
                              strategy=resolve_scheme(s, heads, c)))
  if "sample14b" in parts:
    size = "tiny" if tiny else "14b"
    heads = _dit_heads(size)
    for d in counts:
      cases.append(dict(part="sample14b", size=size, devices=d, mesh={"fsdp": d}))
      if d > 1:
        for s in SCHEMES:
          cases.append(dict(part="sample14b", size=size, devices=d, mesh={"context": d},
                            strategy=resolve_scheme(s, heads, d)))
      if d >= 2:
        cases.append(dict(part="sample14b", size=size, devices=d, mesh={"cfg": 2, "fsdp": d // 2}))
      if d >= 4:
        cases.append(dict(part="sample14b", size=size, devices=d, mesh={"cfg": 2, "context": d // 2},
                          strategy=resolve_scheme("ulysses", heads, d // 2)))
  if "cfg" in parts:
    size = "tiny" if tiny else "full"
    cases.append(dict(part="cfg", size=size, devices=1, mesh=None))
    if max(counts) >= 2:
      cases.append(dict(part="cfg", size=size, devices=2, mesh={"cfg": 2}))
  return cases


def mesh_name(mesh: dict | None) -> str:
  return "single" if not mesh else "x".join(f"{k}={v}" for k, v in mesh.items())


# ------------------------------------------------------------------------------------------------ the cases
def _train(size, devices, mesh, strategy, shapes) -> dict:
  from bench import stage2_step
  return stage2_step.run(devices=devices, size=size, dtype="float32" if size == "tiny" else "bfloat16",
                         frames=shapes["frames"], image=shapes["image"], repeats=shapes["repeats"],
                         mesh_shape=mesh, context_strategy=strategy or "allgather")


def _sample_step(size, devices, mesh, strategy, shapes) -> dict:
  import jax

  from bench.sample14b import _config
  from gen3r_jax.parallel.rules import make_mesh
  from gen3r_jax.sampling.denoise import time_denoise_step
  dtype = "float32" if size == "tiny" else "bfloat16"
  cfg = _config(size, dtype, None, "auto")
  m = make_mesh(mesh, devices=jax.devices()[:devices])
  return time_denoise_step(cfg, m, frames=shapes["frames"], height=shapes["image"], width=shapes["image"],
                           iters=shapes["iters"], context_parallel=strategy or "allgather")


def _sample(size, devices, mesh, strategy, shapes) -> dict:
  """Full ``generate`` twice (the first compiles); the DiT on ``mesh`` (CFG-parallel), the rest on device 0."""
  import jax
  import numpy as np

  from bench.common import device_random
  from bench.sample import build_bundle
  from gen3r_jax.apps.bundle import COMPONENTS
  from gen3r_jax.apps import demo
  from gen3r_jax.models.wan_dit.transformer import WanDiT
  from gen3r_jax.parallel.rules import make_mesh
  from gen3r_jax.sampling.pipeline import SampleOptions, generate
  dtype = "float32" if size == "tiny" else "bfloat16"
  tmp = tempfile.mkdtemp(prefix="gen3r_bench_mg_")
  bundle = build_bundle(size, dtype, dtype, tmp)
  if mesh:
    # the same random weights (build_bundle seeds each model with its component index), on the mesh
    bundle.transformer = device_random(WanDiT, bundle.transformer.cfg, seed=list(COMPONENTS).index("transformer"),
                                       mesh=make_mesh(mesh, devices=jax.devices()[:devices]))
  image = (demo.example_image(0)[None] / 255.0).astype(np.float32)
  opts = SampleOptions(task="1view", cameras="zoom_out", num_frames=shapes["num_frames"],
                       num_steps=shapes["steps"], seed=0)
  times, out = [], None
  for _ in range(2):
    t0 = time.perf_counter()
    out = generate(bundle, image, "a palace on a hill, seen from the air", opts, progress=False)
    times.append(time.perf_counter() - t0)
  steps = [float(s) for s in out["timings"]["denoise_steps"]]
  return {"first_s": times[0], "latency_s": times[1], "step_median_s": float(np.median(steps[1:] or steps)),
          "stages_s": {k: float(v) for k, v in out["timings"].items() if not isinstance(v, list)},
          "num_frames": opts.num_frames, "steps": opts.num_steps, "finite": bool(np.isfinite(out["latents"]).all())}


def run_case(case: dict, tiny: bool) -> dict:
  """One row: the case's measurement, or its error (an out-of-memory is a result too)."""
  from bench.common import row_base
  shapes = TINY if tiny else FULL
  part, size, devices, mesh = case["part"], case["size"], case["devices"], case.get("mesh")
  strategy = case.get("strategy")
  row = row_base(f"multi_gpu_{part}", size=size, devices=devices, mesh=mesh, mesh_name=mesh_name(mesh),
                 context_strategy=strategy, tiny=tiny)
  row["name"] = f"{part} {size} {mesh_name(mesh)}" + (f" {strategy}" if strategy else "")
  try:
    if part == "train":
      r = _train(size, devices, mesh, strategy, shapes)
      row.update(median_s=r["median_s"], compile_s=r["compile_s"], tokens=r["tokens"], batch=r["batch"],
                 tokens_per_s=r["tokens_per_s"], tokens_per_s_per_gpu=r["tokens_per_s"] / devices,
                 mfu=r.get("mfu"), peak_gib=r.get("peak_gib"), spread=r.get("spread"), params=r.get("params"))
    elif part == "sample14b":
      r = _sample_step(size, devices, mesh, strategy, shapes)
      steps = shapes["steps"]
      row.update(median_s=r["median_s"], compile_s=r["first_step_s"] - r["median_s"], tokens=r["tokens"],
                 loop_s=r["median_s"] * steps, steps=steps, min_s=r["min_s"], max_s=r["max_s"],
                 peak_gib=None if r["peak_bytes"] is None else r["peak_bytes"] / 2 ** 30, params=r["params"],
                 finite=r["finite"])
    else:
      row.update(_sample(size, devices, mesh, strategy, shapes))
    row["ok"] = True
  except Exception as e:  # noqa: BLE001 - a failed row (e.g. out of memory) is recorded and the run goes on
    row.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
  return row


# ------------------------------------------------------------------------------------------------ derived, table
def derive(rows: list[dict]) -> None:
  """Add ``scaling_efficiency`` (train), ``speedup`` (sampling step) and ``ratio`` (cfg) in place."""
  ok = [r for r in rows if r.get("ok")]
  for size in {r["size"] for r in ok if r["bench"] == "multi_gpu_train"}:
    base = [r for r in ok if r["bench"] == "multi_gpu_train" and r["size"] == size and list(r["mesh"]) == ["fsdp"]]
    if base:
      b = min(base, key=lambda r: r["devices"])
      for r in ok:
        if r["bench"] == "multi_gpu_train" and r["size"] == size:
          r["scaling_efficiency"] = r["tokens_per_s_per_gpu"] / b["tokens_per_s_per_gpu"]
          r["efficiency_base_devices"] = b["devices"]
  step1 = [r for r in ok if r["bench"] == "multi_gpu_sample14b" and r["devices"] == 1]
  for r in ok:
    if r["bench"] == "multi_gpu_sample14b" and step1:
      r["speedup"] = step1[0]["median_s"] / r["median_s"]
  one = [r for r in ok if r["bench"] == "multi_gpu_cfg" and r["devices"] == 1]
  for r in ok:
    if r["bench"] == "multi_gpu_cfg" and one:
      r["ratio"] = r["latency_s"] / one[0]["latency_s"]


def _fmt(v, digits=3):
  if v is None:
    return "—"
  if isinstance(v, float):
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
  return str(v)


def table(rows: list[dict]) -> str:
  """Markdown: one line per row, the part's numbers (an error row shows its error)."""
  head = ("case", "GPUs", "step / latency s", "tokens/s/GPU", "efficiency", "speedup", "ratio", "loop s",
          "peak GiB", "note")
  out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    t = r.get("latency_s", r.get("median_s"))
    cells = (r["name"], r["devices"], _fmt(t), _fmt(r.get("tokens_per_s_per_gpu")),
             _fmt(r.get("scaling_efficiency")), _fmt(r.get("speedup")), _fmt(r.get("ratio")), _fmt(r.get("loop_s")),
             _fmt(r.get("peak_gib")), "" if r.get("ok") else r.get("error", ""))
    out.append("| " + " | ".join(str(c) for c in cells) + " |")
  return "\n".join(out)


# ------------------------------------------------------------------------------------------------ driver
def _spawn(case: dict, timeout_s: float) -> dict:
  """One case in a fresh process (its own GPU memory); a crash or timeout is an error row."""
  with tempfile.TemporaryDirectory(prefix="gen3r_mg_") as tmp:
    path = os.path.join(tmp, "row.json")
    cmd = [sys.executable, "-m", "bench.multi_gpu", "--case", json.dumps(case), "--case-json", path]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
      p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
      return dict(case, name=_error_name(case), ok=False, error=f"timed out after {timeout_s:.0f} s",
                  bench=f"multi_gpu_{case['part']}")
    if os.path.isfile(path):
      with open(path) as f:
        return json.load(f)
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
    return dict(case, name=_error_name(case), ok=False, error=f"exit {p.returncode}: {tail[0][:300]}",
                bench=f"multi_gpu_{case['part']}")


def _error_name(case: dict) -> str:
  """The row name of a case that left no row: part, size, mesh and, where it has one, the context strategy (so the
  failed allgather / ring / ulysses rows of one mesh stay apart)."""
  strategy = case.get("strategy")
  return " ".join(str(x) for x in (case["part"], case["size"], mesh_name(case.get("mesh")), strategy) if x)


def _write(path: str | None, info: dict, rows: list[dict]) -> None:
  if not path:
    return
  from gen3r_jax.atomic import atomic_path
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump({"device_info": info, "rows": rows}, f, indent=1)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--tiny", action="store_true", help="CPU smoke: 8 fake devices, tiny sizes, in this process")
  ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts among {PARTS}")
  ap.add_argument("--sizes", default="1.3b,14b", help="train part: DiT sizes (1.3b, 14b)")
  ap.add_argument("--devices", default=None, help="device counts, e.g. 1,2,4,8 (default: powers of 2 up to N)")
  ap.add_argument("--context", default="2", help="train part: context sizes of the fsdp x context rows")
  ap.add_argument("--out", default=None, help="JSON output (rewritten after every row)")
  ap.add_argument("--timeout-s", type=float, default=1800, help="per isolated row")
  ap.add_argument("--no-isolate", action="store_true", help="run every row in this process")
  ap.add_argument("--case", default=None, help=argparse.SUPPRESS)       # one isolated row (what _spawn runs)
  ap.add_argument("--case-json", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.tiny:       # before jax initialises its backend
    os.environ["JAX_PLATFORMS"] = "cpu"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
      os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
  import jax
  if args.tiny:
    jax.config.update("jax_default_matmul_precision", "highest")
  if args.case:
    row = run_case(json.loads(args.case), args.tiny)
    with open(args.case_json, "w") as f:
      json.dump(row, f)
    return 0
  from bench.common import device_info
  parts = [p.strip() for p in args.only.split(",") if p.strip()]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    print(f"error: --only {unknown}: parts are {PARTS}", file=sys.stderr)
    return 2
  info = device_info()
  # --tiny: 1 and 8 devices only (the CPU compiles dominate; every scheme still runs)
  counts = device_counts(jax.device_count(), args.devices or ("1,8" if args.tiny else None))
  cases = plan(parts, [s.strip() for s in args.sizes.split(",")], counts, [int(c) for c in args.context.split(",")],
               args.tiny)
  isolate = not (args.tiny or args.no_isolate)
  rows = []
  for i, case in enumerate(cases):
    t0 = time.perf_counter()
    row = _spawn(case, args.timeout_s) if isolate else run_case(case, args.tiny)
    rows.append(row)
    derive(rows)
    _write(args.out, info, rows)
    print(f"[multi_gpu] {i + 1}/{len(cases)} {row['name']}: "
          f"{'ok' if row.get('ok') else row.get('error')} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
  print(f"{info['device']} x {info['num_devices']} ({info['platform']}), jax {info['jax']}, {info['date']}")
  print(table(rows))
  return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
