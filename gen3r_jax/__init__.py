"""gen3r_jax: Gen3R (arXiv 2601.04090) in JAX / Flax NNX.

Sub-packages:
  nn/        shared layers (attention dispatch, splash kernel, context-parallel shard_map attention, norms,
             causal conv, resampling, RoPE, layer stacking)
  models/    one folder per network: wan_vae/, wan_dit/, umt5/, clip/, geometry_adapter/, vggt/, lpips/;
             checkpoint.py (Orbax save/restore)
  convert/   PyTorch -> Flax conversion (one mapping table per model, strict, JSON report, Orbax)
  sampling/  schedulers, cameras, conditioning, denoising, geometry decoding, pipeline, export
  training/  losses, stage-1/stage-2 steps and tasks, optimizer, checkpointing, stage-2 pre-encoding
  data/      scene folders, TFDS builder, grain pipelines, synthetic scenes, pre-encoded reader (no model)
  apps/      what the CLIs stitch together: bundles, sample, reconstruct, demos, CLI helpers
  parallel/  mesh, logical-axis rules (data and helpers)
  eval/      image, geometry and camera metrics
  testing/   parity harness against the official PyTorch fixtures
"""
from gen3r_jax.compilation_cache import enable_compilation_cache as enable


__version__ = "0.1.0"


def enable_compilation_cache(path: str | None = None, **kw) -> str | None:
  """Turn on the persistent XLA compilation cache (``~/.cache/gen3r_jax/xla`` or ``$GEN3R_JAX_CACHE``); see
  :func:`gen3r_jax.compilation_cache.enable_compilation_cache`."""
  return enable(path, **kw)
