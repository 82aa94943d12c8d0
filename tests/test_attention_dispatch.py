"""The attention dispatch's choice of kernel (CPU: availability is faked), its fallbacks and error messages, the
FA3 custom-VJP wiring and row buffers, and the remat policy's kernel names. The kernels themselves are checked on a GPU by
tests/test_attention_gpu.py."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.nn import attention as attn
from gen3r_jax.nn import fa3
from gen3r_jax.nn.stack import checkpointed, remat_policy
from gen3r_jax.parallel.rules import make_mesh

BF16 = jnp.bfloat16


def _avail(*names):
  return lambda n: n in names


def test_auto_picks_per_head_dim_from_the_measured_table():
  every = _avail("xla", "cudnn", "fa3", "fa3_fwd")
  assert attn.resolve_implementation("auto", BF16, 128, available=every) == "fa3_fwd"      # the DiT
  assert attn.resolve_implementation("auto", BF16, 64, available=every) == "cudnn"     # VGGT, CLIP
  assert attn.resolve_implementation("auto", jnp.float16, 128, available=every) == "fa3_fwd"
  assert attn.resolve_implementation("auto", BF16, 96, available=every) == attn.GPU_DEFAULT[0]
  assert attn.resolve_implementation("auto", BF16, None, available=every) == attn.GPU_DEFAULT[0]
  # a bias or mask: only cuDNN / XLA take one
  assert attn.resolve_implementation("auto", BF16, 128, masked=True, available=every) == "cudnn"
  # float32 inputs, or no GPU: XLA
  assert attn.resolve_implementation("auto", jnp.float32, 128, available=every) == "xla"
  assert attn.resolve_implementation("auto", BF16, 128, available=_avail("xla")) == "xla"
  # head dims a kernel cannot take are skipped
  assert attn.resolve_implementation("auto", BF16, 256, available=every) == "fa3_fwd"
  assert attn.resolve_implementation("auto", BF16, 256, available=_avail("xla", "cudnn")) == "xla"


def test_a_missing_optional_kernel_is_not_chosen():
  """No flash-attn3-jax: ``auto`` falls back to cuDNN at head dim 128, without error."""
  assert attn.resolve_implementation("auto", BF16, 128, available=_avail("xla", "cudnn")) == "cudnn"


def test_explicit_names_pass_through_and_unknown_names_fail():
  for name in ("xla", "cudnn", "fa3", "fa3_fwd", "splash"):
    assert attn.resolve_implementation(name, jnp.float32, 64, available=_avail()) == name
  with pytest.raises(ValueError, match="must be one of"):
    attn.resolve_implementation("flash", BF16, 128)


def test_availability_on_this_machine_and_with_a_hopper_lacking_the_package(monkeypatch):
  on_gpu = jax.default_backend() == "gpu"
  assert attn.kernel_available("xla")
  assert attn.kernel_available("cudnn") == on_gpu
  if not on_gpu:
    assert not attn.kernel_available("fa3")
    assert attn.resolve_implementation("auto", BF16, 128) == "xla"
  # a Hopper GPU without flash-attn3-jax: fa3 unavailable, auto -> cudnn, an explicit fa3 names the install
  monkeypatch.setattr(attn, "gpu_capability", lambda device=None: (9, 0))
  monkeypatch.setattr(attn, "_has_package", lambda m: False)
  assert attn.kernel_available("cudnn") and not attn.kernel_available("fa3")
  assert attn.resolve_implementation("auto", BF16, 128) == "cudnn"
  for name in ("fa3", "fa3_fwd"):
    with pytest.raises(Gen3RInputError, match=r"pip install 'gen3r-jax\[fa3\]'"):
      attn._require_runnable(name)
  # an Ampere GPU with the package: FA3 is Hopper-only
  monkeypatch.setattr(attn, "gpu_capability", lambda device=None: (8, 0))
  monkeypatch.setattr(attn, "_has_package", lambda m: True)
  assert not attn.kernel_available("fa3")
  with pytest.raises(Gen3RInputError, match="compute capability 9"):
    attn._require_runnable("fa3")


def test_old_gpus_odd_head_dims_and_a_broken_package_fall_back(monkeypatch, caplog):
  # cuDNN's fused attention needs Ampere (8.0) or newer: on a Volta, auto takes xla
  monkeypatch.setattr(attn, "gpu_capability", lambda device=None: (7, 0))
  assert not attn.kernel_available("cudnn")
  assert attn.resolve_implementation("auto", BF16, 64) == "xla"
  # a head dim cuDNN / FA3 do not take (not a multiple of 8) -> xla on a Hopper with everything installed
  monkeypatch.setattr(attn, "gpu_capability", lambda device=None: (9, 0))
  monkeypatch.setattr(attn, "_has_package", lambda m: True)
  assert attn.resolve_implementation("auto", BF16, 100) == "xla"
  assert attn.resolve_implementation("auto", BF16, 128) == "fa3_fwd"
  # installed but not importable (e.g. its CUDA runtime does not load): not used, one warning
  monkeypatch.undo()
  attn._has_package.cache_clear()
  monkeypatch.setattr(attn.importlib.util, "find_spec", lambda name: object())
  def broken(name):
    raise ImportError("libcudart.so.12: cannot open shared object file")
  monkeypatch.setattr(attn.importlib, "import_module", broken)
  with caplog.at_level(logging.WARNING, logger="gen3r_jax.nn.attention"):
    assert not attn._has_package(attn.FA3_PACKAGE)
  assert any("does not import" in r.getMessage() and "libcudart" in r.getMessage() for r in caplog.records)
  monkeypatch.undo()
  attn._has_package.cache_clear()


def test_explicit_fa3_with_inputs_it_does_not_take_is_a_one_line_error(monkeypatch):
  monkeypatch.setattr(attn, "_require_runnable", lambda impl: None)
  for name in ("fa3", "fa3_fwd"):
    for q, match in ((jnp.zeros((1, 4, 2, 8), jnp.float32), "needs bfloat16 or float16 inputs, got float32"),
                     (jnp.zeros((1, 4, 2, 12), BF16), "head dim that is a multiple of 8 up to 256, got 12")):
      with pytest.raises(Gen3RInputError, match=match) as e:
        attn.attention(q, q, q, implementation=name)
      assert "\n" not in str(e.value)
    with pytest.raises(Gen3RInputError, match="takes no bias or mask"):
      q = jnp.zeros((1, 4, 2, 8), BF16)
      attn.attention(q, q, q, implementation=name, mask=jnp.ones((1, 1, 4, 4), bool))


def test_explicit_gpu_kernel_without_a_gpu_is_a_one_line_error(monkeypatch):
  monkeypatch.setattr(attn, "gpu_capability", lambda device=None: None)   # no GPU, on any backend
  q = jnp.zeros((1, 4, 2, 8), BF16)
  for name in ("fa3", "fa3_fwd", "cudnn"):
    with pytest.raises(Gen3RInputError, match="attention='auto' or 'xla'") as e:
      attn.attention(q, q, q, implementation=name)
    assert "\n" not in str(e.value)


def test_auto_choice_is_logged_once_and_recorded(caplog):
  q = jnp.asarray(np.random.RandomState(0).randn(1, 7, 2, 8), BF16)
  k = jnp.asarray(np.random.RandomState(1).randn(1, 5, 2, 8), BF16)
  with caplog.at_level(logging.INFO, logger="gen3r_jax.nn.attention"):
    for _ in range(3):
      attn.attention(q, k, k)
  lines = [r.getMessage() for r in caplog.records if "attention auto" in r.getMessage()]
  assert len(lines) == 1 and "(1, 7, 2, 8)" in lines[0] and "(1, 5, 2, 8)" in lines[0], lines
  want = "xla" if jax.default_backend() != "gpu" else attn.resolve_implementation("auto", BF16, 8)
  assert attn.chosen_implementations()["q [1, 7, 2, 8] k [1, 5, 2, 8] bfloat16"] == want


def _qkv(seed=0, shape=(8, 12, 4, 8)):
  r = np.random.RandomState(seed)
  return tuple(jnp.asarray(r.randn(*shape), jnp.float32) for _ in range(3))


def _loss(fn):
  return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))


def _assert_grads_like(f, ref, q, k, v):
  """``f``'s value and gradients under differentiation equal ``ref``'s: eagerly, under remat "attention" and
  jitted on a batch/heads-sharded mesh of 8 devices. Returns the mesh-sharded arrays and mesh."""
  want_v, want_g = jax.value_and_grad(_loss(ref), argnums=(0, 1, 2))(q, k, v)
  got_v, got_g = jax.value_and_grad(_loss(f), argnums=(0, 1, 2))(q, k, v)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-6)
  for a, b in zip(got_g, want_g):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  g_remat = jax.grad(checkpointed(lambda q: _loss(f)(q, k, v), "attention"))(q)
  np.testing.assert_allclose(g_remat, want_g[0], rtol=1e-5, atol=1e-6)
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sh = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
  qs, ks, vs = (jax.device_put(x, sh) for x in (q, k, v))
  with jax.set_mesh(mesh):
    g = jax.jit(jax.grad(_loss(f), argnums=(0, 1, 2)))(qs, ks, vs)
  for a, b in zip(g, want_g):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  return mesh, (qs, ks, vs)


def test_forward_with_training_kernel_uses_each_where_it_should():
  """The primal is the inference kernel; gradients (and the value under differentiation) are the training
  kernel's, also under remat and under a batch/heads-sharded mesh of 8 devices."""
  q, k, v = _qkv()
  train = lambda q, k, v: attn.xla_attention(q, k, v, scale=0.3)
  infer = lambda q, k, v: train(q, k, v) + 1.0          # distinguishable on purpose
  f = attn.forward_with_training_kernel(infer, train)
  np.testing.assert_allclose(f(q, k, v), infer(q, k, v))
  mesh, sharded = _assert_grads_like(f, train, q, k, v)
  with jax.set_mesh(mesh):
    out = jax.jit(f)(*sharded)
  np.testing.assert_allclose(out, infer(q, k, v), rtol=1e-6, atol=1e-6)


def test_fa3_row_buffers_fit_every_backward_tile():
  """The backward's float32 row buffers hold the query length rounded up to any of FA3's query tiles (the
  package's wrapper rounded to 128 only; the kernel's tile at head dim 128 is 80 rows)."""
  for lq in (1, 80, 127, 1000, 1024, 4000, 4096, 31850):
    rows = fa3.softmax_rows(lq)
    assert all(rows >= -(-lq // t) * t for t in (64, 80, 96, 128)), (lq, rows)
    assert rows < lq + 128
  assert fa3.softmax_rows(1024) > 1024 and fa3.softmax_rows(4096) > 4096


def test_fa3_custom_vjp_routes_forward_and_backward(monkeypatch):
  """``nn.fa3.fa3_attention`` is FA3's forward (with its log-sum-exp) and FA3's backward: with both kernels
  stood in for by XLA (CPU), values and gradients equal ``xla`` attention, also under remat and under a
  batch/heads-sharded mesh of 8 devices."""
  q, k, v = _qkv()
  scale = 0.3
  ref = lambda q, k, v: attn.xla_attention(q, k, v, scale=scale)
  calls = {"fwd": 0, "bwd": 0}

  def fake_fwd(q, k, v, *, scale):
    calls["fwd"] += 1
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    return ref(q, k, v), jax.nn.logsumexp(logits, axis=-1)

  def fake_bwd(dout, q, k, v, out, lse, *, scale, rows=None):
    calls["bwd"] += 1
    assert lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    return jax.vjp(ref, q, k, v)[1](dout)

  monkeypatch.setattr(fa3, "fa3_forward_with_lse", fake_fwd)
  monkeypatch.setattr(fa3, "fa3_backward", fake_bwd)
  f = lambda q, k, v: fa3.fa3_attention(q, k, v, scale)
  np.testing.assert_allclose(f(q, k, v), ref(q, k, v), rtol=1e-6)
  _assert_grads_like(f, ref, q, k, v)
  assert calls["bwd"] >= 1


@pytest.mark.parametrize("impl", ["fa3", "fa3_fwd"])
def test_unpartitionable_kernels_run_per_shard_under_a_mesh(monkeypatch, impl):
  """XLA cannot partition FA3's FFI calls: under a mesh the dispatch runs them per device (``shard_map``) on the
  batch / heads block the rules give, never on gathered global arrays; values and gradients stay exact."""
  q, k, v = (x.astype(BF16) for x in _qkv())                      # [8, 12, 4, 8]
  seen = []

  def fake_fwd(q, k, v, *, scale):
    seen.append(q.shape)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    return attn.xla_attention(q, k, v, scale=scale), jax.nn.logsumexp(logits, axis=-1)

  def fake_bwd(dout, q, k, v, out, lse, *, scale, rows=None):
    seen.append(q.shape)
    return jax.vjp(lambda q, k, v: attn.xla_attention(q, k, v, scale=scale), q, k, v)[1](dout)

  monkeypatch.setattr(fa3, "fa3_forward_with_lse", fake_fwd)
  monkeypatch.setattr(fa3, "fa3_backward", fake_bwd)
  monkeypatch.setattr(attn, "_require_runnable", lambda impl: None)
  monkeypatch.setattr(attn, "cudnn_attention", attn.xla_attention)     # fa3_fwd's training kernel, stood in for
  f = lambda q, k, v: attn.attention(q, k, v, implementation=impl)   # noqa: E731
  ref = lambda q, k, v: attn.attention(q, k, v, implementation="xla")  # noqa: E731
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sh = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
  qs, ks, vs = (jax.device_put(x, sh) for x in (q, k, v))
  with jax.set_mesh(mesh):
    out = jax.jit(f)(qs, ks, vs)
    text = str(jax.make_jaxpr(f)(qs, ks, vs))
    grads = jax.jit(jax.grad(_loss(f), argnums=(0, 1, 2)))(qs, ks, vs)
  assert "shard_map" in text
  assert seen and set(seen) == {(2, 12, 2, 8)}, seen             # batch 8 / (data x fsdp), heads 4 / tensor
  f32 = lambda x: np.asarray(x, np.float32)   # noqa: E731
  np.testing.assert_allclose(f32(out), f32(ref(q, k, v)), rtol=1e-2, atol=1e-2)
  want = jax.grad(_loss(ref), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(grads, want):
    np.testing.assert_allclose(f32(a), f32(b), rtol=2e-2, atol=2e-2)
  seen.clear()
  f(q, k, v)                                                       # no mesh: the kernel sees the whole arrays
  assert seen == [(8, 12, 4, 8)]


def test_attention_remat_policy_saves_both_flash_forwards_and_no_backward():
  from jax.extend.core import Primitive
  policy = remat_policy("attention")
  for name in ("flash_mha_fwd", "dot_product_attention_fwd", "dot_product_attention_fwd_wrapper"):
    assert policy(Primitive(name)), name
  for name in ("flash_mha_bwd", "dot_product_attention_bwd", "exp"):
    assert not policy(Primitive(name)), name
