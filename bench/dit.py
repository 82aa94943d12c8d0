"""Wan DiT forward benchmark (random weights, full size) and the 14B sharded parameter-memory estimate.

    python -m bench.dit --size 1.3b --batch 2 --frames 13 --h 70 --w 140 --dtype bfloat16 --out dit_1_3b.json
    python -m bench.dit --abstract-14b --fsdp 8          # no device memory used
    python -m bench.run --what dit                       # the same through the suite (table + JSON)

``run`` builds the model with one jitted init whose outputs land straight on their shards (no parameter passes
through the host), makes the inputs on device, compiles the jitted forward (timed separately) and times the
median of ``iters`` calls with :func:`bench.common.time_jitted`. ``h``/``w`` are *latent* sizes (Gen3R's joint layout: ``w = 2 * h``, appearance |
geometry side by side). TFLOP/s are analytic (:func:`forward_flops`, multiply-add = 2 FLOPs), never measured.
Numbers go to docs only with the device and date this prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec as P

from bench.common import count_flops, param_count, peak_memory_bytes, row_base, time_jitted
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import WanDiT, abstract_model, create
from gen3r_jax.nn.attention import chosen_implementations
from gen3r_jax.nn.params import abstract_module, logical_axes
from gen3r_jax.parallel.rules import MESH_AXES, as_rules, make_mesh, spec_for, use_rules

SIZES = {"tiny": WanDiTConfig.tiny, "1.3b": WanDiTConfig.wan_1_3b, "full": WanDiTConfig.wan_1_3b,
         "14b": WanDiTConfig.wan_14b}
TINY = dict(batch=1, frames=2, h=4, w=8, iters=2)   # bench.run --size tiny (CPU smoke)


def config_for(size: str, dtype: str, param_dtype: str | None = None, **kw) -> WanDiTConfig:
  if size not in SIZES:
    raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
  return SIZES[size](dtype=dtype, param_dtype=param_dtype or dtype, **kw)


def forward_flops(cfg: WanDiTConfig, batch: int, frames: int, h: int, w: int, camera: bool = True) -> float:
  """Analytic FLOPs of one forward (matmuls and convs only; norms/softmax/elementwise are not counted)."""
  pt, ph, pw = cfg.patch_size
  L = (frames // pt) * (h // ph) * (w // pw)
  D, Fd, Lt, Li = cfg.dim, cfg.ffn_dim, cfg.text_len, cfg.clip_tokens
  mm = lambda m, k, n: 2.0 * m * k * n
  total = mm(L, cfg.in_dim * pt * ph * pw, D)                                    # patch embedding
  if camera and cfg.add_control_adapter:
    cin = cfg.in_dim_control_adapter * cfg.control_unshuffle ** 2
    total += mm(L, cin * 4, D) + cfg.control_residual_blocks * 2 * mm(L, 9 * D, D)
  total += mm(Lt, cfg.text_dim, D) + mm(Lt, D, D)                                # text embedding
  total += mm(Li, cfg.clip_dim, cfg.clip_dim) + mm(Li, cfg.clip_dim, D)          # image embedding
  total += mm(1, cfg.freq_dim, D) + mm(1, D, D) + mm(1, D, 6 * D)                # time embedding
  layer = (4 * mm(L, D, D) + 2 * mm(L, D, L)                                      # self-attention
           + 2 * mm(L, D, D) + 2 * mm(Lt, D, D) + 2 * mm(Li, D, D)                # cross q, o, k, v, k_img, v_img
           + 2 * mm(L, D, Lt) + 2 * mm(L, D, Li)                                  # cross attention (txt + img)
           + 2 * mm(L, D, Fd))                                                    # FFN
  total += cfg.num_layers * layer + mm(L, D, cfg.out_dim * pt * ph * pw)          # blocks + head
  return batch * total


def _inputs(cfg: WanDiTConfig, batch: int, frames: int, h: int, w: int, camera: bool, sharding):
  """Random inputs created on device (one small jitted program)."""
  dt = jnp.dtype(cfg.dtype)
  r = 2 * cfg.control_unshuffle // cfg.patch_size[1]

  def make():
    k = jax.random.split(jax.random.key(1), 6)
    out = dict(
        x=jax.random.normal(k[0], (batch, frames, h, w, cfg.out_dim), dt),
        y=jax.random.normal(k[1], (batch, frames, h, w, cfg.cond_dim), dt),
        t=jnp.full((batch,), 500.0, jnp.float32),
        context=jax.random.normal(k[2], (batch, cfg.text_len, cfg.text_dim), dt),
        clip_fea=jax.random.normal(k[3], (batch, cfg.clip_tokens, cfg.clip_dim), dt))
    if camera:
      out["y_camera"] = jax.random.normal(
          k[4], (batch, frames, h * r, w * r, cfg.in_dim_control_adapter), dt)
    return out

  return jax.jit(make, out_shardings=sharding)()


def flops_jaxpr(cfg: WanDiTConfig, batch: int, frames: int, h: int, w: int, camera: bool = True) -> float:
  """The same forward counted from the traced program (:func:`bench.common.count_flops`, XLA attention twin)."""
  graphdef, state = nnx.split(abstract_model(cfg.replace(attention="xla")))
  inputs = jax.eval_shape(lambda: _inputs(cfg, batch, frames, h, w, camera, None))
  return count_flops(lambda s, i: nnx.merge(graphdef, s)(**i), state, inputs)


def run(batch: int = 2, frames: int = 13, h: int = 70, w: int = 140, dtype: str = "bfloat16",
        size: str = "1.3b", *, param_dtype: str | None = None, iters: int = 5, repeats: int | None = None,
        warmup: int = 1,
        camera: bool = True, mesh_shape: dict | None = None, num_devices: int | None = None,
        attention: str = "auto", quick: bool = False, rules=None) -> dict:
  """Time one jitted forward of the ``size`` DiT on ``[batch, frames, h, w]`` latents; returns a result dict.

  The parameters are sharded by their logical axes on a mesh of the first ``num_devices`` devices (default all,
  shape ``mesh_shape``, default everything on ``fsdp``) by ``rules`` (default the library's: ``configs/base.py``'s
  ``config.sharding``). ``quick`` changes nothing here (the DiT compiles fast).
  """
  del quick
  rules = as_rules(rules).for_model("dit")
  iters = repeats or iters
  cfg = config_for(size, dtype, param_dtype, attention=attention)
  devices = jax.devices()[:num_devices] if num_devices else None
  mesh = make_mesh(mesh_shape or {"fsdp": -1}, devices)
  t0 = time.perf_counter()
  graphdef, state = nnx.split(create(cfg, mesh=mesh, rules=rules, rng_impl="rbg"))
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  n_params = param_count(state)
  inputs = _inputs(cfg, batch, frames, h, w, camera, NamedSharding(mesh, P()))

  def forward(state, inputs):
    return nnx.merge(graphdef, state)(**inputs)

  flops = forward_flops(cfg, batch, frames, h, w, camera)
  with jax.set_mesh(mesh), use_rules(rules):
    t = time_jitted(jax.jit(forward), state, inputs, warmup=warmup, repeats=iters, flops=flops)
  pt, ph, pw = cfg.patch_size
  peak = peak_memory_bytes()
  return row_base(
      "wan_dit_forward", dtype=dtype, ref_key="dit_forward", size=size, param_dtype=cfg.param_dtype,
      num_devices=len(mesh.devices.flat), mesh=dict(mesh.shape),
      batch=batch, frames=frames, h=h, w=w, camera=camera,
      shapes={"x": [batch, frames, h, w, cfg.out_dim], "y": [batch, frames, h, w, cfg.cond_dim],
              "context": [batch, cfg.text_len, cfg.text_dim], "clip_fea": [batch, cfg.clip_tokens, cfg.clip_dim],
              "y_camera": [batch, frames, 8 * h, 8 * w, cfg.in_dim_control_adapter] if camera else None},
      tokens=(frames // pt) * (h // ph) * (w // pw), params=n_params,
      attention=attention, attention_chosen=chosen_implementations(), init_s=init_s, **t,
      iters=t["repeats"], tflops_per_s=t["tflops"], peak_bytes=peak,
      flops_counted="matmuls+convs, hand formula forward_flops (attention 4 L^2 D per layer)")


def attention_agreement(dtype: str = "bfloat16", impls=("xla", "cudnn")) -> dict:
  """GPU sanity check: the same small random DiT (head_dim 128, joint layout) under each attention
  implementation; returns the max |difference| to the first one, relative to its max |output|."""
  cfg = WanDiTConfig.tiny(dim=256, ffn_dim=512, num_heads=2, dtype=dtype, param_dtype="float32")
  graphdef, state = nnx.split(create(cfg, rng_impl="rbg"))
  inputs = _inputs(cfg, 2, 3, 8, 16, True, None)
  outs = {}
  for impl in impls:
    g, _ = nnx.split(abstract_module(lambda: WanDiT(cfg.replace(attention=impl), rngs=nnx.Rngs(0))))
    outs[impl] = np.asarray(jax.jit(lambda s, i: nnx.merge(g, s)(**i))(state, inputs), np.float32)
  ref = outs[impls[0]]
  scale = float(np.abs(ref).max())
  return {"bench": "wan_dit_attention_agreement", "dtype": dtype, "ref": impls[0], "max_abs_ref": scale,
          **{f"rel_diff_{k}": float(np.abs(v - ref).max()) / scale for k, v in outs.items()}}


def abstract_14b_memory(fsdp: int = 8, param_dtype: str = "bfloat16", rules=None) -> dict:
  """Per-device parameter memory of the 14B DiT on a ``fsdp``-way mesh by ``rules`` (default the library's), from
  ``jax.eval_shape`` only."""
  cfg = WanDiTConfig.wan_14b(param_dtype=param_dtype)
  state = jax.eval_shape(lambda: nnx.split(WanDiT(cfg, rngs=nnx.Rngs(0)))[1])
  mesh = AbstractMesh(tuple(fsdp if a == "fsdp" else 1 for a in MESH_AXES), MESH_AXES)
  total = per_device = replicated = 0
  largest = (0, "")
  for path, var in nnx.to_flat_state(state):
    v = var.get_value()
    spec = spec_for(logical_axes(var), v.shape, mesh, rules)
    shard = list(v.shape)
    for i, entry in enumerate(tuple(spec)):
      names = () if entry is None else ((entry,) if isinstance(entry, str) else entry)
      shard[i] //= int(np.prod([mesh.shape[a] for a in names])) if names else 1
    nbytes = int(np.prod(v.shape)) * v.dtype.itemsize
    sbytes = int(np.prod(shard)) * v.dtype.itemsize
    total += nbytes
    per_device += sbytes
    if sbytes == nbytes:
      replicated += nbytes
    largest = max(largest, (sbytes, ".".join(map(str, path))))
  n = sum(int(np.prod(var.get_value().shape)) for _, var in nnx.to_flat_state(state))
  return {"bench": "wan_dit_14b_param_memory", "fsdp": fsdp, "param_dtype": param_dtype, "params": n,
          "total_bytes": total, "per_device_bytes": per_device, "replicated_bytes": replicated,
          "largest_shard": {"path": largest[1], "bytes": largest[0]},
          "per_device_gib": per_device / 2 ** 30, "total_gib": total / 2 ** 30}


def _table(res: dict) -> str:
  keys = [k for k in res if not isinstance(res[k], dict)]
  width = max(len(k) for k in keys)
  return "\n".join(f"{k:<{width}}  {res[k]:.4g}" if isinstance(res[k], float) else f"{k:<{width}}  {res[k]}"
                   for k in keys)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--size", default="1.3b", choices=sorted(SIZES))
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--frames", type=int, default=13)
  ap.add_argument("--h", type=int, default=70)
  ap.add_argument("--w", type=int, default=140)
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--iters", type=int, default=5)
  ap.add_argument("--no-camera", action="store_true")
  ap.add_argument("--abstract-14b", action="store_true", help="only the 14B per-device parameter memory")
  ap.add_argument("--fsdp", type=int, default=8)
  ap.add_argument("--num-devices", type=int, help="use only the first N devices (default all)")
  ap.add_argument("--out", help="write the result JSON here")
  args = ap.parse_args(argv)
  if args.abstract_14b:
    res = abstract_14b_memory(args.fsdp)
  else:
    res = run(args.batch, args.frames, args.h, args.w, args.dtype, args.size, iters=args.iters,
              camera=not args.no_camera, num_devices=args.num_devices)
  print(_table(res))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
