"""gen3r_jax: Gen3R (arXiv 2601.04090) in JAX / Flax NNX.

Sub-packages:
  nn/        shared layers (attention dispatch, norms, causal conv, resampling, RoPE)
  models/    vggt/, adapter/, wan/ (vae, transformer, camera adapter, t5, clip)
  convert/   PyTorch -> Flax conversion (one mapping table per model, strict, JSON report, Orbax)
  sampling/  schedulers, cameras, pipeline, export
  training/  losses, stage-1/stage-2 steps, optimizer, checkpointing
  data/      scene folders, TFDS builder, grain pipelines, synthetic scenes
  parallel/  mesh, logical-axis rules, shard_map attention
  eval/      image, geometry and camera metrics
  testing/   parity harness against the official PyTorch fixtures
"""

__version__ = "0.1.0"


def enable_compilation_cache(path: str | None = None, **kw) -> str | None:
  """Turn on the persistent XLA compilation cache (``~/.cache/gen3r_jax/xla`` or ``$GEN3R_JAX_CACHE``); see
  :func:`gen3r_jax.cli.enable_compilation_cache`."""
  from gen3r_jax.cli import enable_compilation_cache as enable
  return enable(path, **kw)
