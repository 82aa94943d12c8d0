"""Where the DiT forward's time goes (GPU): ceilings, attention kernels and a trace of the full forward.

    python -m bench.dit_probe --out /tmp/probe [--trace]

Rows (each the median of ``iters`` timed calls after a warm-up, inputs random, never zeros):

* ``matmul``: a bf16 8192^3 product (the card's practical matrix ceiling);
* ``attn_<impl>``: self-attention alone at the 1.3B sampling shape ``[2, 31850, 12, 128]``;
* ``dit``: the full 1.3B forward (batch 2, 13 x 70 x 140 latents, camera map), as ``bench.dit``;
* ``dit_no_self_attn``: the same forward with the self-attention kernel replaced by ``v`` (what is left is the
  time of everything else: projections, FFN, cross-attention, norms, RoPE, modulation).

With ``--trace`` a Perfetto trace of two full forwards is written under ``--out`` (summarise it with
``python -m bench.trace_summary <file>``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.models.wan_dit import blocks as dit_blocks
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import create

SHAPE = (2, 31850, 12, 128)


def timeit(fn, *args, iters: int = 5) -> dict:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def matmul_row() -> dict:
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (8192, 8192), jnp.bfloat16)
  b = jax.random.normal(k2, (8192, 8192), jnp.bfloat16)
  r = timeit(jax.jit(lambda a, b: a @ b), a, b, iters=20)
  return {"name": "matmul 8192^3 bf16", **r, "tflops": 2 * 8192 ** 3 / r["median_s"] / 1e12}


def attn_flops(b, l, h, d, lk=None) -> float:
  return 4.0 * b * h * l * (lk or l) * d


def attention_rows(iters: int) -> list[dict]:
  b, l, h, d = SHAPE
  ks = jax.random.split(jax.random.key(1), 3)
  q, k, v = (jax.random.normal(kk, SHAPE, jnp.bfloat16) for kk in ks)
  rows = []
  f = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn"))
  r = timeit(f, q, k, v, iters=iters)
  rows.append({"name": "attn cudnn [2,31850,12,128]", **r, "tflops": attn_flops(b, l, h, d) / r["median_s"] / 1e12})
  # padded to a multiple of 128 (the upper bound of what a block-aligned kernel could do; values unmasked)
  lp = -(-l // 128) * 128
  qp, kp, vp = (jnp.pad(x, ((0, 0), (0, lp - l), (0, 0), (0, 0))) for x in (q, k, v))
  r = timeit(f, qp, kp, vp, iters=iters)
  rows.append({"name": f"attn cudnn padded {lp}", **r, "tflops": attn_flops(b, lp, h, d) / r["median_s"] / 1e12})
  # padded + key-length mask (the correct padded variant): same function as the unpadded call
  lens = jnp.full((b,), l, jnp.int32)
  fm = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(
      q, k, v, implementation="cudnn", query_seq_lengths=lens, key_value_seq_lengths=lens)[:, :l])
  r = timeit(fm, qp, kp, vp, iters=iters)
  ref = f(q, k, v).astype(jnp.float32)
  err = float(jnp.linalg.norm(fm(qp, kp, vp).astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
  rows.append({"name": f"attn cudnn padded {lp} + seq-length mask", **r, "rel_err_vs_unpadded": err,
               "tflops": attn_flops(b, l, h, d) / r["median_s"] / 1e12})
  # padded queries only (padded query rows are sliced off: exact); keys ragged
  fq = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="cudnn")[:, :l])
  r = timeit(fq, qp, k, v, iters=iters)
  err = float(jnp.linalg.norm(fq(qp, k, v).astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
  rows.append({"name": f"attn cudnn q padded {lp}, kv {l}", **r, "rel_err_vs_unpadded": err,
               "tflops": attn_flops(b, l, h, d) / r["median_s"] / 1e12})
  # padded keys masked by a broadcast additive bias [1, 1, 1, Lk] (exact: exp(-big) = 0)
  bias = jnp.where(jnp.arange(lp) < l, 0.0, -1e9).astype(jnp.bfloat16)[None, None, None, :]
  fb = jax.jit(lambda q, k, v, bias: jax.nn.dot_product_attention(q, k, v, bias=bias,
                                                                  implementation="cudnn")[:, :l])
  try:
    r = timeit(fb, qp, kp, vp, bias, iters=iters)
    err = float(jnp.linalg.norm(fb(qp, kp, vp, bias).astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
    rows.append({"name": f"attn cudnn padded {lp} + key bias", **r, "rel_err_vs_unpadded": err,
                 "tflops": attn_flops(b, l, h, d) / r["median_s"] / 1e12})
  except Exception as e:  # noqa: BLE001
    rows.append({"name": "attn cudnn padded + key bias", "error": repr(e)[:300]})
  if os.environ.get("PROBE_MGPU"):
    try_mgpu(rows, qp, kp, vp, iters, lp)
  return rows


def try_mgpu(rows, qp, kp, vp, iters, lp):
  b, _, h, d = SHAPE
  try:
    from jax.experimental.pallas.ops.gpu import attention_mgpu as mg
    for bq, bkv, steps in ((64, 128, 2), (64, 64, 2), (64, 128, 4)):
      cfg = mg.TuningConfig(block_q=bq, block_kv=bkv, max_concurrent_steps=steps)
      g = jax.jit(lambda q, k, v, cfg=cfg: mg.attention(q.astype(jnp.float16), k.astype(jnp.float16),
                                                         v.astype(jnp.float16), cfg))
      try:
        r = timeit(g, qp, kp, vp, iters=iters)
        rows.append({"name": f"attn mgpu padded {lp} bq{bq} bkv{bkv} s{steps}", **r,
                     "tflops": attn_flops(b, lp, h, d) / r["median_s"] / 1e12})
      except Exception as e:  # noqa: BLE001 - a probe: record and go on
        rows.append({"name": f"attn mgpu bq{bq} bkv{bkv} s{steps}", "error": repr(e)[:300]})
  except Exception as e:  # noqa: BLE001
    rows.append({"name": "attn mgpu", "error": repr(e)[:300]})


def dit_inputs(cfg: WanDiTConfig, batch=2, frames=13, h=70, w=140):
  dt = jnp.dtype(cfg.dtype)
  r = 2 * cfg.control_unshuffle // cfg.patch_size[1]
  k = jax.random.split(jax.random.key(2), 5)
  return dict(
      x=jax.random.normal(k[0], (batch, frames, h, w, cfg.out_dim), dt),
      y=jax.random.normal(k[1], (batch, frames, h, w, cfg.cond_dim), dt),
      t=jnp.full((batch,), 500.0, jnp.float32),
      context=jax.random.normal(k[2], (batch, cfg.text_len, cfg.text_dim), dt),
      clip_fea=jax.random.normal(k[3], (batch, cfg.clip_tokens, cfg.clip_dim), dt),
      y_camera=jax.random.normal(k[4], (batch, frames, h * r, w * r, cfg.in_dim_control_adapter), dt))


def _ffn_f32(self, x):
  """FFN variant: fc1 product accumulated and returned in float32, bias + tanh-GELU in float32 (the form a
  cuBLASLt BIAS_GELU epilogue can absorb), cast to bf16 for fc2."""
  k, b = self.fc1.kernel[...], self.fc1.bias[...]
  h = jnp.dot(x, k.astype(x.dtype), preferred_element_type=jnp.float32) + b.astype(jnp.float32)
  return self.fc2(jax.nn.gelu(h, approximate=True).astype(x.dtype))


def dit_rows(iters: int, trace_dir: str | None, stub_row: bool = True) -> list[dict]:
  if os.environ.get("PROBE_FFN") == "f32":
    dit_blocks.FeedForward.__call__ = _ffn_f32
  cfg = WanDiTConfig.wan_1_3b(dtype="bfloat16", param_dtype="bfloat16")
  graphdef, state = nnx.split(create(cfg, rng_impl="rbg"))
  inputs = dit_inputs(cfg)
  fwd = jax.jit(lambda s, i: nnx.merge(graphdef, s)(**i))
  rows = []
  t0 = time.perf_counter()
  fwd.lower(state, inputs).compile()
  compiled = fwd.lower(state, inputs).compile()
  r = timeit(fwd, state, inputs, iters=iters)
  rows.append({"name": "dit 1.3b fwd b2", "compile_s": time.perf_counter() - t0, **r,
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "ffn": os.environ.get("PROBE_FFN", "")})
  if trace_dir:
    os.makedirs(trace_dir, exist_ok=True)
    with open(os.path.join(trace_dir, "dit_hlo.txt"), "w") as f:
      f.write(compiled.as_text())
  if trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(2):
        jax.block_until_ready(fwd(state, inputs))
  if not stub_row:
    return rows
  real = dit_blocks.attention

  def stub(q, k, v, **kw):
    return v if q.shape[1] == k.shape[1] else real(q, k, v, **kw)

  dit_blocks.attention = stub
  try:
    fwd2 = jax.jit(lambda s, i: nnx.merge(graphdef, s)(**i))
    r = timeit(fwd2, state, inputs, iters=iters)
  finally:
    dit_blocks.attention = real
  rows.append({"name": "dit 1.3b fwd b2, self-attn kernel removed", **r})
  return rows


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", required=True)
  ap.add_argument("--iters", type=int, default=5)
  ap.add_argument("--trace", action="store_true")
  ap.add_argument("--what", default="matmul,attn,dit")
  ap.add_argument("--no-stub", action="store_true", help="skip the forward without self-attention")
  args = ap.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  rows = []
  what = args.what.split(",")
  if "matmul" in what:
    rows.append(matmul_row())
  if "attn" in what:
    rows += attention_rows(args.iters)
  if "dit" in what:
    rows += dit_rows(args.iters, os.path.join(args.out, "trace") if args.trace else None, not args.no_stub)
  dev = jax.devices()[0]
  info = {"device": getattr(dev, "device_kind", str(dev)), "jax": jax.__version__,
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
  with open(os.path.join(args.out, "probe.json"), "w") as f:
    json.dump({"info": info, "rows": rows}, f, indent=1)
  print(f"# {info}")
  for r in rows:
    print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
