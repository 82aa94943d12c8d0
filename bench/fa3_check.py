"""FlashAttention-3's gradients against the XLA reference: the package's backward and ours (gen3r_jax.nn.fa3).

    python -m bench.fa3_check [--time]     # GPU; relative L2 error of out, dq, dk, dv per (B, Lq, Lk, H, D)

Rows per case: ``package`` (flash-attn3-jax's own backward), ``rows128`` (our call of the backward target with
the package's row-buffer size, the query length rounded up to 128: reproduces its fault), ``fixed`` (our call
with :func:`gen3r_jax.nn.fa3.softmax_rows`). ``again`` is the difference between two identical calls (a moving
error is a buffer overrun or race). ``--time`` adds forward / backward timings at the DiT's self-attention
shape for FA3 (fixed) and cuDNN.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp

from gen3r_jax.nn import fa3
from gen3r_jax.nn.attention import cudnn_attention, xla_attention

CASES = ((1, 1024, 1024, 2, 128), (1, 1000, 1000, 2, 128), (1, 1024, 1000, 2, 128), (1, 1000, 1024, 2, 128),
         (2, 1000, 1000, 12, 128), (1, 4096, 4096, 2, 128), (1, 4000, 4000, 2, 128), (2, 31850, 512, 12, 128),
         (2, 31850, 257, 12, 128), (2, 31850, 31850, 12, 128), (2, 31744, 31744, 12, 128))


def rel(a, b):
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def reference(q, k, v, chunk=2048):
  s = 1 / math.sqrt(q.shape[-1])
  c = min(q.shape[1], chunk)
  return jnp.concatenate([jax.checkpoint(lambda qq: xla_attention(qq, k, v, scale=s))(q[:, i:i + c])
                          for i in range(0, q.shape[1], c)], 1)


def variants(d):
  s = 1 / math.sqrt(d)

  def ours(rows_fn):
    @jax.custom_vjp
    def f(q, k, v):
      return fa3.fa3_forward_with_lse(q, k, v, scale=s)[0]

    def fwd(q, k, v):
      out, lse = fa3.fa3_forward_with_lse(q, k, v, scale=s)
      return out, (q, k, v, out, lse)

    def bwd(res, g):
      q, k, v, out, lse = res
      return fa3.fa3_backward(g.astype(q.dtype), q, k, v, out, lse, scale=s, rows=rows_fn(q.shape[1]))
    f.defvjp(fwd, bwd)
    return f

  def package(q, k, v):
    from flash_attn3_jax import flash_mha  # optional GPU package
    return flash_mha(q, k, v, softmax_scale=s)
  return {"package": package, "rows128": ours(lambda lq: -(-lq // 128) * 128),
          "fixed": lambda q, k, v: fa3.fa3_attention(q, k, v, s)}


def grads(fn, q, k, v, ct):
  loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * ct)
  return jax.jit(fn)(q, k, v), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def check():
  for b, lq, lk, h, d in CASES:
    ks = jax.random.split(jax.random.key(lq + lk), 4)
    q, k, v = (jax.random.normal(kk, (b, n, h, d), jnp.bfloat16) for kk, n in zip(ks[:3], (lq, lk, lk)))
    ct = jax.random.normal(ks[3], (b, lq, h, d), jnp.float32)
    ro, rg = grads(reference, q, k, v, ct)
    for name, fn in variants(d).items():
      o, g = grads(fn, q, k, v, ct)
      _, g2 = grads(fn, q, k, v, ct)
      errs = " ".join(f"d{n}={rel(a, r):.2e}" for n, a, r in zip("qkv", g, rg))
      again = max(rel(a, r) for a, r in zip(g2, g))
      print(f"B{b} Lq{lq} Lk{lk} H{h} D{d} {name:8s} out={rel(o, ro):.2e} {errs} again={again:.1e}", flush=True)


def _time(f, *args, n=10):
  jax.block_until_ready(f(*args))
  t = time.perf_counter()
  for _ in range(n):
    r = f(*args)
  jax.block_until_ready(r)
  return (time.perf_counter() - t) / n


TIMED = ((2, 31850, 31850, 12, 128), (2, 31850, 512, 12, 128), (2, 31850, 257, 12, 128))


def timing():
  for b, lq, lk, h, d in TIMED:
    ks = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(kk, (b, n, h, d), jnp.bfloat16) for kk, n in zip(ks[:3], (lq, lk, lk)))
    ct = jax.random.normal(ks[3], (b, lq, h, d), jnp.bfloat16)
    s = 1 / math.sqrt(d)
    flop = 4 * b * h * lq * lk * d
    for name, fn in (("fa3_fixed", lambda q, k, v: fa3.fa3_attention(q, k, v, s)),
                     ("cudnn", lambda q, k, v: cudnn_attention(q, k, v, scale=s))):
      fwd = _time(jax.jit(fn), q, k, v)
      vg = _time(jax.jit(lambda q, k, v: jax.vjp(fn, q, k, v)[1](ct)), q, k, v)
      print(f"[{b},{lq},{lk},{h},{d}] {name}: forward {fwd * 1e3:.2f} ms {flop / fwd / 1e12:.0f} TFLOP/s; "
            f"forward+backward {vg * 1e3:.2f} ms, backward {(vg - fwd) * 1e3:.2f} ms "
            f"~{2.5 * flop / (vg - fwd) / 1e12:.0f} TFLOP/s", flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--time", action="store_true")
  ap.add_argument("--no-check", action="store_true")
  a = ap.parse_args()
  if a.time:
    timing()
  if not a.no_check:
    check()


if __name__ == "__main__":
  main()
