"""The upstream TPU splash-attention kernel behind ``implementation="splash"``, run on CPU in Pallas interpret
mode: values and gradients against the XLA path, inside ``shard_map`` (context parallel), and the clear errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.nn.attention import attention, local_attention
from gen3r_jax.nn.context_parallel import context_attention, use_context_parallel
from gen3r_jax.nn.splash import SplashUnavailableError, splash_options
from gen3r_jax.parallel.rules import make_mesh


def _qkv(b=2, l=256, h=2, d=64, lk=None, seed=0):
  r = np.random.RandomState(seed)
  return tuple(jnp.asarray(r.randn(b, n, h, d), jnp.float32) for n in (l, lk or l, lk or l))


def test_splash_matches_xla_in_interpret_mode():
  q, k, v = _qkv(lk=384)  # Lq != Lk, blocks 256 / 128 chosen from the lengths
  ref = np.asarray(local_attention(q, k, v, implementation="xla", scale=0.2))
  with splash_options(interpret=True):
    out = attention(q, k, v, implementation="splash", scale=0.2)
  assert out.shape == q.shape and out.dtype == q.dtype
  np.testing.assert_allclose(np.asarray(out), ref, atol=2e-6, rtol=1e-5)


def test_splash_gradients_match_xla():
  q, k, v = _qkv(b=1, l=128, h=1, d=32, seed=1)
  w = jnp.asarray(np.random.RandomState(2).randn(*q.shape), jnp.float32)
  loss = lambda impl: (lambda q, k, v: jnp.sum(attention(q, k, v, implementation=impl) * w))
  ref = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
  with splash_options(interpret=True):
    grads = jax.grad(loss("splash"), argnums=(0, 1, 2))(q, k, v)
  for name, g, r in zip("qkv", grads, ref):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-4, err_msg=name)


def test_splash_inside_shard_map_context_parallel():
  # 2 devices: each shard runs the kernel on its 128 queries against the all-gathered 256 keys
  mesh = make_mesh({"context": 2}, devices=jax.devices()[:2])
  q, k, v = _qkv(b=1, seed=3)
  ref = np.asarray(local_attention(q, k, v, implementation="xla"))
  with splash_options(interpret=True):
    out = context_attention(q, k, v, mesh=mesh, implementation="splash", strategy="allgather")
    with use_context_parallel(mesh):  # the model hook, as a DiT would call it
      hooked = jax.jit(lambda q, k, v: attention(q, k, v, implementation="splash"))(q, k, v)
  np.testing.assert_allclose(np.asarray(out), ref, atol=2e-6, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(hooked), ref, atol=2e-6, rtol=1e-5)


def test_splash_errors_are_clear():
  q, k, v = _qkv(b=1, h=1, d=8)
  if jax.default_backend() != "tpu":
    with pytest.raises(SplashUnavailableError, match="TPU splash-attention kernel; the backend is 'cpu'"):
      attention(q, k, v, implementation="splash")
  with splash_options(interpret=True):
    with pytest.raises(Gen3RInputError, match="neither an additive bias nor a mask"):
      attention(q, k, v, implementation="splash", bias=jnp.zeros((1, 1, 256, 256)))
    with pytest.raises(Gen3RInputError, match="neither an additive bias nor a mask"):
      attention(q, k, v, implementation="splash", mask=jnp.ones((1, 1, 256, 256), bool))
    with pytest.raises(Gen3RInputError, match="query length 200 must be a multiple of 128"):
      attention(q[:, :200], k, v, implementation="splash")
    with splash_options(block_kv=512):
      with pytest.raises(Gen3RInputError, match="key length 256 is not a multiple of the block size 512"):
        attention(q, k, v, implementation="splash")


def test_attention_remat_policy_keeps_the_splash_forward():
  # splash's kernels are all `pallas_call`: the "attention" policy saves the forward kernel's outputs by its name,
  # so the backward runs the two backward kernels only (no second forward)
  from gen3r_jax.nn.stack import checkpointed
  q, k, v = _qkv(b=1, l=128, h=1, d=32, seed=3)
  f = checkpointed(lambda q: jnp.sum(jnp.sin(attention(q, k, v, implementation="splash"))), "attention")
  with splash_options(interpret=True):
    text = str(jax.make_jaxpr(jax.grad(f))(q))
  kernels = sorted(re.findall(r"name=(splash_mha_\w+)", text))
  assert kernels == ["splash_mha_dkv_no_residuals", "splash_mha_dq_no_residuals", "splash_mha_fwd_residuals"], kernels
