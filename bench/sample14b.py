"""14B DiT sampling step sharded over several GPUs (issue 10): the sampler's CFG denoising step (DiT on the
``[uncond, cond]`` batch + UniPC update, ``gen3r_jax.sampling.denoise.denoise``) for the Wan 14B DiT with random
weights created directly on their shards (no host copy of the 33.8 GB of bfloat16 parameters).

    python -m bench.run --what sample14b --kw devices=2                      # fsdp=2 (default)
    python -m bench.run --what sample14b --kw devices=2 --kw parallel=context  # context=2 (weights replicated)
    python -m bench.run --what sample14b --kw devices=2 --kw parallel=both     # rows for fsdp and for context
    python -m bench.run --what sample14b --size tiny --dtype float32 --kw devices=2 --kw frames=5 \\
        --kw image=32                                                          # CPU smoke (fake devices)

Meshes (``gen3r_jax.parallel.rules.make_mesh``): ``fsdp``: parameters sharded on their ``embed`` axis, the CFG
pair split over the two devices (batch -> data x fsdp), weights all-gathered layer by layer; ``context``: weights
replicated (31.5 GiB per GPU), the 31,850 video tokens split in two, self-attention through
``use_context_parallel`` (``context_parallel=allgather``: K/V all-gathered, cuDNN flash locally; ``ring``
uses einsum blocks and needs far more memory at this length). Each row: ``first_step_s`` (compile + one step),
``median_s`` / ``min_s`` / ``max_s`` over ``iters`` further steps, ``tflops`` (the DiT's analytic FLOPs for the
CFG batch, ``bench.dit.forward_flops``, over the median: all devices together), ``peak_gib`` (max over the GPUs
of ``peak_bytes_in_use``), ``init_s`` (the sharded random init). Never run in CI.
"""

from __future__ import annotations

import datetime

SIZES = ("14b", "1.3b", "tiny")


def _config(size: str, dtype: str, param_dtype: str | None, attention: str):
  from gen3r_jax.models.wan_dit.config import WanDiTConfig
  make = {"14b": WanDiTConfig.wan_14b, "1.3b": WanDiTConfig.wan_1_3b, "tiny": WanDiTConfig.tiny}
  if size not in make:
    raise ValueError(f"size must be one of {SIZES}, got {size!r}")
  return make[size](dtype=dtype, param_dtype=param_dtype or dtype, attention=attention)


def run(size: str = "14b", dtype: str = "bfloat16", param_dtype: str | None = None, devices: int = 2,
        parallel: str = "fsdp", frames: int = 49, image: int = 560, iters: int = 5,
        context_parallel: str = "allgather", attention: str = "auto", seed: int = 0, rules=None) -> list[dict]:
  """One row per mesh (``parallel``: ``fsdp`` | ``context`` | ``both``) on the first ``devices`` devices; ``rules``:
  the sharding rules (default the library's, as ``configs/base.py``)."""
  import jax

  from gen3r_jax.parallel.rules import make_mesh
  from gen3r_jax.sampling.denoise import time_denoise_step
  kinds = ("fsdp", "context") if parallel == "both" else (parallel,)
  if any(k not in ("fsdp", "context") for k in kinds):
    raise ValueError(f"parallel must be fsdp, context or both, got {parallel!r}")
  if devices > len(jax.devices()):
    raise ValueError(f"devices={devices} but only {len(jax.devices())} are visible")
  cfg = _config(size, dtype, param_dtype, attention)
  rows = []
  for kind in kinds:
    mesh = make_mesh({kind: devices}, devices=jax.devices()[:devices])
    r = time_denoise_step(cfg, mesh, frames=frames, height=image, width=image, iters=iters, seed=seed,
                          context_parallel=context_parallel, rules=rules)
    dev = jax.devices()[0]
    try:                                       # the DiT's analytic FLOPs (bench/dit.py), CFG batch of 2
      from bench.dit import forward_flops
      _, f, h, w, _ = r["latent_shape"]
      tflop = forward_flops(cfg, r["cfg_batch"], f, h, w) / 1e12
    except ImportError:                        # pragma: no cover
      tflop = None
    rows.append({"bench": "sample14b_denoise_step" if size == "14b" else f"denoise_step_{size}",
                 "name": f"{size} CFG step {kind}={devices} {dtype}", "size": size, "parallel": kind,
                 "device": f"{dev.platform}:{getattr(dev, 'device_kind', '?')}", "num_devices": devices,
                 "jax": jax.__version__,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "compile_s": r["first_step_s"] - r["median_s"],
                 "peak_gib": None if r["peak_bytes"] is None else r["peak_bytes"] / 2 ** 30, "tflop": tflop,
                 "tflops": None if tflop is None else tflop / r["median_s"], **r})
  return rows
