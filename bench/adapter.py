"""Geometry adapter decode benchmark: geometry latents ``[1, 13, 70, 70, 16]`` -> VGGT tokens
``[1, 49, 40, 40, 10240]`` (the first stage of Gen3R's geometry decode; the adapter only takes 70x70 latents).

    python -m bench.run --what adapter                                  # full size, bf16
    python -m bench.run --what adapter --kw size=tiny --kw latent_frames=1 --dtype float32   # CPU smoke

``encode=True`` adds the encode row (tokens -> latents, what stage-1 training runs).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import abstract_like, count_flops, random_split, param_count, row_base, time_jitted
from gen3r_jax.models.geometry_adapter.model import LATENT_GRID, TOKEN_GRID, GeometryAdapter, GeometryAdapterConfig

SIZES = {"full": GeometryAdapterConfig.gen3r, "tiny": GeometryAdapterConfig.tiny}
TINY = dict(latent_frames=1, repeats=2)   # bench.run --size tiny (CPU smoke)


def run(latent_frames: int = 13, batch: int = 1, dtype: str = "bfloat16", size: str = "full", *,
        param_dtype: str | None = None, encode: bool = False, repeats: int = 5, warmup: int = 1,
        quick: bool = False) -> list[dict]:
  del quick
  cfg = SIZES[size]().replace(dtype=dtype, param_dtype=param_dtype or dtype)
  graphdef, state, init_s = random_split(GeometryAdapter, cfg, seed=0)
  frames = 1 + 4 * (latent_frames - 1)
  common = dict(dtype=dtype, size=size, param_dtype=cfg.param_dtype, params=param_count(state), init_s=init_s,
                batch=batch, latent_frames=latent_frames, frames=frames,
                flops_counted="matmuls+convs of the decoder incl. the 70->40 output block (traced)")
  z = jax.jit(lambda: jax.random.normal(jax.random.key(2), (batch, latent_frames, LATENT_GRID, LATENT_GRID,
                                                             cfg.z_dim), jnp.float32))()
  dec = lambda st, z: nnx.merge(graphdef, st).decode_raw(z)  # noqa: E731
  flops = count_flops(dec, abstract_like(state), abstract_like(z))
  t = time_jitted(jax.jit(dec), state, z, warmup=warmup, repeats=repeats, flops=flops)
  rows = [row_base("geometry_adapter_decode", ref_key="adapter_decode", **common,
                   shapes={"z": [batch, latent_frames, LATENT_GRID, LATENT_GRID, cfg.z_dim],
                           "out": [batch, frames, TOKEN_GRID, TOKEN_GRID, cfg.output_dim]}, **t)]
  del z
  if encode:
    tokens = jax.jit(lambda: jax.random.normal(jax.random.key(3), (batch, frames, TOKEN_GRID, TOKEN_GRID,
                                                                    cfg.input_dim), jnp.float32))()
    enc = lambda st, x: nnx.merge(graphdef, st).encode_params(x)  # noqa: E731
    flops = count_flops(enc, abstract_like(state), abstract_like(tokens))
    t = time_jitted(jax.jit(enc), state, tokens, warmup=warmup, repeats=repeats, flops=flops)
    rows.append(row_base("geometry_adapter_encode", ref_key="adapter_encode", **common,
                         shapes={"tokens": [batch, frames, TOKEN_GRID, TOKEN_GRID, cfg.input_dim]}, **t))
  return rows
