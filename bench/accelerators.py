"""The sampling accelerators against the exact path, in one process: step caches (first_block, magcache, cfg), FP8
GEMMs and first_block + FP8, each on the same seed and inputs as the exact sample.

    python -m bench.accelerators --out accel.json                 # GPU: 49 frames at 560x560, 50 steps, bf16
    python -m bench.accelerators --steps 20 --out accel.json      # leaner (every row at 20 steps)
    python -m bench.accelerators --tiny --out accel_cpu.json      # CPU: the demo's tiny models, FP8 emulated

One random bundle (``bench.sample.build_bundle``: full size on the device, or the CPU demo's tiny widths) and one
conditioning image; ``sampling.pipeline.generate`` runs (1view, zoom_out, CFG 5, UniPC):

1. a warm-up sample with 1 step (compiles every stage outside the DiT, so later rows time only their own
   programs);
2. ``exact``: the default path, the reference of every error column;
3. ``calibrate``: every step computed through the block-cache programs; its per-step residual-magnitude ratios
   become the magcache schedule (written next to ``--out``, labelled ``weights: "random ..."``: a schedule of
   *random* weights, a proxy, never one for the released model) and its per-step first-block changes pick the
   first_block threshold (``--fb-threshold auto``: the smallest threshold whose predicted plan caches at least
   ``--fb-skip`` of the steps, 45 % by default, so that at least 40 % are skipped);
4. ``first_block``, ``magcache`` (default threshold 0.12, K=2, 20 % warmup), ``cfg`` (default plan), ``fp8``,
   ``first_block+fp8``.

Per row: ``sample_s`` (the ``generate`` call minus the compile excess of its first full and first cached step:
the option's DiT programs compile there; ``wall_s`` is the raw call), ``dit_full_step_s`` / ``dit_cached_step_s``
(medians over the steps of each kind after the first), ``steps_cached`` of ``steps``, and against ``exact``:
``latent_rel_l2`` (final joint latent), ``rgb_psnr_db`` (decoded video, mean over frames), ``depth_rel``
(mean |d - d_exact| / mean |d_exact|), ``chamfer`` (symmetric Chamfer distance between the depth-unprojected
point clouds, the same ``--points`` random pixels of each, scene units) and ``chamfer_rel`` (/ the exact cloud's
bounding-box diagonal). Random weights give meaningless images: the speed is real, the errors are a proxy for
the released checkpoint (``launch/calibrate_cache.py`` and these metrics on your own samples measure the real
trade-off).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

OPTIONS = ("first_block", "magcache", "cfg", "fp8", "first_block+fp8")
TINY = dict(num_frames=5, steps=8)
RANDOM_WEIGHTS = "random (benchmark proxy; not a schedule for the released model)"


def predicted_fb_plan(changes, threshold: float, *, warmup: int, max_skips: int) -> list[bool]:
  """first_block's plan predicted from consecutive first-block changes (all steps full): the change since the
  last full step is taken as the sum of the consecutive ones (an upper bound, so the real plan caches at least
  as many steps)."""
  plan, acc, run = [], 0.0, 0
  for i, c in enumerate(changes):
    cached = False
    if i >= warmup and c is not None:
      acc += c
      cached = acc < threshold and run < max_skips
    run = run + 1 if cached else 0
    if not cached:
      acc = 0.0
    plan.append(cached)
  return plan


def auto_threshold(changes, fraction: float, *, warmup: int, max_skips: int) -> float:
  """The smallest threshold (on a geometric grid) whose predicted plan caches >= ``fraction`` of the steps."""
  import numpy as np
  finite = [c for c in changes if c is not None and c > 0]
  if not finite:
    return 0.05
  for thr in np.geomspace(min(finite) * 1.01, 50 * max(finite), 200):
    if sum(predicted_fb_plan(changes, float(thr), warmup=warmup, max_skips=max_skips)) >= fraction * len(changes):
      return float(thr)
  return float(50 * max(finite))


def _medians(times, kinds) -> dict:
  """Median step time per kind (``full`` / ``cached``) after that kind's first step (which compiles), and the
  compile excess of those first steps."""
  out, excess = {}, 0.0
  for kind in ("full", "cached"):
    ts = [t for t, k in zip(times, kinds) if k == kind]
    if not ts:
      out[kind] = None
      continue
    med = statistics.median(ts[1:]) if len(ts) > 1 else ts[0]
    out[kind] = med
    excess += max(ts[0] - med, 0.0)
  return {"full": out["full"], "cached": out["cached"], "compile_excess": excess}


def errors(out: dict, ref: dict, *, points: int, seed: int = 0) -> dict:
  """The error columns of one row against the exact sample (module docstring)."""
  import numpy as np

  from gen3r_jax.eval.image import psnr
  from gen3r_jax.eval.pointcloud import chamfer_distance
  z, zr = np.asarray(out["latents"], np.float64), np.asarray(ref["latents"], np.float64)
  res = {"latent_rel_l2": float(np.linalg.norm(z - zr) / np.linalg.norm(zr))}
  p = np.asarray(psnr(out["rgb"], ref["rgb"]))
  res["rgb_psnr_db"] = float(np.mean(p)) if np.isfinite(p).all() else float("inf")
  d, dr = np.asarray(out["depth"], np.float64), np.asarray(ref["depth"], np.float64)
  res["depth_rel"] = float(np.mean(np.abs(d - dr)) / max(np.mean(np.abs(dr)), 1e-12))
  a, b = out["pcds"].reshape(-1, 3), ref["pcds"].reshape(-1, 3)
  # the same pixels from both clouds (identical outputs give 0; independent draws would add a sampling floor)
  ok = np.flatnonzero(np.isfinite(a).all(1) & np.isfinite(b).all(1))
  pick = np.random.default_rng(seed).choice(ok, min(points, ok.size), replace=False)
  pa, pb = a[pick], b[pick]
  acc, comp = chamfer_distance(pa, pb)
  diag = float(np.linalg.norm(pb.max(0) - pb.min(0)))
  res.update(chamfer=(acc + comp) / 2, chamfer_rel=(acc + comp) / 2 / max(diag, 1e-12))
  return res


def run(*, tiny: bool = False, steps: int | None = None, num_frames: int | None = None, dtype: str | None = None,
        options=OPTIONS, fb_threshold: str = "auto", fb_skip: float = 0.45, points: int = 20000, seed: int = 0,
        schedule_out: str | None = None, log=print, on_row=None) -> tuple[dict, list[dict]]:
  """All rows (module docstring); returns ``(info, rows)``. ``on_row(info, rows)`` after each option (the CLI
  rewrites its JSON then, so a run cut short keeps the rows it finished)."""
  import jax
  import numpy as np
  from flax import nnx

  from bench.common import device_info, row_base
  from bench.sample import FIELDS, build_bundle
  from gen3r_jax.apps import demo
  from gen3r_jax.nn import fp8
  from gen3r_jax.sampling import cache as sc
  from gen3r_jax.sampling.pipeline import SampleOptions, generate, make_scheduler

  size = "tiny" if tiny else "full"
  steps = int(steps or (TINY["steps"] if tiny else 50))
  num_frames = int(num_frames or (TINY["num_frames"] if tiny else 49))
  dtype = dtype or ("float32" if tiny else "bfloat16")
  emulated = not fp8.fp8_supported()
  if emulated and any("fp8" in o for o in options):
    if not tiny:
      raise SystemExit(f"error: precision=fp8 needs an FP8 GPU (this is {jax.devices()[0].device_kind}); run "
                       f"with --tiny (FP8 emulated) or --options without fp8.")
    os.environ[fp8.EMULATE_ENV] = "1"        # CPU / no FP8 hardware: the emulated numerics (not its speed)
  info = device_info()
  info.update(size=size, steps=steps, num_frames=num_frames, dtype=dtype, fp8_emulated=emulated, seed=seed)
  tmp = tempfile.mkdtemp(prefix="gen3r_bench_accel_")
  try:
    t0 = time.perf_counter()
    bundle = build_bundle(size, dtype, dtype, tmp, seed=seed)
    jax.block_until_ready([jax.tree.leaves(nnx.state(getattr(bundle, f))) for f in FIELDS.values()])
    log(f"[accel] bundle ({size}, random weights) in {time.perf_counter() - t0:.1f} s")
    image = (demo.example_image(0)[None] / 255.0).astype(np.float32)
    prompt = "a palace on a hill, seen from the air"
    base = SampleOptions(task="1view", cameras="zoom_out", num_frames=num_frames, num_steps=steps, seed=seed)

    def sample(opts, **kw):
      t = time.perf_counter()
      out = generate(bundle, image, prompt, opts, progress=False, **kw)
      return time.perf_counter() - t, out

    wall, _ = sample(dataclasses.replace(base, num_steps=1))
    log(f"[accel] warm-up (1 step, compiles every other stage): {wall:.1f} s")
    rows, ref = [], None

    def row(name, opts, wall, out, **extra):
      kinds = out["cache"]["step_kinds"] or ["full"] * steps
      med = _medians(out["timings"]["denoise_steps"], kinds)
      r = row_base("accelerators", dtype=dtype, option=name, size=size, steps=steps, num_frames=num_frames,
                   cache=opts.cache, precision=opts.precision, cache_threshold=out["cache"].get("threshold"),
                   steps_cached=kinds.count("cached"), skipped_fraction=kinds.count("cached") / steps,
                   wall_s=wall, sample_s=wall - med["compile_excess"], compile_excess_s=med["compile_excess"],
                   denoise_s=float(out["timings"]["denoise"]), dit_full_step_s=med["full"],
                   dit_cached_step_s=med["cached"], step_kinds="".join("c" if k == "cached" else "F" for k in kinds),
                   fp8_emulated=emulated if opts.precision == "fp8" else None, **extra)
      if ref is not None:
        r.update(errors(out, ref, points=points, seed=seed))
        r["dit_full_step_vs_exact"] = (r["dit_full_step_s"] / rows[0]["dit_full_step_s"]
                                       if r["dit_full_step_s"] and rows[0]["dit_full_step_s"] else None)
        r["sample_speedup"] = rows[0]["sample_s"] / r["sample_s"]
      rows.append(r)
      log(f"[accel] {name}: {r['sample_s']:.1f} s, {r['steps_cached']}/{steps} cached"
          + (f", latent rel L2 {r['latent_rel_l2']:.3g}" if "latent_rel_l2" in r else ""))
      return r

    wall, exact = sample(base)
    row("exact", base, wall, exact)
    ref = exact                                  # the reference of every later row's error columns
    if on_row is not None:
      on_row(info, rows)

    need_calib = any(o.startswith("first_block") or o == "magcache" for o in options)
    schedule_path = fb_thr = None
    if need_calib:
      calib_opts = dataclasses.replace(base, cache="first_block", cache_threshold=0.0)
      wall, cal = sample(calib_opts, calibrate_cache=True)
      row("calibrate (all full, block-cache programs)", calib_opts, wall, cal)
      schedule_path = schedule_out or os.path.join(tmp, "schedule.json")
      sched = make_scheduler(base, bundle.scheduler_config)
      sc.write_schedule(schedule_path, sc.calibration_ratios([cal["cache"]]), num_steps=steps, shift=base.shift,
                        scheduler=sched, guidance_scale=base.guidance_scale,
                        meta={"weights": RANDOM_WEIGHTS, "checkpoint": None, "size": size, "seeds": [seed],
                              "device": info["device"], "date": info["date"]})
      knobs = sc.resolved(sc.CacheSettings("first_block"), steps)
      fb_thr = (auto_threshold(cal["cache"]["changes"], fb_skip, warmup=knobs["warmup"],
                               max_skips=knobs["max_skips"]) if fb_threshold == "auto" else float(fb_threshold))
      log(f"[accel] magcache schedule (random weights) -> {schedule_path}; first_block threshold {fb_thr:.4g}")

    for name in options:
      opts = dataclasses.replace(base, precision="fp8" if "fp8" in name else "exact")
      if name.startswith("first_block"):
        opts = dataclasses.replace(opts, cache="first_block", cache_threshold=fb_thr)
      elif name == "magcache":
        opts = dataclasses.replace(opts, cache="magcache", cache_schedule=schedule_path)
      elif name == "cfg":
        opts = dataclasses.replace(opts, cache="cfg")
      try:
        wall, out = sample(opts)
      except Exception as e:                     # one option failing (e.g. an FP8 lowering) keeps the other rows
        rows.append(row_base("accelerators", dtype=dtype, option=name, size=size, steps=steps,
                             error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]))
        log(f"[accel] {name}: FAILED {rows[-1]['error']}")
        continue
      row(name, opts, wall, out, schedule_weights=RANDOM_WEIGHTS if name == "magcache" else None)
      if on_row is not None:
        on_row(info, rows)
    info["magcache_schedule"] = schedule_path if schedule_out else None
    return info, rows
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _fmt(v, spec: str) -> str:
  return "—" if v is None else (spec.format(v) if isinstance(v, (int, float)) else str(v))


def table(info: dict, rows: list[dict]) -> str:
  """Markdown table of the rows (docs/sampling.md)."""
  head = (f"{info['device']} ({info['platform']}), jax {info['jax']}, {info['date']}; {info['size']}: "
          f"{info['num_frames']} frames, {info['steps']} steps, {info['dtype']}, random weights"
          + (", FP8 emulated" if info.get("fp8_emulated") else ""))
  lines = [head, "",
           "| option | sample s | speed-up | DiT full step s | DiT cached step s | cached steps | latent rel L2 "
           "| RGB PSNR dB | depth rel err | Chamfer (rel) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['option']} | failed: {r['error']} |" + " |" * 8)
      continue
    thr = f" (thr {r['cache_threshold']:.3g})" if r.get("cache_threshold") and r["cache"] == "first_block" else ""
    lines.append(
        f"| {r['option']}{thr} | {_fmt(r['sample_s'], '{:.2f}')} | {_fmt(r.get('sample_speedup'), '{:.2f}x')} | "
        f"{_fmt(r['dit_full_step_s'], '{:.3f}')} | {_fmt(r['dit_cached_step_s'], '{:.3f}')} | "
        f"{r['steps_cached']}/{r['steps']} | {_fmt(r.get('latent_rel_l2'), '{:.2e}')} | "
        f"{_fmt(r.get('rgb_psnr_db'), '{:.1f}')} | {_fmt(r.get('depth_rel'), '{:.2e}')} | "
        f"{_fmt(r.get('chamfer'), '{:.2e}')} ({_fmt(r.get('chamfer_rel'), '{:.1e}')}) |")
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--tiny", action="store_true", help="the CPU demo's tiny models (FP8 emulated without FP8 GPU)")
  ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 50; tiny 8)")
  ap.add_argument("--num-frames", type=int, default=None, help="frames (default 49; tiny 5)")
  ap.add_argument("--dtype", default=None, help="compute and parameter dtype (default bfloat16; tiny float32)")
  ap.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated subset of {OPTIONS}")
  ap.add_argument("--fb-threshold", default="auto", help="first_block threshold, or 'auto' (see --fb-skip)")
  ap.add_argument("--fb-skip", type=float, default=0.45, help="'auto': predicted fraction of cached steps")
  ap.add_argument("--points", type=int, default=20000, help="points per cloud for the Chamfer distance")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default=None, help="write {info, rows} as JSON here (and the schedule beside it)")
  args = ap.parse_args(argv)
  options = tuple(o.strip() for o in args.options.split(",") if o.strip())
  bad = [o for o in options if o not in OPTIONS]
  if bad:
    print(f"error: unknown option(s) {bad}; choose among {', '.join(OPTIONS)}.", file=sys.stderr)
    return 2
  sched_out = None if not args.out else os.path.splitext(args.out)[0] + "_magcache_schedule_random.json"

  def write(info, rows):
    if args.out:
      from gen3r_jax.atomic import atomic_path
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with atomic_path(args.out) as tmp:
        with open(tmp, "w") as f:
          json.dump({"info": info, "rows": rows}, f, indent=1, default=str)

  info, rows = run(tiny=args.tiny, steps=args.steps, num_frames=args.num_frames, dtype=args.dtype, options=options,
                   fb_threshold=args.fb_threshold, fb_skip=args.fb_skip, points=args.points, seed=args.seed,
                   schedule_out=sched_out, log=lambda s: print(s, flush=True), on_row=write)
  write(info, rows)
  print(table(info, rows))
  if args.out:
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
