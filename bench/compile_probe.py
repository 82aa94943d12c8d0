"""Where the sampler's cold compile time goes: profile XLA's compile of the slow-to-compile sampling stages.

    python -m bench.compile_probe --out compile.json [--what estimate,heads,adapter,clip] [--top 30]
    XLA_FLAGS=--xla_gpu_enable_triton_gemm=false python -m bench.compile_probe ...   # compare a flag

Builds the stage's full-size model with random weights on the device, then ahead-of-time lowers and compiles
(``.lower(...).compile()``) each stage's jitted function inside ``jax.profiler.trace`` and sums the host trace
events by name (the compiler passes, autotuners, LLVM/PTX steps appear as events), so the table shows which part
of XLA's pipeline costs the time. No persistent compilation cache is used. Stages (the sampler's shapes: one
560x560 view, 49 frames, 13 latent frames):

* ``estimate``: ``sampling.stages._vggt_estimate`` (VGGT aggregator + camera and depth heads on one view);
* ``heads``: ``sampling.geometry_decode.run_heads`` (camera, depth and point heads on 49 decoded frames);
* ``adapter``: the geometry adapter's jitted decode ``[1, 13, 70, 70, 16] -> [1, 49, 40, 40, 10240]``;
* ``clip``: ``models.clip.model.encode_videos``'s jitted visual tower on one preprocessed frame;
* ``rays``: ``sampling.conditioning._rays`` (the Plücker rays of 49 cameras at 560x560).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time


def _trace_events(logdir: str) -> list[dict]:
  from bench.trace_summary import load
  paths = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
  if not paths:
    return []
  return [e for e in load(paths[0]).get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]


def summarise(events: list[dict], top: int) -> list[tuple[str, float, int]]:
  """(name, total seconds, count) of host events, largest first (nested events each count their own time)."""
  tot, cnt = collections.Counter(), collections.Counter()
  for e in events:
    if e["name"].startswith("$"):          # Python frames of the profiler's own call stack
      continue
    tot[e["name"]] += e["dur"] / 1e6
    cnt[e["name"]] += 1
  return [(n, s, cnt[n]) for n, s in tot.most_common(top)]


def _stage_fns(what: str):
  """``(build() -> models, lower(models) -> Lowered)`` for one stage."""
  import jax
  import jax.numpy as jnp

  from bench.common import device_random
  from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
  from gen3r_jax.models.vggt.config import VGGTConfig
  from gen3r_jax.models.vggt.model import VGGT
  bf = dict(dtype="bfloat16", param_dtype="bfloat16")
  sds = jax.ShapeDtypeStruct
  if what == "estimate":
    from gen3r_jax.sampling.stages import _vggt_estimate
    return (lambda: device_random(VGGT, VGGTConfig.vggt_1b().replace(**bf)),
            lambda m: _vggt_estimate.lower(m, sds((1, 1, 560, 560, 3), jnp.float32)))
  if what == "heads":
    from gen3r_jax.sampling.geometry_decode import run_heads
    cfg = VGGTConfig.vggt_1b().replace(**bf)

    def lower(m):
      tok = sds((1, 49, 40, 40, 10 * cfg.embed_dim), jnp.bfloat16)
      return run_heads.lower(m.camera_head, m.depth_head, m.point_head, tok, patch_size=cfg.patch_size)
    return lambda: device_random(VGGT, cfg), lower
  if what == "adapter":
    from gen3r_jax.models.wan_vae.vae import decode_raw_jit
    return (lambda: device_random(GeometryAdapter, GeometryAdapterConfig.gen3r().replace(**bf)),
            lambda m: decode_raw_jit.lower(m, sds((1, 13, 70, 70, 16), jnp.float32), chunked=True))
  if what == "clip":
    from gen3r_jax.models.clip.model import CLIPVision, CLIPVisionConfig, _visual
    return (lambda: device_random(CLIPVision, CLIPVisionConfig.vit_h_14().replace(**bf)),
            lambda m: _visual.lower(m, sds((1, m.cfg.image_size, m.cfg.image_size, 3), jnp.float32)))
  if what == "rays":
    from gen3r_jax.sampling.conditioning import _rays
    return (lambda: None,
            lambda m: _rays.lower(sds((49, 4, 4), jnp.float32), sds((49, 3, 3), jnp.float32), 560, 560))
  raise ValueError(f"unknown stage {what!r}; choose from estimate, heads, adapter, clip, rays")


def probe(what: str, top: int = 30) -> dict:
  import jax
  build, lower = _stage_fns(what)
  model = build()
  jax.block_until_ready(jax.tree.leaves(model))
  logdir = tempfile.mkdtemp(prefix=f"compile_probe_{what}_")
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    t0 = time.perf_counter()
    lowered = lower(model)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
  rows = summarise(_trace_events(logdir), top)
  return {"stage": what, "lower_s": t1 - t0, "compile_s": t2 - t1, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "top_events": [{"name": n, "seconds": s, "count": c} for n, s, c in rows]}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--what", default="estimate,heads,adapter,clip")
  ap.add_argument("--top", type=int, default=30)
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  from bench.common import device_info
  res = {"info": device_info(), "stages": []}
  for what in args.what.split(","):
    r = probe(what, args.top)
    res["stages"].append(r)
    print(f"== {what}: lower {r['lower_s']:.1f} s, compile {r['compile_s']:.1f} s  (XLA_FLAGS={r['xla_flags']!r})")
    for e in r["top_events"]:
      print(f"  {e['seconds']:8.2f} s  x{e['count']:<5d} {e['name'][:110]}")
    sys.stdout.flush()
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
