"""Wan VAE benchmark: encode ``[1, 49, 560, 560, 3] -> [1, 13, 70, 70, 16]`` (posterior parameters) and decode
``[1, 13, 70, 70, 16] -> [1, 49, 560, 560, 3]`` (Gen3R's control-video encode and rgb decode).

    python -m bench.run --what vae                                     # two rows: encode, decode
    python -m bench.run --what vae --kw size=tiny --kw frames=5 --kw image=32 --dtype float32   # CPU smoke

Both are the causal chunked paths the pipeline runs (``encode_params`` / ``decode_raw`` + clamp): one jitted
program each, the temporal cache carried through the chunks. ``which=encode|decode|both``.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import abstract_like, count_flops, random_split, param_count, row_base, time_jitted
from gen3r_jax.models.wan_vae.vae import WanVAE, WanVAEConfig

SIZES = {"full": WanVAEConfig.wan2_1, "tiny": WanVAEConfig.tiny}
TINY = dict(frames=5, image=16, repeats=2)   # bench.run --size tiny (CPU smoke)


def _time(bench, fn, graphdef, state, x, *, flops_fn, common, repeats, warmup):
  flops = count_flops(flops_fn, abstract_like(state), abstract_like(x))
  t = time_jitted(jax.jit(fn), state, x, warmup=warmup, repeats=repeats, flops=flops)
  return row_base(bench, **common, **t)


def run(frames: int = 49, image: int = 560, batch: int = 1, dtype: str = "bfloat16", size: str = "full", *,
        param_dtype: str | None = None, which: str = "both", repeats: int = 5, warmup: int = 1,
        quick: bool = False) -> list[dict]:
  """Rows for ``which`` (encode, decode or both); ``quick`` is accepted for the suite."""
  del quick
  cfg = SIZES[size]().replace(dtype=dtype, param_dtype=param_dtype or dtype)
  graphdef, state, init_s = random_split(WanVAE, cfg, seed=0)
  s = cfg.spatial_factor
  t_lat = 1 + (frames - 1) // 4
  common = dict(dtype=dtype, size=size, param_dtype=cfg.param_dtype, params=param_count(state), init_s=init_s,
                batch=batch, frames=frames, image=image,
                flops_counted="matmuls+convs of the encoder / decoder (traced; causal cache copies not counted)")
  rows = []
  if which in ("encode", "both"):
    video = jax.jit(lambda: jax.random.uniform(jax.random.key(1), (batch, frames, image, image, 3), jnp.float32,
                                               -1.0, 1.0))()
    enc = lambda st, x: nnx.merge(graphdef, st).encode_params(x)  # noqa: E731
    rows.append(_time("wan_vae_encode", enc, graphdef, state, video, flops_fn=enc, repeats=repeats, warmup=warmup,
                      common=dict(common, ref_key="vae_encode",
                                  shapes={"video": [batch, frames, image, image, 3],
                                          "out": [batch, t_lat, image // s, image // s, 2 * cfg.z_dim]})))
    del video
  if which in ("decode", "both"):
    z = jax.jit(lambda: jax.random.normal(jax.random.key(2), (batch, t_lat, image // s, image // s, cfg.z_dim),
                                          jnp.float32))()
    dec = lambda st, z: jnp.clip(nnx.merge(graphdef, st).decode_raw(z), -1.0, 1.0)  # noqa: E731
    rows.append(_time("wan_vae_decode", dec, graphdef, state, z, flops_fn=dec, repeats=repeats, warmup=warmup,
                      common=dict(common, ref_key="vae_decode",
                                  shapes={"z": [batch, t_lat, image // s, image // s, cfg.z_dim],
                                          "out": [batch, frames, image, image, 3]})))
  return rows
