"""Context-parallel attention on 8 fake CPU devices against the unsharded dispatch: values, gradients, specs,
bad inputs, and the model hook (a tiny Wan DiT runs unchanged under ``use_context_parallel``)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.nn.attention import attention, local_attention
from gen3r_jax.nn.context_parallel import (active, check_strategy, context_attention, local_heads, qkv_spec,
                                            ulysses_groups, ulysses_split, use_context_parallel)
from gen3r_jax.parallel.rules import DEFAULT_RULES, make_mesh


def _qkv(b=2, l=32, h=4, d=8, lk=None, seed=0, dtype=jnp.float32, amp=1.0):
  r = np.random.RandomState(seed)
  q = r.randn(b, l, h, d) * amp
  k = r.randn(b, lk or l, h, d) * amp
  v = r.randn(b, lk or l, h, d)
  return tuple(jnp.asarray(a, dtype) for a in (q, k, v))


def _ref(q, k, v):
  return np.asarray(local_attention(q, k, v, implementation="xla"))


@pytest.mark.parametrize("shape,strategy,spec", [
    ({"context": 8}, "allgather", P(None, "context", None, None)),
    ({"context": 8}, "ring", P(None, "context", None, None)),
    ({"data": 2, "context": 4}, "ring", P("data", "context", None, None)),
    ({"fsdp": 2, "context": 4}, "allgather", P("fsdp", "context", None, None)),
    ({"context": 2, "tensor": 4}, "allgather", P(None, "context", "tensor", None)),
    ({"data": 2, "context": 2, "tensor": 2}, "ring", P("data", "context", "tensor", None)),
])
def test_matches_unsharded(shape, strategy, spec):
  mesh = make_mesh(shape)
  q, k, v = _qkv()
  assert qkv_spec(q.shape, mesh) == spec
  out = jax.jit(lambda q, k, v: context_attention(q, k, v, mesh=mesh, strategy=strategy,
                                                  implementation="xla"))(q, k, v)
  assert out.shape == q.shape and out.dtype == q.dtype
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, spec), 4), out.sharding
  np.testing.assert_allclose(np.asarray(out), _ref(q, k, v), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["allgather", "ring"])
def test_non_dividing_heads_and_batch_are_replicated(strategy):
  mesh = make_mesh({"data": 2, "context": 2, "tensor": 2})
  q, k, v = _qkv(b=3, h=3, seed=1)
  assert qkv_spec(q.shape, mesh) == P(None, "context", None, None)
  out = context_attention(q, k, v, mesh=mesh, strategy=strategy)
  np.testing.assert_allclose(np.asarray(out), _ref(q, k, v), atol=2e-6, rtol=1e-5)


def test_ring_is_stable_for_large_logits():
  # logits ~ +-1e3: a naive exp overflows; the running max keeps every exponent <= 0
  mesh = make_mesh({"context": 8})
  q, k, v = _qkv(amp=12.0, seed=2)
  out = np.asarray(context_attention(q, k, v, mesh=mesh, strategy="ring"))
  assert np.isfinite(out).all()
  np.testing.assert_allclose(out, _ref(q, k, v), atol=1e-4, rtol=1e-4)  # f32 logits ~1e3: ulp 6e-5


def test_ring_bfloat16_inputs():
  mesh = make_mesh({"context": 4, "tensor": 2})
  q, k, v = _qkv(dtype=jnp.bfloat16, seed=3)
  out = context_attention(q, k, v, mesh=mesh, strategy="ring", implementation="xla")
  assert out.dtype == jnp.bfloat16
  ref = _ref(*(a.astype(jnp.float32) for a in (q, k, v)))
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("strategy", ["allgather", "ring"])
def test_gradients_match_unsharded(strategy):
  mesh = make_mesh({"data": 2, "context": 4})
  q, k, v = _qkv(l=16, seed=4)
  w = jnp.asarray(np.random.RandomState(5).randn(*q.shape), jnp.float32)
  loss = lambda fn: (lambda q, k, v: jnp.sum(fn(q, k, v) * w))
  grads = jax.jit(jax.grad(loss(lambda q, k, v: context_attention(q, k, v, mesh=mesh, strategy=strategy)),
                           argnums=(0, 1, 2)))(q, k, v)
  ref = jax.grad(loss(lambda q, k, v: local_attention(q, k, v, implementation="xla")), argnums=(0, 1, 2))(q, k, v)
  for name, g, r in zip("qkv", grads, ref):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-6, rtol=1e-5, err_msg=name)


def test_bad_inputs_raise_clear_errors():
  mesh = make_mesh({"data": 2, "context": 4})
  q, k, v = _qkv(l=30)
  with pytest.raises(Gen3RInputError, match=r"q length 30 is not divisible by the mesh 'context' size 4; pad"):
    context_attention(q, k, v, mesh=mesh)
  q, k, v = _qkv(l=32, lk=30)
  with pytest.raises(Gen3RInputError, match="k/v length 30 is not divisible"):
    context_attention(q, k, v, mesh=mesh, strategy="ring")
  with pytest.raises(Gen3RInputError, match="strategy must be one of"):
    context_attention(q, q, q, mesh=mesh, strategy="tree")
  with pytest.raises(Gen3RInputError, match=r"must be \[B, L, H, D\]"):
    context_attention(q[0], q[0], q[0], mesh=mesh)
  with pytest.raises(Gen3RInputError, match="strategy must be one of"):
    with use_context_parallel(mesh, "replicate_kv"):
      pass


def _jaxpr(fn, *args):
  return str(jax.make_jaxpr(fn)(*args))


def test_hook_routes_attention_through_shard_map():
  mesh = make_mesh({"data": 2, "context": 4})
  q, k, v = _qkv(seed=6)
  ref = _ref(q, k, v)
  plain = _jaxpr(lambda q, k, v: attention(q, k, v), q, k, v)
  assert "shard_map" not in plain
  for strategy, collective in (("ring", "ppermute"), ("allgather", "all_gather")):
    with use_context_parallel(mesh, strategy):
      assert active().strategy == strategy
      assert collective in _jaxpr(lambda q, k, v: attention(q, k, v), q, k, v)
      out = jax.jit(lambda q, k, v: attention(q, k, v))(q, k, v)
    assert active() is None
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-6, rtol=1e-5)
  # cross-attention (Lk != Lq): queries split, k/v replicated, no communication
  q2, k2, v2 = _qkv(lk=12, seed=7)
  with use_context_parallel(mesh, "ring"):
    text = _jaxpr(lambda q, k, v: attention(q, k, v), q2, k2, v2)
    out = attention(q2, k2, v2)
  assert "shard_map" in text and "ppermute" not in text and "all_gather" not in text
  np.testing.assert_allclose(np.asarray(out), _ref(q2, k2, v2), atol=2e-6, rtol=1e-5)
  # a bias (umT5) or a non-dividing length keeps the plain dispatch, or raises when strict
  bias = jnp.zeros((1, 4, 32, 32))
  with use_context_parallel(mesh):
    assert "shard_map" not in _jaxpr(lambda q, k, v: attention(q, k, v, bias=bias), q, k, v)
  with use_context_parallel(mesh, strict=True):
    with pytest.raises(Gen3RInputError, match="cannot split this attention call over 'context' because a bias"):
      attention(q, k, v, bias=bias)
  # a mesh without context splitting makes the hook a no-op
  with use_context_parallel(make_mesh({"data": 8})):
    assert active() is None


def test_wan_dit_block_runs_unchanged_under_context_parallel():
  # one real Wan DiT block: self-attention (3D RoPE) goes round the ring, the text/image cross-attention
  # splits its queries only; no model code changes
  from flax import nnx
  from gen3r_jax.models.wan_dit.blocks import DiTBlock
  from gen3r_jax.models.wan_dit.config import WanDiTConfig
  from gen3r_jax.nn.rope import rope_tables
  cfg = WanDiTConfig.tiny()
  graphdef, state = nnx.split(DiTBlock(cfg, rngs=nnx.Rngs(3)))
  grid, r = (2, 2, 4), np.random.RandomState(8)
  x = jnp.asarray(r.randn(2, 16, cfg.dim), jnp.float32)                          # [B, f*h*w, D]
  e0 = jnp.asarray(r.randn(2, 6, cfg.dim), jnp.float32)
  txt, img = (jnp.asarray(r.randn(2, n, cfg.dim), jnp.float32) for n in (cfg.text_len, 5))
  rope = rope_tables(grid, cfg.head_dim)
  fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, e0, rope, txt, img))
  ref = np.asarray(fwd(state, x))
  mesh = make_mesh({"context": 2}, devices=jax.devices()[:2])  # 2 devices: a cheap compile on CI
  with use_context_parallel(mesh, "ring"):
    text = _jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, e0, rope, txt, img), state, x)
    out = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, e0, rope, txt, img))(state, x))
  assert text.count("shard_map[") == 3 and text.count("ppermute[") == 2  # self: k, v once round a 2-ring; 2 x cross
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ Ulysses


def _grads(fn, q, k, v, w):
  return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w), argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("shape,heads,strategy,split,collectives", [
    # plain Ulysses: heads divide context; one all-to-all in (stacked q/k/v), one out
    ({"context": 8}, 8, "ulysses", (8, 1), ("all_to_all",)),
    ({"data": 2, "context": 4}, 4, "ulysses", (4, 1), ("all_to_all",)),
    # 12 heads on context 8 (the 1.3B DiT's count): Ulysses over 4, then a ring / all-gather over 2
    ({"context": 8}, 12, "ulysses_ring", (4, 2), ("all_to_all", "ppermute")),
    ({"context": 8}, 12, "ulysses_allgather", (4, 2), ("all_to_all", "all_gather")),
    # heads sharded over tensor first: 12 / 2 = 6 per shard, Ulysses over gcd(6, 4) = 2, ring over 2
    ({"context": 4, "tensor": 2}, 12, "ulysses_ring", (2, 2), ("all_to_all", "ppermute")),
    # heads coprime to context: no all-to-all at all, the hybrid is the plain ring / all-gather
    ({"context": 8}, 3, "ulysses_ring", (1, 8), ("ppermute",)),
    ({"context": 4, "fsdp": 2}, 3, "ulysses_allgather", (1, 4), ("all_gather",)),
])
def test_ulysses_values_and_gradients_match_unsharded_ring_and_allgather(shape, heads, strategy, split,
                                                                           collectives):
  mesh = make_mesh(shape)
  # 24 tokens = 3 per shard on context 8 (odd, not a power of two), batch 2, head dim 8
  q, k, v = _qkv(l=24, h=heads, seed=10)
  w = jnp.asarray(np.random.RandomState(11).randn(*q.shape), jnp.float32)
  n = shape["context"]
  spec = qkv_spec(q.shape, mesh)
  assert ulysses_split(local_heads(q.shape, spec, mesh), n) == split
  fn = lambda strategy: (lambda q, k, v: context_attention(q, k, v, mesh=mesh, strategy=strategy,  # noqa: E731
                                                           implementation="xla"))
  text = _jaxpr(fn(strategy), q, k, v)
  for c in ("all_to_all", "ppermute", "all_gather"):
    assert (c in text) == (c in collectives), (c, text.count(c))
  out = jax.jit(fn(strategy))(q, k, v)
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, spec), 4), out.sharding
  ref = _ref(q, k, v)
  np.testing.assert_allclose(np.asarray(out), ref, atol=2e-6, rtol=1e-5)
  for other in ("ring", "allgather"):               # the same numbers as the existing strategies
    np.testing.assert_allclose(np.asarray(out), np.asarray(jax.jit(fn(other))(q, k, v)), atol=2e-6, rtol=1e-5)
  grads = jax.jit(lambda q, k, v: _grads(fn(strategy), q, k, v, w))(q, k, v)
  want = _grads(lambda q, k, v: local_attention(q, k, v, implementation="xla"), q, k, v, w)
  for name, g, r in zip("qkv", grads, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-6, rtol=1e-5, err_msg=name)


def test_ulysses_bfloat16_and_large_logits():
  mesh = make_mesh({"context": 4, "tensor": 2})
  q, k, v = _qkv(h=8, dtype=jnp.bfloat16, seed=12)
  out = context_attention(q, k, v, mesh=mesh, strategy="ulysses", implementation="xla")
  assert out.dtype == jnp.bfloat16
  ref = _ref(*(a.astype(jnp.float32) for a in (q, k, v)))
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2, rtol=3e-2)
  q, k, v = _qkv(h=6, amp=12.0, seed=13)                                   # logits ~ +-1e3, hybrid ring
  out = np.asarray(context_attention(q, k, v, mesh=make_mesh({"context": 8}), strategy="ulysses_ring"))
  assert np.isfinite(out).all()
  np.testing.assert_allclose(out, _ref(q, k, v), atol=1e-4, rtol=1e-4)


def test_ulysses_that_cannot_split_the_heads_is_a_one_line_error():
  mesh = make_mesh({"context": 8})
  q, k, v = _qkv(l=16, h=12)
  msg = (r"context strategy 'ulysses' needs the attention heads per shard \(12\) divisible by the mesh "
         r"'context' size 8; use 'ulysses_ring' or 'ulysses_allgather' \(Ulysses over 4, then ring / all-gather "
         r"over 2\), or a 'context' size that divides 12\.")
  with pytest.raises(Gen3RInputError, match=msg):
    context_attention(q, k, v, mesh=mesh, strategy="ulysses")
  # through the model hook: a call of another network than the checked one (check_strategy below) keeps the plain
  # dispatch, exactly; strict raises
  with use_context_parallel(mesh, "ulysses"):
    assert "shard_map" not in _jaxpr(lambda q, k, v: attention(q, k, v), q, k, v)
    np.testing.assert_allclose(np.asarray(attention(q, k, v)), _ref(q, k, v), atol=2e-6, rtol=1e-5)
  with use_context_parallel(mesh, "ulysses", strict=True), pytest.raises(
      Gen3RInputError, match=r"because plain 'ulysses' cannot split its 12 heads per shard over 'context'=8"):
    attention(q, k, v)
  # the same check from config values alone (the sampler and the trainer run it before compiling)
  with pytest.raises(Gen3RInputError, match=msg):
    check_strategy("ulysses", 12, {"context": 8})
  with pytest.raises(Gen3RInputError, match=r"heads per shard \(6\)"):
    check_strategy("ulysses", 12, {"context": 4, "tensor": 2})
  check_strategy("ulysses", 40, {"context": 8})             # the 14B: 40 heads on 8
  # the heads split as the rules say (qkv_spec): act_heads over fsdp here, 16 / 2 = 8 per shard on context 16
  heads_on_fsdp = dataclasses.replace(DEFAULT_RULES, table=tuple({**dict(DEFAULT_RULES.table),
                                                                  "act_heads": ("fsdp",)}.items()))
  check_strategy("ulysses", 16, {"context": 16, "fsdp": 2})                   # default rules: heads not on fsdp
  with pytest.raises(Gen3RInputError, match=r"heads per shard \(8\) divisible by the mesh 'context' size 16"):
    check_strategy("ulysses", 16, {"context": 16, "fsdp": 2}, heads_on_fsdp)
  check_strategy("ulysses_ring", 12, {"context": 8})
  with pytest.raises(Gen3RInputError, match="context strategy must be one of"):
    check_strategy("usp", 12, {"context": 8})
  assert ulysses_groups(4, 2) == ([[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 4], [1, 5], [2, 6], [3, 7]])


def test_wan_dit_block_under_ulysses_hook():
  # a real DiT block (2 heads) on context 2: self-attention all-to-alls over heads, cross-attention as before
  from flax import nnx
  from gen3r_jax.models.wan_dit.blocks import DiTBlock
  from gen3r_jax.models.wan_dit.config import WanDiTConfig
  from gen3r_jax.nn.rope import rope_tables
  cfg = WanDiTConfig.tiny()
  graphdef, state = nnx.split(DiTBlock(cfg, rngs=nnx.Rngs(3)))
  grid, r = (2, 2, 4), np.random.RandomState(8)
  x = jnp.asarray(r.randn(2, 16, cfg.dim), jnp.float32)
  e0 = jnp.asarray(r.randn(2, 6, cfg.dim), jnp.float32)
  txt, img = (jnp.asarray(r.randn(2, n, cfg.dim), jnp.float32) for n in (cfg.text_len, 5))
  rope = rope_tables(grid, cfg.head_dim)
  # a fresh function per trace: a traced function is cached with the hook it saw
  run = lambda: (lambda s, x: nnx.merge(graphdef, s)(x, e0, rope, txt, img))    # noqa: E731
  ref = np.asarray(jax.jit(run())(state, x))
  mesh = make_mesh({"context": 2}, devices=jax.devices()[:2])
  with use_context_parallel(mesh, "ulysses"):
    text = _jaxpr(run(), state, x)
    out = np.asarray(jax.jit(run())(state, x))
  assert text.count("shard_map[") == 3 and text.count("all_to_all[") == 2 and "ppermute" not in text
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def test_frozen_vae_encoder_runs_under_a_ulysses_training_context():
  # an online stage-2 step traces the frozen Wan VAE encoder (1-head attention) inside the DiT's context-parallel
  # block: plain 'ulysses' cannot split one head, so that call keeps the plain dispatch and the values are exact
  from flax import nnx
  from gen3r_jax.models.wan_vae.vae import WanVAE, WanVAEConfig
  vae = WanVAE(WanVAEConfig.tiny(), rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.RandomState(14).uniform(-1, 1, (1, 5, 16, 16, 3)), jnp.float32)
  ref = np.asarray(vae.encode_params(x))
  mesh = make_mesh({"context": 2}, devices=jax.devices()[:2])
  with use_context_parallel(mesh, "ulysses"):
    out = np.asarray(jax.jit(lambda x: vae.encode_params(x))(x))
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
