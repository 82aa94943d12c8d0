"""Opt-in sampling accelerators (issue 18): step caches (first_block, magcache, cfg) and FP8 GEMMs.

The exact path stays exact (cache=none and a first_block threshold of 0 give today's outputs bit for bit), a forced
plan caches exactly the named steps, a cached step is the head on (first block + the stored residual), the CFG cache
uses the stored cond - uncond difference, the calibration tool writes a schedule the sampler reads back, FP8 is
close to the exact DiT, and every bad value is a one-line error before anything compiles."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.apps import demo
from gen3r_jax.apps.bundle import load_bundle
from gen3r_jax.apps.calibrate_cache import calibrate
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import create, with_config
from gen3r_jax.nn import fp8
from gen3r_jax.sampling import cache as sc
from gen3r_jax.sampling.denoise import cfg_context, denoise
from gen3r_jax.sampling.pipeline import SampleOptions, check_options, generate
from gen3r_jax.sampling.schedulers import get_scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTS = SampleOptions(task="1view", cameras="zoom_out", num_frames=1, num_steps=4, seed=3)
STEPS = 5


# ---------------------------------------------------------------------------------------------------------------
# the loop on a tiny random DiT (no pipeline)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dit():
  cfg = WanDiTConfig.tiny()
  model = create(cfg, seed=0)
  k = jax.random.split(jax.random.key(1), 6)
  f, h, w = 2, 4, 8                                       # joint latents [1, 2, 4, 8, 16] -> 2 x 2 x 4 tokens
  kw = dict(context=cfg_context([jax.random.normal(k[0], (5, cfg.text_dim))],
                                [jax.random.normal(k[1], (3, cfg.text_dim))], cfg),
            clip_fea=jax.random.normal(k[2], (1, cfg.clip_tokens, cfg.clip_dim)),
            y=jax.random.normal(k[3], (1, f, h, w, cfg.cond_dim)),
            y_camera=jax.random.normal(k[4], (1, f, 8 * h, 8 * w, cfg.in_dim_control_adapter)))
  x0 = jax.random.normal(k[5], (1, f, h, w, cfg.out_dim))
  sched = get_scheduler("unipc")
  return model, sched, sched.set_timesteps(STEPS, 5.0), x0, kw


def test_threshold_zero_is_the_exact_loop_and_the_split_programs_agree(dit):
  model, sched, schedule, x0, kw = dit
  exact = denoise(model, sched, schedule, x0, guidance_scale=5.0, progress=False, **kw)
  zero = sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False,
                           settings=sc.CacheSettings("first_block", threshold=0.0), **kw)
  np.testing.assert_array_equal(np.asarray(zero.latents), np.asarray(exact.latents))
  assert zero.cache_stats["exact_loop"] and zero.cache_stats["cached_steps"] == 0
  # the block-cache programs with every step computed (calibration): the same sample up to float rounding
  # (the first block and the rest are separate programs, which XLA fuses differently)
  split = sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False, calibrate=True,
                            settings=sc.CacheSettings("first_block", threshold=0.0), **kw)
  np.testing.assert_allclose(np.asarray(split.latents), np.asarray(exact.latents), rtol=0, atol=1e-5)
  assert split.step_kinds == ["full"] * STEPS and not split.cache_stats["exact_loop"]
  assert split.cache_stats["changes"][0] is None and all(c > 0 for c in split.cache_stats["changes"][1:])
  assert all(len(r) == 2 for r in split.cache_stats["ratios"][1:])        # per CFG row, every consecutive pair


def test_forced_plan_caches_exactly_those_steps_and_a_cached_step_is_head_of_h1_plus_residual(dit):
  model, sched, schedule, x0, kw = dit
  out = sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False, record=True,
                          settings=sc.CacheSettings("magcache", steps="2,3"), **kw)
  assert out.step_kinds == ["full", "full", "cached", "cached", "full"]
  assert out.cache_stats["cached"] == [2, 3] and out.cache_stats["full_steps"] == 3
  graphdef, params = nnx.split(model)
  g = jnp.float32(5.0)
  ts = jnp.asarray(np.asarray(schedule.timesteps, np.float32))
  args = (kw["context"], kw["clip_fea"], kw["y"], kw["y_camera"])
  # the residual stored at step 1 (the last full step): blocks 2..N minus the first block, on step 1's input
  m = nnx.merge(graphdef, params)
  h1_s1, cond_s1 = sc.first_block(params, graphdef, jnp.asarray(out.history[0]), ts[1], *args, use_cfg=True)
  grid = m.token_grid(x0.shape)
  h_last, _ = jax.jit(lambda h, c: m.run_blocks(h, c, grid, start=1))(h1_s1, cond_s1)
  residual = h_last - h1_s1
  for step in (2, 3):                                    # both cached steps reuse step 1's residual
    h1, cond = sc.first_block(params, graphdef, jnp.asarray(out.history[step - 1]), ts[step], *args, use_cfg=True)
    noise = jax.jit(lambda h, c: m.output(h, c, grid))(h1 + residual, cond)
    u, c = np.split(np.asarray(noise), 2)
    np.testing.assert_allclose(out.guided[step], u + 5.0 * (c - u), rtol=0, atol=1e-5)
    # ...and differs from what the full DiT would have predicted (the cache did change the step)
    x_in = jnp.concatenate([jnp.asarray(out.history[step - 1])] * 2)
    full = np.asarray(m(x_in, jnp.broadcast_to(ts[step], (2,)), kw["context"],
                        clip_fea=jnp.concatenate([kw["clip_fea"]] * 2), y=jnp.concatenate([kw["y"]] * 2),
                        y_camera=jnp.concatenate([kw["y_camera"]] * 2)))
    fu, fc = np.split(full, 2)
    assert np.abs(out.guided[step] - (fu + 5.0 * (fc - fu))).max() > 1e-4
  del g


def test_cfg_cache_reuses_the_difference_on_its_steps(dit):
  model, sched, schedule, x0, kw = dit
  out = sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False, record=True,
                          settings=sc.CacheSettings("cfg", steps="3"), **kw)
  assert out.step_kinds == ["full", "full", "full", "cached", "full"]
  ts = np.asarray(schedule.timesteps, np.float32)
  both = lambda x, t: np.split(np.asarray(model(                                        # noqa: E731
      jnp.concatenate([x] * 2), jnp.full((2,), t), kw["context"], clip_fea=jnp.concatenate([kw["clip_fea"]] * 2),
      y=jnp.concatenate([kw["y"]] * 2), y_camera=jnp.concatenate([kw["y_camera"]] * 2))), 2)
  u2, c2 = both(jnp.asarray(out.history[1]), ts[2])       # the last full step stores d = cond - uncond
  c3 = np.asarray(model(jnp.asarray(out.history[2]), jnp.full((1,), ts[3]), kw["context"][1:],
                        clip_fea=kw["clip_fea"], y=kw["y"], y_camera=kw["y_camera"]))
  np.testing.assert_allclose(out.guided[3], c3 + 4.0 * (c2 - u2), rtol=0, atol=1e-5)


def test_plans():
  assert sc.cfg_plan(10, warmup=3, max_skips=2) == [False] * 3 + [False, True, True, False, True] + [False] * 2
  flat = np.ones((8, 2))
  assert sc.magcache_plan(flat, threshold=0.1, max_skips=2, warmup=2) == [False, False] + [True, True, False] * 2
  drift = np.full((8, 2), 1.2)                            # 20 % per step: the error passes 0.1 at once
  assert sc.magcache_plan(drift, threshold=0.1, max_skips=2, warmup=2) == [False] * 8
  r = sc.resolved(sc.CacheSettings("magcache"), 50)
  assert (r["threshold"], r["max_skips"], r["warmup"]) == (0.12, 2, 10)


# ---------------------------------------------------------------------------------------------------------------
# FP8
# ---------------------------------------------------------------------------------------------------------------

def test_fp8_dot_and_dit_are_close_to_exact(dit):
  x = jax.random.normal(jax.random.key(0), (64, 96))
  w = jax.random.normal(jax.random.key(1), (96, 48)) * jnp.linspace(0.1, 3.0, 48)   # per-channel spread
  ref = np.asarray(x @ w)
  err = np.linalg.norm(np.asarray(fp8.fp8_dot(x, w)) - ref) / np.linalg.norm(ref)
  assert 1e-4 < err < 0.05                                # really quantised, and e4m3-accurate
  model, _, schedule, x0, kw = dit
  q = with_config(model, gemm="fp8")
  assert q.cfg.gemm == "fp8" and q.blocks.ffn.fc1.fp8 and not q.head.head.fp8
  assert jax.tree.leaves(nnx.state(q))[0] is jax.tree.leaves(nnx.state(model))[0]     # parameters shared
  args = (x0, jnp.full((1,), 500.0), kw["context"][1:])
  extra = dict(clip_fea=kw["clip_fea"], y=kw["y"], y_camera=kw["y_camera"])
  a, b = np.asarray(model(*args, **extra)), np.asarray(q(*args, **extra))
  rel = np.linalg.norm(b - a) / np.linalg.norm(a)
  assert 1e-5 < rel < 0.05, rel


def test_fp8_needs_hardware_or_the_emulation_switch(monkeypatch):
  monkeypatch.delenv(fp8.EMULATE_ENV, raising=False)
  with pytest.raises(Gen3RInputError, match="precision=fp8 needs a GPU with FP8 tensor cores") as e:
    check_options(dataclasses.replace(OPTS, precision="fp8"), 1)
  assert "\n" not in str(e.value) and fp8.EMULATE_ENV in str(e.value)
  monkeypatch.setenv(fp8.EMULATE_ENV, "1")
  check_options(dataclasses.replace(OPTS, precision="fp8"), 1)


# ---------------------------------------------------------------------------------------------------------------
# the pipeline on the tiny demo bundle, the calibration tool, bad values
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  path = demo.ensure_demo_bundle(str(tmp_path_factory.mktemp("demo")), log=lambda *a: None)
  image = demo.example_image(0)[None].astype(np.float32) / 255.0
  return path, load_bundle(path), image


def test_pipeline_none_and_threshold_zero_are_exact_and_stats_count_steps(tiny):
  _, bundle, image = tiny
  assert OPTS.cache == "none" and OPTS.precision == "exact"               # the defaults are the exact path
  base = generate(bundle, image, "a palace", OPTS, progress=False)
  zero = generate(bundle, image, "a palace", dataclasses.replace(OPTS, cache="first_block", cache_threshold=0.0),
                  progress=False)
  for k in ("latents", "rgb", "depth", "pcds"):
    np.testing.assert_array_equal(zero[k], base[k], err_msg=k)
  assert base["stats"]["stages"]["denoise"]["full_steps"] == 4 and base["cache"]["kind"] == "none"
  assert zero["stats"]["stages"]["denoise"]["cached_steps"] == 0


def test_calibration_writes_a_schedule_the_sampler_reads_back(tiny, tmp_path):
  path, bundle, image = tiny
  out = str(tmp_path / "sched" / "schedule.json")
  data = calibrate(path, out, bundle=bundle, num_frames=1, num_steps=4, seeds=(0,), progress=False,
                   log=lambda *a: None)
  saved = json.load(open(out))
  assert saved["num_steps"] == 4 and saved["scheduler"] == "FlowUniPC" and saved["weights"] == "checkpoint"
  assert np.asarray(saved["ratios"]).shape == (4, 2) and saved["ratios"][0] == [1.0, 1.0]
  assert saved == json.loads(json.dumps(data))
  opts = dataclasses.replace(OPTS, cache="magcache", cache_schedule=out, cache_threshold=10.0, cache_warmup=1)
  check_options(opts, 1)
  res = generate(bundle, image, "a palace", opts, progress=False)
  want = sc.magcache_plan(saved["ratios"], threshold=10.0, max_skips=2, warmup=1)
  assert res["cache"]["step_kinds"] == ["cached" if c else "full" for c in want] and sum(want) == 2
  assert res["stats"]["stages"]["denoise"]["cached_steps"] == 2


@pytest.mark.parametrize("change, message", [
    (dict(cache="teacache"), "cache must be one of none, first_block, magcache, cfg, got 'teacache'"),
    (dict(cache="first_block", cache_threshold=-0.1), "cache_threshold must be a finite number >= 0"),
    (dict(cache="first_block", cache_steps="0,2"), "cache_steps \\[0\\] out of range"),
    (dict(cache="first_block", cache_steps="2,x"), "cache_steps must be comma-separated step indices"),
    (dict(cache="none", cache_steps="2"), "cache_steps / cache_schedule need a cache kind"),
    (dict(cache="first_block", cache_max_skips=0), "cache_max_skips must be a positive integer"),
    (dict(cache="magcache"), "cache=magcache needs cache_schedule="),
    (dict(cache="magcache", cache_schedule="missing.json"), "cache_schedule 'missing.json' not found"),
    (dict(cache="cfg", guidance_scale=1.0), "cache=cfg reuses the unconditional prediction"),
    (dict(precision="fp16"), "precision must be one of exact, fp8"),
])
def test_bad_values_are_one_line_errors(change, message):
  with pytest.raises(Gen3RInputError, match=message) as e:
    check_options(dataclasses.replace(OPTS, **change), 1)
  assert "\n" not in str(e.value)


def test_schedule_for_another_run_is_refused(tmp_path):
  path = str(tmp_path / "s.json")
  sc.write_schedule(path, np.ones((50, 2)), num_steps=50, shift=5.0, scheduler="FlowUniPC", guidance_scale=5.0)
  magcache = dataclasses.replace(OPTS, cache="magcache", cache_schedule=path)
  with pytest.raises(Gen3RInputError, match="calibrated for 50 steps, this run has num_steps=4"):
    check_options(magcache, 1)
  ok = dataclasses.replace(magcache, num_steps=50)
  check_options(ok, 1)
  with pytest.raises(Gen3RInputError, match="calibrated for shift=5.0, this run has shift=3.0"):
    check_options(dataclasses.replace(ok, shift=3.0), 1)
  with pytest.raises(Gen3RInputError, match="calibrated with the FlowUniPC scheduler, this run uses FlowDPMpp"):
    check_options(dataclasses.replace(ok, scheduler="dpmpp"), 1)
  with pytest.raises(Gen3RInputError, match="calibrated with classifier-free guidance"):
    check_options(dataclasses.replace(ok, guidance_scale=1.0), 1)
  (tmp_path / "junk.json").write_text("{}")
  with pytest.raises(Gen3RInputError, match="not a magcache schedule"):
    check_options(dataclasses.replace(ok, cache_schedule=str(tmp_path / "junk.json")), 1)


def test_cli_bad_cache_exits_2_before_loading(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  image = demo.ensure_example_image(str(tmp_path))
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "sample.py"), "--config",
                      os.path.join(ROOT, "configs", "sample.py"), f"--config.out={tmp_path}/o", "--config.prompt=x",
                      f"--config.checkpoint={tmp_path}/no_checkpoint", f"--config.images={image}",
                      "--config.cache=magcache", "--config.cache_schedule=nope.json"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 2, r.stderr[-2000:]
  errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  assert len(errors) == 1 and "cache_schedule 'nope.json' not found" in errors[0]
