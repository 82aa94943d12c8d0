"""Opt-in sampling accelerators (issue 18): step caches (first_block, magcache, cfg) and FP8 GEMMs.

The exact path stays exact (cache=none and a first_block threshold of 0 give today's outputs bit for bit), a forced
plan caches exactly the named steps, first_block decides from the first block's change since the last full step, a
cached step is the head on (first block + the stored residual), the CFG cache uses the stored cond - uncond
difference, calibration computes every step and writes a schedule the sampler reads back (and refuses for another
run), FP8 is close to the exact DiT and finite on zeros and large values, and every bad value is a one-line error
before anything compiles (a cache with a mesh included)."""

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

from configs import sample as sample_config
from gen3r_jax.apps import demo
from gen3r_jax.apps import sample as sample_app
from gen3r_jax.apps.bundle import load_bundle
from gen3r_jax.apps.calibrate_cache import calibrate, parse_seeds
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


def _first_block_outputs(model, schedule, x0, kw, history):
  """``h1`` of every step, recomputed from the sampler's recorded inputs (step i reads the latents after step
  i - 1), as float64 numpy."""
  graphdef, params = nnx.split(model)
  ts = jnp.asarray(np.asarray(schedule.timesteps, np.float32))
  inputs = [np.asarray(x0)] + [np.asarray(h) for h in history[:-1]]
  return [np.asarray(sc.first_block(params, graphdef, jnp.asarray(x), ts[i], kw["context"], kw["clip_fea"], kw["y"],
                                    kw["y_camera"], use_cfg=True)[0], np.float64) for i, x in enumerate(inputs)]


def _first_block_rule(h1s, *, threshold, warmup, max_skips):
  """The first_block decision by hand: cached when the relative L1 change of h1 since the last FULL step is below
  the threshold, after the warm-up, at most max_skips in a row. ``(kinds, changes)``."""
  kinds, changes, ref, run = ["full"], [None], h1s[0], 0
  for i in range(1, len(h1s)):
    change = np.abs(h1s[i] - ref).mean() / np.abs(ref).mean()
    cached = i >= warmup and run < max_skips and change < threshold
    run = run + 1 if cached else 0
    ref = ref if cached else h1s[i]
    kinds.append("cached" if cached else "full")
    changes.append(change)
  return kinds, changes


@pytest.mark.parametrize("threshold, warmup, max_skips, expected", [
    (1.0, 2, 1, ["full", "full", "cached", "full", "cached"]),   # every change < 1: the warm-up and max skips decide
    (0.034, 1, 3, None),                                          # the threshold decides (checked by hand below)
])
def test_first_block_decides_from_the_change_since_the_last_full_step(dit, threshold, warmup, max_skips, expected):
  model, sched, schedule, x0, kw = dit
  out = sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False, record=True,
                          settings=sc.CacheSettings("first_block", threshold=threshold, warmup=warmup,
                                                    max_skips=max_skips), **kw)
  kinds, changes = _first_block_rule(_first_block_outputs(model, schedule, x0, kw, out.history),
                                     threshold=threshold, warmup=warmup, max_skips=max_skips)
  assert out.step_kinds == kinds and out.cache_stats["cached"] == [i for i, k in enumerate(kinds) if k == "cached"]
  reported = out.cache_stats["changes"]
  assert reported[0] is None
  np.testing.assert_allclose(reported[1:], changes[1:], rtol=1e-4)
  if expected is not None:
    assert kinds == expected
  else:
    # not vacuous: some measured step is over the threshold (computed) and some under it (cached), and a step
    # after a cached one is compared with the last full step, not with the cached one
    measured = [(c, k) for c, k in zip(changes[1:], kinds[1:])]
    assert any(k == "full" and c >= threshold for c, k in measured)
    assert any(k == "cached" and c < threshold for c, k in measured)
    assert "cached" in kinds[1:-1] and kinds[kinds.index("cached") + 1] == "full"


def test_calibration_computes_every_step_whatever_the_settings(dit):
  model, sched, schedule, x0, kw = dit
  for settings in (sc.CacheSettings("first_block", threshold=10.0), sc.CacheSettings("magcache", steps="2,3")):
    out = sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False, calibrate=True,
                            settings=settings, **kw)
    assert out.step_kinds == ["full"] * STEPS and out.cache_stats["calibrate"], settings
    assert out.cache_stats["ratios"][0] is None and all(len(r) == 2 for r in out.cache_stats["ratios"][1:])
    ratios = sc.calibration_ratios([out.cache_stats])
    assert ratios.shape == (STEPS, 2) and np.isfinite(ratios).all() and (ratios[1:] != 1.0).all()
  # the same threshold without calibrate does cache, and its stats are not calibration data
  cached = sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False,
                             settings=sc.CacheSettings("first_block", threshold=10.0), **kw)
  assert "cached" in cached.step_kinds
  with pytest.raises(Gen3RInputError, match=r"steps \[\d.*\] have no residual ratio \(cached steps\)"):
    sc.calibration_ratios([cached.cache_stats])
  with pytest.raises(Gen3RInputError, match="calibrating needs num_steps >= 2"):
    sc.calibration_ratios([{"ratios": [None]}])
  with pytest.raises(Gen3RInputError, match="calibration measures the block caches"):
    sc.denoise_cached(model, sched, schedule, x0, guidance_scale=5.0, progress=False, calibrate=True,
                      settings=sc.CacheSettings("cfg"), **kw)


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


def test_fp8_is_finite_on_zeros_and_large_values():
  q, scale = fp8.quantize(jnp.zeros((4, 3)))               # amax 0: scale 1, not a flushed subnormal (0/0 = NaN)
  assert float(scale) == 1.0 and np.asarray(q.astype(jnp.float32)).tolist() == [[0.0] * 3] * 4
  w = jax.random.normal(jax.random.key(2), (8, 3)).at[:, 1].set(0.0)          # one zero weight column
  y = np.asarray(fp8.fp8_dot(jnp.ones((2, 8)), w))
  assert np.isfinite(y).all() and (y[:, 1] == 0).all()
  np.testing.assert_allclose(y[:, [0, 2]], np.asarray(jnp.ones((2, 8)) @ w)[:, [0, 2]], rtol=0.1, atol=0.05)
  q, scale = fp8.quantize(jnp.array([1e-37, 0.0]))          # amax / 448 would be subnormal: floored, finite
  assert np.isfinite(np.asarray(q.astype(jnp.float32))).all() and float(scale) > 0
  big = jnp.array([[1e4, -3e5, 448.5, 5.0], [2e3, 7e4, -1e5, 0.0]])           # far above e4m3's 448
  q, scale = fp8.quantize(big)
  qf = np.asarray(q.astype(jnp.float32))
  assert np.isfinite(qf).all() and np.abs(qf).max() == 448.0                 # the amax lands on 448, none beyond
  np.testing.assert_allclose(qf * float(scale), np.asarray(big), rtol=0.07, atol=float(scale) * 2 ** -9)
  qw, sw = fp8.quantize(big, axis=0)                                          # per column, each above 448
  assert np.isfinite(np.asarray(qw.astype(jnp.float32))).all() and sw.shape == (1, 4)
  assert (np.abs(np.asarray(qw.astype(jnp.float32))).max(axis=0) == 448.0).all()
  y = np.asarray(fp8.fp8_dot(big, big.T))
  assert np.isfinite(y).all()
  np.testing.assert_allclose(y, np.asarray(big @ big.T), rtol=0.1)


@pytest.mark.parametrize("capability", [None, (8, 6), (7, 0)])
def test_fp8_is_refused_without_fp8_hardware_unless_emulated(monkeypatch, capability):
  monkeypatch.setattr(fp8, "gpu_capability", lambda device=None: capability)    # CPU / pre-Ada GPU
  monkeypatch.delenv(fp8.EMULATE_ENV, raising=False)
  with pytest.raises(Gen3RInputError, match="precision=fp8 needs a GPU with FP8 tensor cores") as e:
    check_options(dataclasses.replace(OPTS, precision="fp8"), 1)
  assert "\n" not in str(e.value) and fp8.EMULATE_ENV in str(e.value)
  monkeypatch.setenv(fp8.EMULATE_ENV, "1")
  check_options(dataclasses.replace(OPTS, precision="fp8"), 1)


@pytest.mark.parametrize("capability", [(8, 9), (9, 0), (10, 0)])
def test_fp8_is_accepted_on_fp8_hardware(monkeypatch, capability):
  monkeypatch.setattr(fp8, "gpu_capability", lambda device=None: capability)    # Ada, Hopper, Blackwell
  monkeypatch.delenv(fp8.EMULATE_ENV, raising=False)
  assert fp8.fp8_supported()
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
  assert saved["scheduler_config"]["solver_order"] == 2 and saved["guidance_scale"] == 5.0
  assert saved == json.loads(json.dumps(data))
  ratios = np.asarray(saved["ratios"])
  assert ratios.shape == (4, 2) and saved["ratios"][0] == [1.0, 1.0]
  assert np.isfinite(ratios).all() and (ratios[1:] > 0).all() and (ratios[1:] != 1.0).all()   # measured, not filled
  # a threshold between the accumulated errors of steps 1 and 2 (magcache_plan, warm-up 1): step 1 cached, step 2
  # computed, so the plan depends on the measured values (threshold 10 would cache steps 1 and 2 whatever they are)
  err1 = np.abs(1 - ratios[1])
  err2 = err1 + np.abs(1 - ratios[1] * ratios[2])
  threshold = float((err1.max() + err2.max()) / 2)
  want = sc.magcache_plan(ratios, threshold=threshold, max_skips=2, warmup=1)
  assert want[:3] == [False, True, False]
  assert want != sc.magcache_plan(ratios, threshold=10.0, max_skips=2, warmup=1)
  opts = dataclasses.replace(OPTS, cache="magcache", cache_schedule=out, cache_threshold=threshold, cache_warmup=1)
  check_options(opts, 1)
  res = generate(bundle, image, "a palace", opts, progress=False)
  assert res["cache"]["step_kinds"] == ["cached" if c else "full" for c in want]
  assert res["stats"]["stages"]["denoise"]["cached_steps"] == sum(want)


def test_calibration_needs_two_steps_and_integer_seeds(tmp_path):
  with pytest.raises(Gen3RInputError, match="--num_steps must be an integer >= 2 to calibrate") as e:
    calibrate(None, str(tmp_path / "sub" / "s.json"), num_steps=1)    # before --out's folder or the checkpoint
  assert "\n" not in str(e.value) and not (tmp_path / "sub").exists()
  assert parse_seeds([" 0", "12"]) == [0, 12]
  for bad in (["\u00b2"], ["1", "x"], ["-1"], []):                # "²" passes isdigit() but not int()
    with pytest.raises(Gen3RInputError, match="--seeds must be one or more integers >= 0"):
      parse_seeds(bad)


def test_calibrate_cli_refuses_one_step_with_exit_2(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "calibrate_cache.py"), "--num_steps=1",
                      f"--checkpoint={tmp_path}/no_checkpoint", f"--out={tmp_path}/s.json"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 2, r.stderr[-2000:]
  errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  assert len(errors) == 1 and "--num_steps must be an integer >= 2" in errors[0]
  assert not os.path.exists(tmp_path / "s.json")


@pytest.mark.parametrize("change, message", [
    (dict(cache="teacache"), "cache must be one of none, first_block, magcache, cfg, got 'teacache'"),
    (dict(cache="first_block", cache_threshold=-0.1), "cache_threshold must be a finite number >= 0"),
    (dict(cache="first_block", cache_steps="0,2"), "cache_steps \\[0\\] out of range"),
    (dict(cache="first_block", cache_steps="2,x"), "cache_steps must be comma-separated step indices"),
    (dict(cache="first_block", cache_steps="\u00b2"), "cache_steps must be comma-separated step indices"),
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
  sc.write_schedule(path, np.ones((50, 2)), num_steps=50, shift=5.0, scheduler=get_scheduler("unipc"),
                    guidance_scale=5.0)
  magcache = dataclasses.replace(OPTS, cache="magcache", cache_schedule=path, scheduler="unipc")
  with pytest.raises(Gen3RInputError, match="calibrated for 50 steps, this run has num_steps=4"):
    check_options(magcache, 1)
  ok = dataclasses.replace(magcache, num_steps=50)
  check_options(ok, 1)
  refusals = [
      (dict(shift=3.0), "calibrated for shift=5.0, this run has shift=3.0"),
      (dict(scheduler="dpmpp"), "calibrated with the FlowUniPC scheduler, this run uses FlowDPMpp"),
      (dict(guidance_scale=1.0), "calibrated with classifier-free guidance"),
      (dict(guidance_scale=4.0), "calibrated for guidance_scale=5.0, this run has guidance_scale=4.0"),
  ]
  for change, message in refusals:
    with pytest.raises(Gen3RInputError, match=message) as e:
      check_options(dataclasses.replace(ok, **change), 1)
    assert "\n" not in str(e.value)
  check_options(dataclasses.replace(ok, guidance_scale=5.0 + 1e-12), 1)       # the same scale, float rounding
  # the same scheduler class with other settings
  other = str(tmp_path / "other.json")
  sc.write_schedule(other, np.ones((50, 2)), num_steps=50, shift=5.0, guidance_scale=5.0,
                    scheduler=get_scheduler("unipc", solver_order=1))
  with pytest.raises(Gen3RInputError, match=r"calibrated with FlowUniPC settings \{'solver_order': 1\}, this "
                                            r"run's are \{'solver_order': 2\}"):
    check_options(dataclasses.replace(ok, cache_schedule=other), 1)
  (tmp_path / "junk.json").write_text("{}")
  with pytest.raises(Gen3RInputError, match="not a magcache schedule"):
    check_options(dataclasses.replace(ok, cache_schedule=str(tmp_path / "junk.json")), 1)


def test_schedule_of_the_checkpoints_scheduler_is_refused_before_anything_compiles(tiny, tmp_path, monkeypatch):
  path, bundle, image = tiny
  other = str(tmp_path / "other.json")               # the checkpoint's UniPC has shift 1.0 (scheduler_config.json)
  sc.write_schedule(other, np.ones((4, 2)), num_steps=4, shift=5.0, guidance_scale=5.0,
                    scheduler=get_scheduler("unipc", shift=3.0))
  message = r"calibrated with FlowUniPC settings \{'shift': 3.0\}, this run's are \{'shift': 1.0\}"
  opts = dataclasses.replace(OPTS, cache="magcache", cache_schedule=other)
  assert not opts.scheduler
  check_options(opts, 1)                             # the checkpoint's scheduler is not known yet
  lines = []
  with pytest.raises(Gen3RInputError, match=message):
    generate(bundle, image, "a palace", opts, progress=False, log=lines.append)
  assert lines == []                                 # no stage started
  # launch/sample.py: from the checkpoint's scheduler_config.json, before the bundle is loaded
  monkeypatch.setattr(sample_app, "load_for_config", lambda *a, **k: pytest.fail("loaded the bundle"))
  cfg = _sample_cfg(tmp_path, checkpoint=path, cache="magcache", cache_schedule=other, num_frames=1, num_steps=4)
  with pytest.raises(Gen3RInputError, match=message):
    sample_app.sample_from_config(cfg, log=lambda *a: None, warn=lambda *a: None)


def _sample_cfg(tmp_path, **kw):
  c = sample_config.get_config()
  c.out, c.prompt = str(tmp_path / "o"), "a room"
  c.checkpoint = str(tmp_path / "no_checkpoint")
  c.images = demo.ensure_example_image(str(tmp_path))
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_cache_with_a_mesh_is_refused_before_anything_compiles(tiny, tmp_path, monkeypatch):
  message = "step caches do not run a DiT sharded over a mesh yet; use cache=none with a mesh."
  # launch/sample.py: in the config check, before the checkpoint is read
  monkeypatch.setattr(sample_app, "load_for_config", lambda *a, **k: pytest.fail("loaded the bundle"))
  for kind in ("first_block", "cfg"):
    with pytest.raises(Gen3RInputError, match=message):
      sample_app.sample_from_config(_sample_cfg(tmp_path, mesh="fsdp=2", cache=kind), log=lambda *a: None)
  with pytest.raises(Gen3RInputError, match="not found; convert one"):     # no cache: the mesh passes this check
    sample_app.check_config(_sample_cfg(tmp_path, mesh="fsdp=2"), str(tmp_path / "no_checkpoint"),
                            [demo.ensure_example_image(str(tmp_path))])
  # generate: as soon as the DiT's mesh is known, before umT5 runs
  _, bundle, image = tiny
  mesh = jax.make_mesh((1,), ("fsdp",))
  lines = []
  with pytest.raises(Gen3RInputError, match=message):
    generate(bundle, image, "a palace", dataclasses.replace(OPTS, cache="first_block"), mesh=mesh,
             progress=False, log=lines.append)
  assert lines == []


def test_bad_schedule_files_and_steps_are_one_line_errors(tmp_path):
  good = sc.write_schedule(str(tmp_path / "good.json"), np.ones((4, 2)), num_steps=4, shift=5.0,
                           scheduler=get_scheduler("unipc"), guidance_scale=5.0)
  assert sc.load_schedule(str(tmp_path / "good.json")) == json.loads(json.dumps(good))
  bad = [
      (dict(ratios=[[1.0, 1.0], [1.0], [1.0, 1.0], [1.0, 1.0]]), "'ratios' must be \\[num_steps=4, rows"),
      (dict(ratios=[["a", 1.0]] * 4), "'ratios' must be \\[num_steps=4, rows"),
      (dict(ratios=[["1.0", 1.0]] * 4), "'ratios' must be \\[num_steps=4, rows"),
      (dict(ratios=[[1.0, 1.0]] * 3), "'ratios' must be \\[num_steps=4, rows"),
      (dict(ratios=[[1.0, True]] * 4), "'ratios' must be \\[num_steps=4, rows"),
      (dict(ratios="1,1"), "'ratios' must be \\[num_steps=4, rows"),
      (dict(num_steps="4"), "'num_steps' must be a positive integer"),
      (dict(shift="five"), "'shift' must be a finite number"),
      (dict(guidance_scale=None), "'guidance_scale' must be a finite number"),
      (dict(scheduler_config=None), "does not record its scheduler and the scheduler's settings"),
  ]
  for i, (change, message) in enumerate(bad):
    f = tmp_path / f"bad{i}.json"
    f.write_text(json.dumps(dict(good, **change)))
    opts = dataclasses.replace(OPTS, cache="magcache", cache_schedule=str(f), scheduler="unipc")
    with pytest.raises(Gen3RInputError, match=message) as e:
      check_options(opts, 1)
    assert "\n" not in str(e.value), change
  with pytest.raises(Gen3RInputError, match="cache_steps must be comma-separated step indices"):
    sc.parse_steps("1,\u00b2", 4)                     # "²".isdigit() is True, int("²") raises
  assert sc.parse_steps(" 1, 3", 4) == (1, 3)


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
