"""Diagnose FlashAttention-3's (flash-attn3-jax) gradients against the XLA reference at aligned and ragged lengths.

    python -m bench.fa3_check        # GPU; prints rel. L2 error of out, dq, dk, dv per (B, Lq, Lk, H, D)

Also checks that two calls agree (a moving error is a race or an uninitialised buffer).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gen3r_jax.nn.attention import local_attention, xla_attention

CASES = ((1, 1024, 1024, 2, 128), (1, 1000, 1000, 2, 128), (1, 1024, 1000, 2, 128), (1, 1000, 1024, 2, 128),
         (2, 1000, 1000, 12, 128), (1, 1000, 1000, 2, 64), (1, 4096, 4096, 2, 128), (1, 4000, 4000, 2, 128),
         (2, 31872, 31850, 12, 128), (2, 31850, 31850, 12, 128), (2, 31744, 31744, 12, 128))


def rel(a, b):
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def main():
  for b, lq, lk, h, d in CASES:
    ks = jax.random.split(jax.random.key(lq + lk), 4)
    q = jax.random.normal(ks[0], (b, lq, h, d), jnp.bfloat16)
    k = jax.random.normal(ks[1], (b, lk, h, d), jnp.bfloat16)
    v = jax.random.normal(ks[2], (b, lk, h, d), jnp.bfloat16)
    ct = jax.random.normal(ks[3], (b, lq, h, d), jnp.float32)
    out = {}
    for impl in ("ref", "fa3", "fa3_again"):
      if impl == "ref":
        s = 1 / math.sqrt(d)
        c = min(lq, 2048)
        fn = lambda q, k, v: jnp.concatenate(
            [jax.checkpoint(lambda qq: xla_attention(qq, k, v, scale=s))(q[:, i:i + c]) for i in range(0, lq, c)], 1)
      else:
        fn = lambda q, k, v: local_attention(q, k, v, implementation="fa3")
      loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * ct)
      out[impl] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)
      out[impl + "_o"] = jax.jit(fn)(q, k, v)
    r = out["ref"]
    msg = " ".join(f"{n}={rel(g, rg):.2e}" for n, g, rg in zip(("dq", "dk", "dv"), out["fa3"][1], r[1]))
    again = " ".join(f"{n}={rel(g, rg):.2e}" for n, g, rg in zip(("dq", "dk", "dv"), out["fa3_again"][1], out["fa3"][1]))
    print(f"B{b} Lq{lq} Lk{lk} H{h} D{d}: out={rel(out['fa3_o'], out['ref_o']):.2e} {msg} | 2nd call vs 1st: {again}",
          flush=True)


if __name__ == "__main__":
  main()
