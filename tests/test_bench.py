"""The benchmark suite (bench/) on CPU: the shared helpers, the entry point, import hygiene for the GPU image, and
(opt-in, ``pytest -m slow``) every benchmark and the official PyTorch references at tiny sizes.

The default tests take ~30 s on the 2-core box; the slow ones compile every model (minutes there)."""

import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bench import common, run as bench_run
from bench.dit import flops_jaxpr, forward_flops
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.nn.params import param

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_REF = os.path.join(ROOT, "bench", "_torch_ref")
MODULES = ("bench.run", "bench.common", "bench.dit", "bench.vggt", "bench.vae", "bench.adapter", "bench.sample",
           "bench.stage2_step", "bench.torch_ref", "bench.dit14b_memory", "bench.compile_probe", "bench.compile_log",
           "bench.accelerators", "bench.multi_gpu")


# ------------------------------------------------------------------------------------------------ import hygiene
def test_bench_imports_need_no_training_only_packages():
  """The GPU image has no ml_collections / grain / clu / TensorFlow: nothing a benchmark imports may need them."""
  code = f"""
import sys, importlib
for m in {MODULES!r}:
  importlib.import_module(m)
import bench.stage2_step, bench.sample
bench.stage2_step._loss_fn()                    # imports training.stage2 lazily
bench.sample.bundle_configs("tiny", "float32", "float32")
import gen3r_jax.sampling.pipeline, gen3r_jax.apps.bundle
bad = sorted({{m.split('.')[0] for m in sys.modules}} & {{"ml_collections", "grain", "clu", "tensorflow",
                                                         "tensorflow_datasets", "torch", "diffusers"}})
print("BAD", bad)
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "BAD []" in out.stdout, out.stdout


# ----------------------------------------------------------------------------------------------------- FLOPs
def test_count_flops_matches_the_dit_hand_formula():
  for cfg, shape in ((WanDiTConfig.tiny(), (1, 2, 4, 8)), (WanDiTConfig.wan_1_3b(), (2, 13, 70, 140))):
    assert flops_jaxpr(cfg, *shape) == pytest.approx(forward_flops(cfg, *shape), rel=1e-9)


def test_count_flops_of_convs_scans_and_conds():
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 3, 3, 16), jnp.float32)
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",  # noqa: E731
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert common.count_flops(conv, x, k) == 2 * (2 * 8 * 8 * 16) * (3 * 3 * 3)
  grouped = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4)
  x4, k4 = jax.ShapeDtypeStruct((1, 4, 4, 8), jnp.float32), jax.ShapeDtypeStruct((1, 1, 2, 8), jnp.float32)
  assert common.count_flops(grouped, x4, k4) == 2 * (1 * 4 * 4 * 8) * 2
  w = jax.ShapeDtypeStruct((5, 4, 4), jnp.float32)

  def scanned(h, w):
    return jax.lax.scan(lambda c, wi: (jax.nn.relu(c @ wi), None), h, w)[0]
  h = jax.ShapeDtypeStruct((3, 4), jnp.float32)
  assert common.count_flops(scanned, h, w) == 5 * 2 * 3 * 4 * 4
  big = lambda p, a: jax.lax.cond(p, lambda a: a @ a @ a, lambda a: a @ a, a)  # noqa: E731
  a = jax.ShapeDtypeStruct((4, 4), jnp.float32)
  assert common.count_flops(big, jax.ShapeDtypeStruct((), bool), a) == 2 * (2 * 4 * 4 * 4)
  assert common.count_flops(jax.checkpoint(lambda a: jnp.sin(a @ a)), a) == 2 * 4 * 4 * 4


# ---------------------------------------------------------------------------------------------------- timing
def test_time_jitted_reports_compile_and_spread():
  f = jax.jit(lambda a: (a @ a).sum())
  res = common.time_jitted(f, jnp.ones((32, 32)), warmup=2, repeats=5, flops=2 * 32 ** 3)
  json.dumps(res)
  assert res["repeats"] == 5 and len(res["times_s"]) == 5 and res["warmup"] == 2
  assert 0 < res["min_s"] <= res["median_s"] <= res["max_s"] and res["spread"] >= 0
  assert res["compile_s"] >= res["lower_s"] > 0 and res["tflop"] == 2 * 32 ** 3 / 1e12 and res["tflops"] > 0
  assert res["peak_gib"] is None and res["exec_gib"] is None or res["exec_gib"] >= 0   # CPU: no memory stats


def test_time_jitted_carries_a_donated_state():
  step = jax.jit(lambda s, x: (s + x, s.sum()), donate_argnums=(0,))
  res = common.time_jitted(step, jnp.zeros(4), jnp.ones(4), warmup=1, repeats=5, carry=True)
  assert res["repeats"] == 5                               # a donated buffer reused would have raised


class _Toy(nnx.Module):
  def __init__(self, cfg, *, rngs):
    del rngs
    self.kernel = param(jnp.zeros((cfg["layers"], 64, 32), jnp.bfloat16), ("layers", "embed", "mlp"))
    self.bias = param(jnp.zeros((32,), jnp.bfloat16), ("mlp",))
    self.scale = param(jnp.zeros((32,), jnp.float32), ("norm",))
    self.other = param(jnp.zeros((1000,), jnp.float32), (None,))


@pytest.mark.parametrize("method", ["device", "host"])
def test_random_weights_follow_the_init_scheme(method, monkeypatch):
  monkeypatch.setattr(common, "_BUCKET", 600)               # several buckets, split by dtype and size
  m = common.device_random(_Toy, {"layers": 3}, seed=1, method=method)
  k, b = np.asarray(m.kernel[...], np.float32), np.asarray(m.bias[...], np.float32)
  s, o = np.asarray(m.scale[...]), np.asarray(m.other[...])
  assert m.kernel[...].dtype == jnp.bfloat16 and m.scale[...].dtype == jnp.float32
  assert np.abs(k).max() <= 1 / 8 + 1e-3 and k.std() > 0.03   # U(+-1/sqrt(64)): the layers axis is no fan-in
  assert np.abs(b).max() <= 0.0201 and np.abs(s - 1).max() <= 0.1001 and 0.01 < o.std() < 0.03
  assert len({float(v) for v in k[:, 0, 0]}) == 3          # every layer drawn on its own


# -------------------------------------------------------------------------------------------------- bench.run
def test_kw_parsing_and_per_bench_options():
  common_kw, per = bench_run.parse_kw(["quick=true", "repeats=7", "vae.which=decode", "sample.cache_dir=/tmp/x",
                                       "x=1.5", "y=none"])
  assert common_kw == {"quick": True, "repeats": 7, "x": 1.5, "y": None}
  assert per == {"vae": {"which": "decode"}, "sample": {"cache_dir": "/tmp/x"}}
  mod = types.SimpleNamespace(run=lambda frames=49, repeats=5, quick=False, size="full", dtype="bfloat16": None,
                              TINY={"frames": 2})
  kw = bench_run.options_for(mod, "vae", "tiny", "float32", common_kw, per)
  assert kw == {"frames": 2, "size": "tiny", "dtype": "float32", "quick": True, "repeats": 7, "which": "decode"}
  assert bench_run.options_for(mod, "dit", None, None, {}, {}) == {}


def test_torch_ratio_and_table():
  rows = [bench_run.normalise({"bench": "wan_dit_forward", "ref_key": "dit_forward", "median_s": 1.0, "tflop": 500.0,
                               "tflops_per_s": 500.0}),
          {"bench": "vae", "name": "vae", "ref_key": "vae_decode", "median_s": 2.0},
          {"bench": "sample", "name": "sample", "error": "boom"}]
  torch_rows = [{"ref_key": "dit_forward", "median_s": 2.0, "peak_gib": 9.0, "torch": "2.11"},
                {"ref_key": "vae_decode", "error": "OOM"}]
  bench_run.attach_torch(rows, torch_rows)
  assert rows[0]["ratio"] == 0.5 and rows[0]["torch_tflops"] == 250.0 and rows[0]["torch_peak_gib"] == 9.0
  assert "ratio" not in rows[1] and rows[1]["torch_error"] == "OOM"
  text = bench_run.table({"device": "H100"}, rows)
  assert "wan_dit_forward" in text and "0.5" in text and "ERROR: boom" in text


def test_main_runs_each_bench_and_writes_json(tmp_path, monkeypatch):
  fake = types.ModuleType("bench.fake_bench")
  fake.TINY = {"n": 3}
  fake.run = lambda n=100, size="full", dtype="bfloat16": [{"bench": "fake", "size": size, "n": n,
                                                               "median_s": 0.5}]
  broken = types.ModuleType("bench.broken_bench")
  broken.run = lambda **kw: 1 / 0
  monkeypatch.setitem(sys.modules, "bench.fake_bench", fake)
  monkeypatch.setitem(sys.modules, "bench.broken_bench", broken)
  out = tmp_path / "r.json"
  rc = bench_run.main(["--what", "fake_bench,broken_bench", "--size", "tiny", "--no-isolate", "--out", str(out)])
  assert rc == 1                                           # one benchmark failed, the other still ran
  data = json.loads(out.read_text())
  assert data["info"]["platform"] == "cpu" and data["info"]["jax"] == jax.__version__ and "date" in data["info"]
  assert data["rows"][0]["n"] == 3 and data["rows"][0]["name"] == "fake tiny"
  assert "ZeroDivisionError" in data["rows"][1]["error"]


# ----------------------------------------------------------------------------- every benchmark, tiny (opt-in)
@pytest.mark.slow
@pytest.mark.parametrize("what", ["vggt", "vae", "adapter", "stage2_step"])
def test_bench_tiny(what):
  import importlib
  mod = importlib.import_module(f"bench.{what}")
  kw = dict(mod.TINY, size="tiny", dtype="float32")
  rows = mod.run(**kw)
  rows = rows if isinstance(rows, list) else [rows]
  for r in rows:
    json.dumps(r)
    assert r["dtype"] == "float32" and r["jax"] == jax.__version__ and r["shapes"] and r["date"]
    assert r["repeats"] >= 2 and 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
    assert r["compile_s"] > 0 and r["tflop"] > 0 and r["tflops"] > 0


@pytest.mark.slow
def test_stage2_step_fsdp_two_devices():
  from bench import stage2_step
  r = stage2_step.run(devices=2, **dict(stage2_step.TINY, size="tiny", dtype="float32"))
  assert r["devices"] == 2 and r["mesh"]["fsdp"] == 2 and r["batch"] == 2 and r["tokens_per_s"] > 0
  assert r["hardware_tflop"] == pytest.approx(r["model_tflop"] * 4 / 3) and r["mfu"] is None   # no peak on CPU


@pytest.mark.slow
def test_sample_tiny_in_process():
  from bench import sample
  cold, warm = sample.run(size="tiny", dtype="float32", num_steps=2, num_frames=1, isolate=False)
  assert cold["median_s"] > 0 and cold["compile_s"] > 0 and cold["steps_timed"] == 1 and cold["cache_entries"] > 0
  assert set(cold["stages_first"]) >= {"denoise"} and cold["sample_50_steps_estimated"]
  assert warm["phase"] == "warm" and warm["first_call_s"] > 0


# --------------------------------------------------------------------------- the official PyTorch modules (opt-in)
def _require_torch_ref():
  """The slow PyTorch-reference test needs the ignored folder; missing, it fails (never skips)."""
  if not os.path.isdir(os.path.join(TORCH_REF, "gen3r")):
    pytest.fail("bench/_torch_ref is missing: run `bash bench/fetch_torch_ref.sh` first (it copies the official "
                "code and the diffusers wheel into that ignored folder)")


@pytest.mark.slow
def test_torch_ref_tiny_on_cpu_without_transformers(tmp_path):
  """Every official class builds and runs (float32, CPU, tiny shapes); a ``transformers`` that fails on import is
  on the path, as the GPU image's 5.x could: it must never be imported."""
  _require_torch_ref()
  fake = tmp_path / "fake"
  (fake / "transformers").mkdir(parents=True)
  (fake / "transformers" / "__init__.py").write_text("raise ImportError('transformers must not be imported')\n")
  (fake / "transformers-9.9.9.dist-info").mkdir()
  (fake / "transformers-9.9.9.dist-info" / "METADATA").write_text("Name: transformers\nVersion: 9.9.9\n")
  out = tmp_path / "torch.json"
  env = dict(os.environ, PYTHONPATH=str(fake), GEN3R_TORCH_REF_SITE=str(tmp_path / "site"))
  proc = subprocess.run([sys.executable, "-m", "bench.torch_ref", "--size", "tiny", "--device", "cpu",
                         "--repeats", "1", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1200)
  rows = json.loads(out.read_text())
  assert proc.returncode == 0, [r.get("error") for r in rows] + [proc.stderr[-2000:]]
  assert {r["ref_key"] for r in rows} == {"dit_forward", "vggt_forward", "vae_encode", "vae_decode",
                                          "adapter_decode"}
  dit = next(r for r in rows if r["ref_key"] == "dit_forward")
  assert dit["params"] == 1_945_888 and dit["diffusers"] == "0.33.1"    # = our WanDiTConfig.tiny()


# ------------------------------------------------------------------------------------------- compile tools
def test_compile_log_and_probe_summaries():
  """``bench.compile_log`` sums JAX's compile lines per program; ``bench.compile_probe`` sums host trace events
  by name without the profiler's Python frames."""
  from bench import compile_log, compile_probe
  lines = ["WARNING:jax._src.dispatch:Finished XLA compilation of jit(_rays) in 5.85 sec",
           "Finished XLA compilation of jit(add) in 0.05 sec", "unrelated line",
           "Finished XLA compilation of jit(add) in 0.07 sec"]
  rows = compile_log.summarise(lines)
  assert rows[0] == ("jit(_rays)", 5.85, 1)
  assert rows[1][0] == "jit(add)" and rows[1][1] == pytest.approx(0.12) and rows[1][2] == 2
  events = [dict(name="config-assigner", dur=2e6), dict(name="$profiler.py:1 wrapper", dur=9e6),
            dict(name="PTX->CUBIN", dur=1e6), dict(name="PTX->CUBIN", dur=5e5)]
  assert compile_probe.summarise(events, 5) == [("config-assigner", 2.0, 1), ("PTX->CUBIN", 1.5, 2)]


def test_accelerators_first_block_threshold_is_picked_from_the_measured_changes():
  from bench import accelerators as acc
  changes = [None, 0.02, 0.03, 0.01, 0.05, 0.02, 0.02, 0.04, 0.03, 0.02]
  # the change since the last full step is the running sum of the consecutive ones
  assert acc.predicted_fb_plan(changes, 0.045, warmup=1, max_skips=3) == [
      False, True, False, True, False, True, True, False, True, False]
  assert acc.predicted_fb_plan(changes, 1.0, warmup=1, max_skips=3) == [False] + [True] * 3 + [False] + [True] * 3 + [
      False, True]                                         # at most 3 in a row
  thr = acc.auto_threshold(changes, 0.45, warmup=1, max_skips=3)
  assert sum(acc.predicted_fb_plan(changes, thr, warmup=1, max_skips=3)) >= 4.5 and 0.02 < thr < 0.05
  med = acc._medians([5.0, 1.0, 1.2, 3.0, 0.5, 0.4], ["full", "full", "full", "cached", "cached", "cached"])
  assert med["full"] == 1.1 and med["cached"] == 0.45 and med["compile_excess"] == pytest.approx(3.9 + 2.55)


# ------------------------------------------------------------------------------------------------ multi_gpu plan
def test_multi_gpu_plan_schemes_and_derived_numbers():
  from bench import multi_gpu as mg
  # the 1.3B's 12 heads do not divide context 8: the Ulysses row runs the hybrid; the 14B's 40 do
  assert mg.resolve_scheme("ulysses", 12, 8) == "ulysses_allgather" and mg.resolve_scheme("ulysses", 40, 8) == "ulysses"
  assert mg.resolve_scheme("ring", 12, 8) == "ring"
  cases = mg.plan(["train", "sample14b", "cfg"], ["1.3b"], [1, 2, 4], [2], tiny=False)
  names = [(c["part"], c["devices"], mg.mesh_name(c["mesh"]), c.get("strategy")) for c in cases]
  assert ("train", 1, "fsdp=1", None) in names and ("train", 4, "fsdp=2xcontext=2", "ulysses") in names
  assert ("sample14b", 4, "context=4", "ulysses") in names and ("sample14b", 4, "cfg=2xcontext=2", "ulysses") in names
  assert ("cfg", 2, "cfg=2", None) in names and ("cfg", 1, "single", None) in names
  assert len([n for n in names if n[0] == "train"]) == 1 + 4 + 4     # d=1: fsdp; d=2, 4: fsdp + 3 schemes each
  rows = [dict(bench="multi_gpu_train", size="1.3b", devices=1, mesh={"fsdp": 1}, ok=True, tokens_per_s_per_gpu=100.0,
               name="a"),
          dict(bench="multi_gpu_train", size="1.3b", devices=8, mesh={"fsdp": 8}, ok=True, tokens_per_s_per_gpu=92.0,
               name="b"),
          dict(bench="multi_gpu_sample14b", devices=1, ok=True, median_s=8.0, name="c"),
          dict(bench="multi_gpu_sample14b", devices=8, ok=True, median_s=1.25, name="d"),
          dict(bench="multi_gpu_cfg", devices=1, ok=True, latency_s=100.0, name="e"),
          dict(bench="multi_gpu_cfg", devices=2, ok=True, latency_s=52.0, name="f"),
          dict(bench="multi_gpu_cfg", devices=2, ok=False, error="RESOURCE_EXHAUSTED: out of memory", name="g")]
  mg.derive(rows)
  assert rows[1]["scaling_efficiency"] == pytest.approx(0.92) and rows[1]["efficiency_base_devices"] == 1
  assert rows[3]["speedup"] == pytest.approx(6.4) and rows[5]["ratio"] == pytest.approx(0.52)
  text = mg.table(rows)
  assert "| b | 8 |" in text and "0.92" in text and "RESOURCE_EXHAUSTED" in text
  with pytest.raises(SystemExit, match="not in 1..4"):
    mg.device_counts(4, "1,8")
