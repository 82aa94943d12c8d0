"""Sharded sampling on fake CPU devices: the CFG denoising step of a DiT sharded over (fsdp 2 x context 2) equals
the unsharded step, attention goes through the context-parallel shard_map, the run compiles once; the benchmark
helper ``time_denoise_step`` runs on a mesh; bad parallel settings fail before compiling. (``generate`` end to end
with a sharded DiT: tests/test_sampling_memory.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.init import random_params
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import WanDiT
from gen3r_jax.nn import context_parallel as cp
from gen3r_jax.parallel.rules import make_mesh, state_shardings
from gen3r_jax.sampling import denoise as dn
from gen3r_jax.sampling.schedulers import get_scheduler

CFG = WanDiTConfig.tiny()


def _inputs(cfg, f=2, h=4, w=4, seed=0):
  """Joint latents ``[1, f, h, 2w, 16]`` (f * h/2 * w = 16 tokens: divisible by context 2) and conditioning."""
  r = np.random.RandomState(seed)
  arr = lambda *s: jnp.asarray(r.randn(*s), jnp.float32)                     # noqa: E731
  return dict(latents=arr(1, f, h, 2 * w, cfg.out_dim), context=arr(2, cfg.text_len, cfg.text_dim),
              clip_fea=arr(1, cfg.clip_tokens, cfg.clip_dim), y=arr(1, f, h, 2 * w, cfg.cond_dim),
              y_camera=arr(1, f, 8 * h, 16 * w, cfg.in_dim_control_adapter))


def _sharded(model, mesh):
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.device_put(state, state_shardings(state, mesh)))


def test_sharded_step_matches_unsharded(monkeypatch):
  model = random_params(WanDiT, CFG, seed=1)
  kw = _inputs(CFG)
  sched = get_scheduler("unipc")
  schedule = sched.set_timesteps(2, 5.0)
  ref = dn.denoise(model, sched, schedule, guidance_scale=5.0, record=True, progress=False, **kw)

  mesh = make_mesh({"fsdp": 2, "context": 2}, devices=jax.devices()[:4])
  sharded = _sharded(model, mesh)
  kernel = sharded.blocks.ffn.fc1.kernel.get_value()
  assert kernel.sharding.spec == P(None, "fsdp", None), kernel.sharding           # parameters really sharded
  calls = []
  real = cp.context_attention
  monkeypatch.setattr(cp, "context_attention", lambda *a, **k: calls.append(k["strategy"]) or real(*a, **k))
  before = dn.denoise_step._cache_size()
  out = dn.denoise(sharded, sched, schedule, guidance_scale=5.0, record=True, progress=False, **kw)
  assert dn.denoise_step._cache_size() - before == 1                              # one compile for the run
  # the scanned block, traced once: self-attention all-gathers K/V over 'context', the text and image
  # cross-attentions split the queries only (replicated K/V)
  assert calls == ["allgather", "replicate_kv", "replicate_kv"], calls
  assert out.latents.sharding.is_fully_replicated and out.latents.sharding.mesh.shape == mesh.shape
  np.testing.assert_allclose(out.guided, ref.guided, atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(out.history, ref.history, atol=2e-5, rtol=1e-5)


def test_time_denoise_step_on_a_mesh():
  cfg = WanDiTConfig.tiny(text_len=16)
  mesh = make_mesh({"fsdp": 2}, devices=jax.devices()[:2])
  r = dn.time_denoise_step(cfg, mesh, frames=5, height=32, width=32, iters=2)
  assert r["mesh"]["fsdp"] == 2 and r["finite"] and r["iters"] == 2 and r["cfg_batch"] == 2
  assert r["latent_shape"] == [1, 2, 4, 8, 16] and r["tokens"] == 2 * 2 * 4
  assert r["params"] == sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(random_params(WanDiT, cfg))))
  assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"] and r["first_step_s"] > 0


def test_bad_parallel_settings_fail_before_compiling():
  model = random_params(WanDiT, CFG, seed=1)
  sched = get_scheduler("unipc")
  schedule = sched.set_timesteps(1, 5.0)
  kw = _inputs(CFG, f=1, h=2, w=3)                                               # 1 * 1 * 3 = 3 tokens
  mesh = make_mesh({"context": 2}, devices=jax.devices()[:2])
  with pytest.raises(Gen3RInputError, match="context_parallel must be one of"):
    dn.denoise(model, sched, schedule, progress=False, mesh=mesh, context_parallel="tree", **kw)
  with pytest.raises(Gen3RInputError, match="3 video tokens, not divisible by the mesh 'context' size 2"):
    dn.denoise(model, sched, schedule, progress=False, mesh=mesh, **kw)
  with pytest.raises(Gen3RInputError, match="mesh must be a jax.sharding.Mesh"):
    dn.denoise(model, sched, schedule, progress=False, mesh={"context": 2}, **kw)
  with pytest.raises(Gen3RInputError, match="frames must be 1 \\+ 4k"):
    dn.time_denoise_step(CFG, mesh, frames=4, height=32, width=32)


def _step_collectives(model, mesh, kw, strategy="allgather"):
  """Per-device flops and collective counts of the compiled CFG step on ``mesh``."""
  graphdef, params = nnx.split(_sharded(model, mesh))
  sched = get_scheduler("unipc")
  schedule = sched.set_timesteps(2, 5.0)
  x = jnp.array(kw["latents"])
  args = (params, graphdef, x, sched.init_state(jnp.asarray(schedule.sigmas, jnp.float32), x), jnp.int32(0),
          jnp.asarray(np.asarray(schedule.timesteps, np.float32)), kw["context"], kw["clip_fea"], kw["y"],
          kw["y_camera"], jnp.float32(5.0))
  with dn.mesh_scope(mesh):
    c = dn.denoise_step.lower(*args, scheduler=sched, use_cfg=True, parallel=(mesh, strategy)).compile()
  text = c.as_text()
  return c.cost_analysis()["flops"], {k: text.count(f" {k}(") for k in ("all-gather", "all-reduce", "all-to-all",
                                                                          "collective-permute", "reduce-scatter")}


def test_cfg_parallel_step_matches_unsharded_and_meets_once_per_step():
  model = random_params(WanDiT, CFG, seed=1)
  kw = _inputs(CFG)
  sched = get_scheduler("unipc")
  schedule = sched.set_timesteps(2, 5.0)
  ref = dn.denoise(model, sched, schedule, guidance_scale=5.0, record=True, progress=False, **kw)
  for shape, strategy in (({"cfg": 2}, "allgather"), ({"cfg": 2, "context": 2}, "ulysses")):
    mesh = make_mesh(shape, devices=jax.devices()[:2 * shape.get("context", 1)])
    out = dn.denoise(_sharded(model, mesh), sched, schedule, guidance_scale=5.0, record=True, progress=False,
                     context_parallel=strategy, **kw)
    np.testing.assert_allclose(out.guided, ref.guided, atol=2e-5, rtol=1e-5, err_msg=str(shape))
    np.testing.assert_allclose(out.history, ref.history, atol=2e-5, rtol=1e-5, err_msg=str(shape))
  # each cfg group runs one branch (half the flops of the whole CFG batch per device), the weights are replicated
  # over cfg (nothing gathered), and the two predictions meet in exactly one collective per step
  mesh = make_mesh({"cfg": 2}, devices=jax.devices()[:2])
  flops, coll = _step_collectives(model, mesh, kw)
  full = jax.jit(lambda p, x, t, c, f, y, cam: nnx.merge(nnx.graphdef(model), p)(
      dn._double(x), jnp.broadcast_to(t, (2,)), c, clip_fea=dn._double(f), y=dn._double(y), y_camera=dn._double(cam)))
  whole = full.lower(nnx.state(model), kw["latents"], jnp.float32(1.0), kw["context"], kw["clip_fea"], kw["y"],
                     kw["y_camera"]).compile().cost_analysis()["flops"]
  assert flops < 0.6 * whole, (flops, whole)
  assert coll == {"all-gather": 1, "all-reduce": 0, "all-to-all": 0, "collective-permute": 0,
                  "reduce-scatter": 0}, coll


def test_ulysses_ring_sampling_matches_unsharded():
  # 6 heads on context 4: Ulysses over gcd(6, 4) = 2 devices, then a ring over the 2 groups (both stages run)
  cfg = WanDiTConfig.tiny(dim=96, ffn_dim=128, num_heads=6)
  model = random_params(WanDiT, cfg, seed=2)
  kw = _inputs(cfg, seed=3)                                     # 2 x 2 x 2 = 8 tokens: 2 per context shard
  sched = get_scheduler("unipc")
  schedule = sched.set_timesteps(2, 5.0)
  ref = dn.denoise(model, sched, schedule, guidance_scale=5.0, record=True, progress=False, **kw)
  mesh = make_mesh({"fsdp": 2, "context": 4})
  out = dn.denoise(_sharded(model, mesh), sched, schedule, guidance_scale=5.0, record=True, progress=False,
                   context_parallel="ulysses_ring", **kw)
  np.testing.assert_allclose(out.history, ref.history, atol=2e-5, rtol=1e-5)
  _, coll = _step_collectives(model, mesh, kw, "ulysses_ring")
  assert coll["all-to-all"] > 0 and coll["collective-permute"] > 0, coll


def test_bad_cfg_parallel_settings_fail_before_compiling():
  model = random_params(WanDiT, CFG, seed=1)
  sched = get_scheduler("unipc")
  schedule = sched.set_timesteps(1, 5.0)
  kw = _inputs(CFG, f=1)
  one = dict(kw, context=kw["context"][1:])                     # guidance off: the positive row only
  mesh = make_mesh({"cfg": 2}, devices=jax.devices()[:2])
  with pytest.raises(Gen3RInputError, match=r"mesh cfg=2 runs the unconditional and conditional branches on two "
                                            r"device groups, but guidance_scale 1 <= 1 turns guidance off"):
    dn.denoise(_sharded(model, mesh), sched, schedule, guidance_scale=1.0, progress=False, **one)
  with pytest.raises(Gen3RInputError, match="mesh cfg=4: the cfg axis splits the .* so it is 1 or 2"):
    dn.denoise(model, sched, schedule, progress=False, mesh=make_mesh({"cfg": 4}, devices=jax.devices()[:4]), **kw)
  with pytest.raises(Gen3RInputError, match="does not divide the 8 devices"):
    make_mesh({"cfg": 3, "fsdp": -1})
  with pytest.raises(Gen3RInputError, match=r"needs 6 devices but 8 are available"):
    make_mesh({"cfg": 2, "context": 3})
  # 12 heads cannot do plain Ulysses on context 8: named before compiling, with the hybrids as the fix
  big = WanDiTConfig.tiny(num_heads=12, dim=96)
  with pytest.raises(Gen3RInputError, match="use 'ulysses_ring' or 'ulysses_allgather'"):
    dn._check_context_split(make_mesh({"context": 8}), np.zeros((1, 2, 4, 8, 16)), big, "ulysses")
