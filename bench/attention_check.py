"""GPU check of the attention dispatch: cuDNN vs the XLA reference, values and gradients, at the odd lengths
the models use (31,850 video tokens x 257 CLIP tokens, VGGT's 1,605-token frames, 49 camera tokens).

    python -m bench.attention_check

Prints the relative L2 difference of the loss and of dq, dk, dv per shape (bf16 inputs: expect ~1e-2 or less).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gen3r_jax.nn.attention import local_attention

SHAPES = ((31850, 257, 12, 128), (1605, 1605, 16, 64), (49, 49, 16, 64), (512, 512, 12, 128))


def rel(a, b) -> float:
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def main() -> int:
  for lq, lk, h, d in SHAPES:
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (2, lq, h, d), jnp.bfloat16)
    k = jax.random.normal(ks[1], (2, lk, h, d), jnp.bfloat16)
    v = jax.random.normal(ks[2], (2, lk, h, d), jnp.bfloat16)
    ct = jax.random.normal(ks[3], (2, lq, h, d), jnp.float32)
    res = {}
    for impl in ("cudnn", "xla"):
      f = lambda q, k, v, impl=impl: jnp.sum(local_attention(q, k, v, implementation=impl).astype(jnp.float32) * ct)
      res[impl] = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(q, k, v)
    (l1, g1), (l2, g2) = res["cudnn"], res["xla"]
    print(f"q {lq} k {lk} h {h} d {d}: loss rel {abs(float(l1) - float(l2)) / abs(float(l2)):.2e} "
          f"dq {rel(g1[0], g2[0]):.2e} dk {rel(g1[1], g2[1]):.2e} dv {rel(g1[2], g2[2]):.2e}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
