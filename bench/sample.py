"""Full Gen3R sample benchmark: ``sampling.pipeline.generate`` end to end (VGGT camera estimate, umT5, CLIP,
control-video VAE encode, the CFG denoising loop, VAE decode, adapter + VGGT heads, host unprojection) on a
random full-size bundle built on device, and the sampler's compile time cold and with a warm persistent
compilation cache.

    python -m bench.run --what sample                     # 49 frames at 560x560, 50 steps, bf16 weights
    python -m bench.run --what sample --kw quick=true     # 10 steps; the 50-step time is also extrapolated
    python -m bench.sample --phase cold --cache-dir /tmp/c --json a.json   # one phase (what run() spawns)

Two processes share an empty cache directory (``jax_compilation_cache_dir``, every executable cached):

* ``cold``: builds the bundle, runs ``generate`` twice: the first call compiles everything (and fills the
  cache), the second is the steady-state sample. ``compile_s`` = first - second (compile + autotuning + first-call
  overheads of every stage); ``median_s`` = the second call.
* ``warm``: a fresh process, same bundle shapes: its first call reads the executables from the cache;
  ``compile_s`` = its first call - the cold process's steady call.

Each row has the stage times of ``generate`` (``stages_first`` / ``stages_steady``: cameras, text, control,
denoise, decode), the per-step times of the denoising loop (median/min/max over the steady steps) and its
TFLOP/s (the DiT's analytic FLOPs, batch 2 for CFG). With ``isolate=False`` (CPU smoke tests) both phases run
in this process, the warm one after ``jax.clear_caches()``. Random weights give meaningless images; the work
done is the real one.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = ("full", "tiny")
TINY = dict(num_steps=2, num_frames=1)   # bench.run --size tiny (CPU smoke): 1 frame, 2 steps
FIELDS = {"text_encoder": "text_encoder", "clip_image_encoder": "clip", "transformer": "transformer",
          "wan_vae": "vae", "geo_adapter": "geo_adapter", "vggt": "vggt"}      # bundle folder -> Gen3RBundle field


def bundle_configs(size: str, dtype: str, param_dtype: str) -> dict:
  """Component -> config object (full: the release sizes; tiny: the CPU demo's)."""
  from gen3r_jax.models.geometry_adapter.model import GeometryAdapterConfig
  from gen3r_jax.models.vggt.config import VGGTConfig
  from gen3r_jax.models.clip.model import CLIPVisionConfig
  from gen3r_jax.models.wan_dit.config import WanDiTConfig
  from gen3r_jax.models.umt5.t5 import UMT5Config
  from gen3r_jax.models.wan_vae.vae import WanVAEConfig
  from gen3r_jax.apps import demo
  if size == "tiny":
    cfgs = demo.tiny_configs()
  else:
    cfgs = {"text_encoder": UMT5Config.umt5_xxl(), "clip_image_encoder": CLIPVisionConfig.vit_h_14(),
            "transformer": WanDiTConfig.wan_1_3b(), "wan_vae": WanVAEConfig.wan2_1(),
            "geo_adapter": GeometryAdapterConfig.gen3r(), "vggt": VGGTConfig.vggt_1b()}
  return {k: c.replace(dtype=dtype, param_dtype=param_dtype) for k, c in cfgs.items()}


def build_bundle(size: str, dtype: str, param_dtype: str, tmp: str, seed: int = 0):
  """A random :class:`Gen3RBundle` made on device (no checkpoint, no host copy of a full-size weight)."""
  import jax.numpy as jnp

  from bench.common import device_random
  from gen3r_jax.apps.bundle import COMPONENTS, Gen3RBundle
  from gen3r_jax.models.umt5.tokenizer import UMT5Tokenizer
  from gen3r_jax.apps import demo
  cfgs = bundle_configs(size, dtype, param_dtype)
  bundle = Gen3RBundle()
  for i, (comp, (_, cls_path)) in enumerate(COMPONENTS.items()):
    mod, name = cls_path.split(":")
    model = device_random(getattr(importlib.import_module(mod), name), cfgs[comp], seed=seed + i)
    setattr(bundle, FIELDS[comp], model)
  fc2 = bundle.vggt.camera_head.pose_branch.fc2            # keep the random field of view positive (demo.py)
  fc2.kernel[...] = fc2.kernel[...].at[:, 7:].multiply(0.05)
  fc2.bias[...] = fc2.bias[...].at[7:].set(jnp.asarray(0.3, fc2.bias[...].dtype))
  bundle.tokenizer = UMT5Tokenizer.from_pretrained(demo.train_tokenizer(os.path.join(tmp, "tok")))
  bundle.scheduler_config = {"_class_name": "FlowUniPCMultistepScheduler", "num_train_timesteps": 1000,
                             "shift": 1.0, "solver_order": 2, "solver_type": "bh2",
                             "prediction_type": "flow_prediction", "predict_x0": True,
                             "lower_order_final": True, "final_sigmas_type": "zero"}
  return bundle


def _generate(bundle, image, opts) -> tuple[float, dict]:
  from gen3r_jax.sampling.pipeline import generate
  t0 = time.perf_counter()
  out = generate(bundle, image, "a palace on a hill, seen from the air", opts, progress=False)
  return time.perf_counter() - t0, out["timings"]


def _stages(timings: dict) -> dict:
  return {k: float(v) for k, v in timings.items() if not isinstance(v, list)}


def phase(name: str, *, size: str = "full", dtype: str = "bfloat16", param_dtype: str | None = None,
          num_steps: int = 50, num_frames: int = 49, cache_dir: str | None = None, steady: bool = True) -> dict:
  """One process's measurement (see module docstring): bundle build, first ``generate``, optionally a second."""
  import jax
  import numpy as np
  from flax import nnx

  from bench.common import gib, now_utc, peak_memory_bytes, set_compilation_cache
  from gen3r_jax.apps import demo
  from gen3r_jax.sampling.pipeline import SampleOptions
  set_compilation_cache(cache_dir)
  param_dtype = param_dtype or dtype
  tmp = tempfile.mkdtemp(prefix="gen3r_bench_sample_")
  try:
    t0 = time.perf_counter()
    bundle = build_bundle(size, dtype, param_dtype, tmp)
    jax.block_until_ready([jax.tree.leaves(nnx.state(getattr(bundle, f))) for f in FIELDS.values()])
    init_s = time.perf_counter() - t0
    image = (demo.example_image(0)[None] / 255.0).astype(np.float32)
    opts = SampleOptions(task="1view", cameras="zoom_out", num_frames=num_frames, num_steps=num_steps, seed=0)
    first_s, first = _generate(bundle, image, opts)
    out = {"phase": name, "date": now_utc(), "init_s": init_s, "first_s": first_s, "stages_first": _stages(first),
           "denoise_compile_s": float(first["denoise_compile"])}
    if steady:
      steady_s, second = _generate(bundle, image, opts)
      steps = [float(s) for s in second["denoise_steps"]]
      out.update(steady_s=steady_s, stages_steady=_stages(second), step_times_s=steps)
    out["peak_gib"] = gib(peak_memory_bytes())
    out["cache_entries"] = len(os.listdir(cache_dir)) if cache_dir and os.path.isdir(cache_dir) else None
    return out
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _spawn(name: str, kw: dict, cache_dir: str, steady: bool, timeout: float | None,
           xla_flags: str | None = None) -> dict:
  """One phase in a fresh process (killed with its children on timeout; ``xla_flags`` appended to XLA_FLAGS)."""
  fd, path = tempfile.mkstemp(suffix=f"_{name}.json")
  os.close(fd)
  cmd = [sys.executable, "-m", "bench.sample", "--phase", name, "--cache-dir", cache_dir, "--json", path,
         "--kw", json.dumps(kw)] + ([] if steady else ["--no-steady"])
  env = dict(os.environ)
  if xla_flags:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
  proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          start_new_session=True, env=env)
  try:
    try:
      rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      raise
    if rc != 0:
      raise subprocess.CalledProcessError(rc, cmd)
    with open(path) as f:
      return json.load(f)
  finally:
    os.remove(path)


def _backend_in_use() -> bool:
  """True when this process has initialised a non-CPU JAX backend (which then holds most of the device)."""
  try:
    from jax._src import xla_bridge
    if not xla_bridge.backends_are_initialized():
      return False
  except (ImportError, AttributeError):
    return False
  import jax
  return jax.default_backend() != "cpu"


def run(size: str = "full", dtype: str = "bfloat16", *, param_dtype: str | None = None, num_steps: int | None = None,
        num_frames: int = 49, quick: bool = False, isolate: bool = True, warm: bool = True,
        cache_dir: str | None = None, timeout: float | None = None, xla_flags: str | None = None) -> list[dict]:
  """The cold row (first + steady sample) and, with ``warm``, the warm-cache row; ``num_steps`` (SampleOptions'
  name) denoising steps, default 50, ``quick``: 10.
  ``xla_flags``: extra XLA flags for both phases (compile / autotuning variants; needs ``isolate``)."""
  import jax  # noqa: F401  (no backend is initialised here: the phases run in their own processes)
  if size not in SIZES:
    raise ValueError(f"size must be one of {SIZES}, got {size!r}")
  if xla_flags and not isolate:
    raise ValueError("bench.sample: xla_flags needs isolate=True (XLA reads its flags when a process starts)")
  if isolate and _backend_in_use():
    raise RuntimeError("bench.sample: this process already holds the accelerator (JAX preallocates it), so the cold "
                       "and warm phases could not get its memory; run the sample benchmark in its own process "
                       "(bench.run isolates benchmarks by default) or pass isolate=False")
  num_steps = int(num_steps or (10 if quick else 50))
  kw = dict(size=size, dtype=dtype, param_dtype=param_dtype or dtype, num_steps=num_steps, num_frames=num_frames)
  own_cache = cache_dir is None
  cache_dir = cache_dir or tempfile.mkdtemp(prefix="gen3r_bench_cache_")
  shutil.rmtree(cache_dir, ignore_errors=True)             # cold means cold
  try:
    if isolate:
      t0 = time.monotonic()
      cold = _spawn("cold", kw, cache_dir, True, None if timeout is None else 0.65 * timeout, xla_flags)
      hot = None
      if warm:
        left = None if timeout is None else timeout - (time.monotonic() - t0)
        try:
          hot = _spawn("warm", kw, cache_dir, False, left, xla_flags)
        except (subprocess.SubprocessError, OSError) as e:   # keep the cold row
          hot = {"error": f"warm phase: {type(e).__name__}: {e}"}
    else:
      cold = phase("cold", cache_dir=cache_dir, **kw)
      if warm:
        jax.clear_caches()
        hot = phase("warm", cache_dir=cache_dir, steady=False, **kw)
        hot["note"] = "same process after jax.clear_caches() (isolate=False)"
      else:
        hot = None
  finally:
    if own_cache:
      shutil.rmtree(cache_dir, ignore_errors=True)
  rows = rows_from(cold, hot, kw, isolate)
  for r in rows:
    r["xla_flags"] = xla_flags
  return rows


def rows_from(cold: dict, hot: dict | None, kw: dict, isolate: bool) -> list[dict]:
  from bench.common import row_base
  from bench.dit import forward_flops
  cfgs = bundle_configs(kw["size"], kw["dtype"], kw["param_dtype"])
  dit = cfgs["transformer"]
  f = (kw["num_frames"] - 1) // 4 + 1
  step_flops = forward_flops(dit, 2, f, 70, 140)           # CFG batch 2, joint latents 70 x 140
  steps = cold["step_times_s"][1:] or cold["step_times_s"]
  step_med = statistics.median(steps)
  n = kw["num_steps"]
  shapes = {"images": [1, 560, 560, 3], "latents": [1, f, 70, 140, 16], "frames": kw["num_frames"]}
  common = dict(dtype=kw["dtype"], size=kw["size"], param_dtype=kw["param_dtype"], num_steps=n,
                num_frames=kw["num_frames"], shapes=shapes, task="1view", cameras="zoom_out", guidance_scale=5.0,
                processes="two (cold, warm)" if isolate else "one")
  compile_cold = cold["first_s"] - cold["steady_s"]
  est = cold["steady_s"] + (50 - n) * step_med if n != 50 else cold["steady_s"]
  cold_row = row_base(
      "sample_full", ref_key="sample", **common, phase="cold", init_s=cold["init_s"],
      compile_s=compile_cold, first_call_s=cold["first_s"], median_s=cold["steady_s"], min_s=cold["steady_s"],
      max_s=cold["steady_s"], repeats=1, spread=0.0,
      step_median_s=step_med, step_min_s=min(steps), step_max_s=max(steps),
      step_spread=(max(steps) - min(steps)) / step_med, steps_timed=len(steps),
      denoise_compile_s=cold["denoise_compile_s"] - step_med, sample_50_steps_s=est,
      sample_50_steps_estimated=n != 50, tflop=step_flops / 1e12, tflops=step_flops / step_med / 1e12,
      stages_first=cold["stages_first"], stages_steady=cold["stages_steady"], peak_gib=cold["peak_gib"],
      cache_entries=cold["cache_entries"],
      flops_counted="tflop/tflops: one denoising step (DiT batch 2, hand formula) / steady step median")
  rows = [cold_row]
  if hot is not None and "error" in hot:
    rows.append(row_base("sample_compile_warm_cache", ref_key="sample_warm", **common, error=hot["error"]))
  elif hot is not None:
    rows.append(row_base(
        "sample_compile_warm_cache", ref_key="sample_warm", **common, phase="warm", init_s=hot["init_s"],
        compile_s=hot["first_s"] - cold["steady_s"], first_call_s=hot["first_s"],
        compile_cold_s=compile_cold, denoise_compile_s=hot["denoise_compile_s"] - step_med,
        stages_first=hot["stages_first"], peak_gib=hot["peak_gib"], cache_entries=hot["cache_entries"],
        note=hot.get("note", "fresh process, persistent compilation cache filled by the cold process")))
  return rows


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--phase", required=True, choices=("cold", "warm"))
  ap.add_argument("--cache-dir", required=True)
  ap.add_argument("--json", required=True, help="write the phase result here")
  ap.add_argument("--kw", default="{}", help="JSON dict of phase() keywords")
  ap.add_argument("--no-steady", action="store_true")
  args = ap.parse_args(argv)
  res = phase(args.phase, cache_dir=args.cache_dir, steady=not args.no_steady, **json.loads(args.kw))
  with open(args.json, "w") as f:
    json.dump(res, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
