"""Attention kernels at Gen3R's shapes: forward and backward TFLOP/s of every implementation that loads here.

    python -m bench.run --what attention_kernels --out k.json                 # GPU (the table of bench/RESULTS.md)
    python -m bench.run --what attention_kernels --size tiny --no-isolate     # CPU smoke (xla only)
    python -m bench.run --what attention_kernels --kw attention_kernels.shapes=dit_self,vggt_global

Shapes (``[B, Lq, H, D]`` x ``Lk``): the DiT's CFG self-attention (2 x 31,850 tokens, 12 heads, head dim 128) and
its text (512) and CLIP (257) cross-attention, VGGT's frame attention (49 frames x 1,605 tokens, 16 heads, head
dim 64) and its global attention (78,645 tokens).

Variants (rows ``attention_<shape>_<variant>``):
  * ``cudnn``: the dispatch's cuDNN path (odd lengths padded by one with an exact sequence-length mask);
  * ``cudnn_raw``: ``jax.nn.dot_product_attention(implementation="cudnn")`` on the arrays as they are (forward
    only where a length is odd: cuDNN's backward refuses odd lengths);
  * ``cudnn_aligned`` / ``fa3_aligned``: the kernel on the lengths rounded down to a multiple of 128 (not a result
    of this shape: the rate such a kernel reaches without a ragged tail, the ceiling of a prefix + tail split);
  * ``fa3``: the dispatch's ``fa3``: FlashAttention-3's forward (``flash-attn3-jax``); its gradients run cuDNN's
    forward and backward (so its ``bwd_*`` columns are cuDNN's backward plus the difference of the two forwards);
  * ``fa3_package``: ``flash_attn3_jax.flash_mha`` with the package's own backward, timed only: its gradients are
    wrong at many shapes (``rel_dq`` in the thousands; ``python -m bench.fa3_check``);
  * ``tokamax_mosaic`` / ``tokamax_triton``: ``tokamax.dot_product_attention`` (where the package loads).

Each row: ``fwd_ms`` (median) and ``fwd_tflops`` = 4 B H Lq Lk D / time; ``bwd_ms`` = median of value-and-grad
minus the forward, ``bwd_tflops`` = 2.5 x the forward FLOPs / ``bwd_ms`` (the backward's five matmuls, no
recompute counted); ``rel_out`` / ``rel_dq`` / ``rel_dk`` / ``rel_dv``: relative L2 difference to the ``cudnn``
row (bf16 inputs; ~1e-3 is bf16 rounding of the output).
"""

from __future__ import annotations

import math
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import row_base, stats

SHAPES = {  # name: (B, Lq, Lk, H, D)
    "dit_self": (2, 31850, 31850, 12, 128),
    "dit_text": (2, 31850, 512, 12, 128),
    "dit_clip": (2, 31850, 257, 12, 128),
    "vggt_frame": (49, 1605, 1605, 16, 64),
    "vggt_global": (1, 78645, 78645, 16, 64),
}
TINY = {"shapes": "tiny", "dtype": "float32", "variants": "xla", "repeats": 2}
_TINY_SHAPES = {"tiny": (2, 65, 33, 2, 16)}
VARIANTS = ("cudnn", "cudnn_raw", "cudnn_aligned", "fa3", "fa3_aligned", "fa3_package", "tokamax_mosaic",
            "tokamax_triton")


def _impl(variant: str):
  """``variant -> (fn(q, k, v, scale), lengths rounded to 128?, forward only if odd?)``."""
  from gen3r_jax.nn.attention import local_attention
  if variant in ("xla", "cudnn", "fa3"):
    return (lambda q, k, v, s: local_attention(q, k, v, implementation=variant, scale=s)), False, False
  if variant in ("cudnn_aligned", "fa3_aligned"):
    base = variant.split("_")[0]
    return (lambda q, k, v, s: local_attention(q, k, v, implementation=base, scale=s)), True, False
  if variant == "fa3_package":   # flash_attn3_jax.flash_mha with the package's own backward (wrong gradients)
    from flash_attn3_jax import flash_mha
    return (lambda q, k, v, s: flash_mha(q, k, v, softmax_scale=s)), False, False
  if variant == "cudnn_raw":
    return (lambda q, k, v, s: jax.nn.dot_product_attention(q, k, v, scale=s, implementation="cudnn")), False, True
  if variant.startswith("tokamax_"):
    import tokamax
    which = variant.split("_", 1)[1]
    return (lambda q, k, v, s: tokamax.dot_product_attention(q, k, v, scale=s, implementation=which)), False, False
  raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")


def _time(fn, args, repeats: int) -> tuple[float, float]:
  """(compile + first call seconds, median seconds)."""
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return first, stats(times)["median_s"]


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run(shapes: str = "all", variants: str = "all", dtype: str = "bfloat16", repeats: int = 10,
        backward: bool = True, size: str = "full") -> list[dict]:
  if size == "tiny":
    shapes = "tiny"
  table = _TINY_SHAPES if shapes == "tiny" else SHAPES
  names = list(table) if shapes in ("all", "tiny") else shapes.split(",")
  vlist = list(VARIANTS) if variants == "all" else variants.split(",")
  dt = jnp.dtype(dtype)
  rows = []
  for name in names:
    b, lq, lk, h, d = table[name]
    ks = jax.random.split(jax.random.key(hash(name) % 2 ** 31), 4)
    full = [jax.random.normal(ks[0], (b, lq, h, d), dt), jax.random.normal(ks[1], (b, lk, h, d), dt),
            jax.random.normal(ks[2], (b, lk, h, d), dt)]
    ct_full = jax.random.normal(ks[3], (b, lq, h, d), jnp.float32)
    scale = 1.0 / math.sqrt(d)
    ref = None
    for variant in vlist:
      row = row_base(f"attention_{name}_{variant}", dtype=dtype, shape=[b, lq, lk, h, d], variant=variant)
      try:
        fn, aligned, fwd_only_if_odd = _impl(variant)
        lq_, lk_ = ((lq // 128) * 128, (lk // 128) * 128) if aligned else (lq, lk)
        q, k, v = full[0][:, :lq_], full[1][:, :lk_], full[2][:, :lk_]
        ct = ct_full[:, :lq_]
        flops = 4.0 * b * h * lq_ * lk_ * d
        fwd = jax.jit(lambda q, k, v: fn(q, k, v, scale))
        c_f, t_f = _time(fwd, (q, k, v), repeats)
        row.update(lengths=[lq_, lk_], fwd_compile_s=c_f, fwd_ms=t_f * 1e3, fwd_tflops=flops / t_f / 1e12,
                   median_s=t_f, tflops=flops / t_f / 1e12)
        out = fwd(q, k, v)
        do_bwd = backward and not (fwd_only_if_odd and (lq % 2 or lk % 2))
        if do_bwd:
          loss = lambda q, k, v: jnp.sum(fn(q, k, v, scale).astype(jnp.float32) * ct)
          vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
          c_b, t_fb = _time(vg, (q, k, v), repeats)
          t_b = max(t_fb - t_f, 1e-9)
          row.update(fwd_bwd_ms=t_fb * 1e3, bwd_ms=t_b * 1e3, bwd_tflops=2.5 * flops / t_b / 1e12,
                     bwd_compile_s=c_b)
          grads = vg(q, k, v)[1]
        else:
          grads = None
        if variant in ("cudnn", "xla") and ref is None:
          ref = (out, grads)
        elif ref is not None and not aligned:
          row["rel_out"] = _rel(out, ref[0])
          if grads is not None and ref[1] is not None:
            row.update({f"rel_d{n}": _rel(g, r) for n, g, r in zip("qkv", grads, ref[1])})
        row["ok"] = bool(np.isfinite(np.asarray(out, np.float32)).all())
      except Exception as e:  # noqa: BLE001 - a kernel that does not load or run here is a row, not a crash
        row.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
        traceback.print_exc()
      rows.append(row)
      print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                     if k in ("bench", "fwd_ms", "fwd_tflops", "bwd_ms", "bwd_tflops", "rel_out", "rel_dq",
                              "error")), flush=True)
  return rows
