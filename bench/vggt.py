"""VGGT-1B forward benchmark: aggregator (DINOv2 patch embed + 24 frame/global blocks) + camera, depth and point
heads on ``[1, 49, 560, 560, 3]`` (Gen3R's 560x560 frames: a 40x40 patch grid, 1605 tokens per frame).

    python -m bench.run --what vggt                                   # full size, bf16
    python -m bench.run --what vggt --kw size=tiny --kw frames=2 --kw image=28 --dtype float32   # CPU smoke

The DPT heads run ``frames_chunk_size`` frames at a time (8, the official ``VGGT.forward`` default). Random
weights made on device (:func:`bench.common.device_random`); FLOPs counted from the traced program.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import abstract_like, count_flops, random_split, param_count, row_base, time_jitted
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.vggt.model import VGGT, abstract_model
from gen3r_jax.nn.attention import chosen_implementations

SIZES = {"full": VGGTConfig.vggt_1b, "1b": VGGTConfig.vggt_1b, "tiny": VGGTConfig.tiny}
TINY = dict(frames=2, image=28, repeats=2)   # bench.run --size tiny (CPU smoke)


def run(frames: int = 49, image: int = 560, batch: int = 1, dtype: str = "bfloat16", size: str = "full", *,
        param_dtype: str | None = None, frames_chunk_size: int = 8, repeats: int = 5, warmup: int = 1,
        attention: str = "auto", quick: bool = False) -> dict:
  """Time the jitted VGGT forward; ``quick`` is accepted for the suite (nothing to cut here)."""
  del quick
  cfg = SIZES[size](dtype=dtype, param_dtype=param_dtype or dtype, attention=attention,
                    frames_chunk_size=frames_chunk_size)
  graphdef, state, init_s = random_split(VGGT, cfg, seed=0)
  images = jax.jit(lambda: jax.random.uniform(jax.random.key(1), (batch, frames, image, image, 3), jnp.float32))()

  def forward(state, images):
    return nnx.merge(graphdef, state).forward(images, frames_chunk_size)

  g_xla, _ = nnx.split(abstract_model(cfg.replace(attention="xla")))
  flops = count_flops(lambda s, x: nnx.merge(g_xla, s).forward(x, frames_chunk_size), abstract_like(state),
                      abstract_like(images))
  t = time_jitted(jax.jit(forward), state, images, warmup=warmup, repeats=repeats, flops=flops)
  p = cfg.patch_size
  return row_base("vggt_forward", dtype=dtype, ref_key="vggt_forward", size=size, param_dtype=cfg.param_dtype,
                  shapes={"images": [batch, frames, image, image, 3]}, batch=batch, frames=frames, image=image,
                  tokens_per_frame=cfg.patch_start_idx + (image // p) ** 2, frames_chunk_size=frames_chunk_size,
                  params=param_count(state), attention=attention, attention_chosen=chosen_implementations(),
                  init_s=init_s, **t,
                  flops_counted="matmuls+convs of aggregator + camera/depth/point heads (traced, XLA attention)")
