"""``launch/sample.py``'s library side: check a sampling config, load the bundle once, generate, export.

Every user error is a one-line :class:`Gen3RInputError` raised before any model is loaded or compiled:
missing / unreadable image, image count not matching the task, ``num_frames`` not ``1 + 4k``, a resolution the
models cannot take, an unknown trajectory, a malformed cameras JSON, a checkpoint directory with a missing part.
"""

from __future__ import annotations

import os
import time

import numpy as np

from gen3r_jax.errors import require
from gen3r_jax.sampling import inputs
from gen3r_jax.sampling.pipeline import SampleOptions, check_options

DTYPES = ("float32", "bfloat16")


def image_paths(spec: str) -> list[str]:
  return [p.strip() for p in str(spec or "").split(",") if p.strip()]


def options_from_config(cfg) -> SampleOptions:
  return SampleOptions(task=cfg.task, cameras=cfg.trajectory, num_frames=cfg.num_frames, num_steps=cfg.steps,
                       guidance_scale=float(cfg.guidance), shift=cfg.shift, negative_prompt=cfg.negative_prompt,
                       seed=int(cfg.seed), scheduler=cfg.scheduler or None, posterior=cfg.posterior,
                       min_max_depth_mask=bool(cfg.min_max_depth_mask), size=cfg.resolution)


def resolve_demo(cfg, log=print):
  """Demo config: fill ``checkpoint`` / ``images`` with the cached random bundle and example image."""
  if not cfg.demo.enabled:
    return cfg.checkpoint, image_paths(cfg.images)
  from gen3r_jax.sampling import demo
  cache = cfg.demo.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "gen3r_jax_demo")
  images = image_paths(cfg.images) or [demo.ensure_example_image(cache, seed=int(cfg.demo.seed))]
  if inputs.expected_views(cfg.task, cfg.num_frames) != len(images) and not cfg.images:
    images = images * inputs.expected_views(cfg.task, cfg.num_frames)
  ckpt = cfg.checkpoint or demo.ensure_demo_bundle(cache, seed=int(cfg.demo.seed), log=log)
  return ckpt, images


def parse_mesh(spec: str) -> dict[str, int] | None:
  """``"fsdp=2,context=2"`` -> ``{"fsdp": 2, "context": 2}`` (``""`` -> None: no mesh)."""
  from gen3r_jax.parallel.rules import MESH_AXES
  spec = (spec or "").strip()
  if not spec:
    return None
  out = {}
  for item in spec.split(","):
    name, _, value = item.partition("=")
    name = name.strip()
    require(name in MESH_AXES and value.strip().lstrip("-").isdigit(),
            f"mesh {spec!r}: expected comma-separated axis=size with axes among {MESH_AXES}, e.g. fsdp=2,context=2.")
    out[name] = int(value)
  return out


def check_config(cfg, checkpoint: str, paths: list[str]) -> SampleOptions:
  """All checks that need no model (module docstring)."""
  from gen3r_jax.convert.bundle import check_bundle
  from gen3r_jax.sampling.denoise import check_parallel
  from gen3r_jax.sampling.placement import check_placement
  require(bool(cfg.out), "no output directory: pass --config.out=<dir>.")
  require(isinstance(cfg.prompt, str) and cfg.prompt.strip() != "", 'no prompt: pass --config.prompt="...".')
  require(cfg.dtype in DTYPES, f"dtype {cfg.dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
  require(cfg.param_dtype in ("",) + DTYPES,
          f"param_dtype {cfg.param_dtype!r} is not supported; use \"\" (as converted) or one of "
          f"{', '.join(DTYPES)}.")
  check_placement(cfg.placement)
  parse_mesh(cfg.mesh)
  check_parallel(None, cfg.context_parallel)
  require(bool(checkpoint), "no checkpoint: pass --config.checkpoint=<converted bundle dir> (launch/convert.py).")
  require(len(paths) > 0, "no conditioning image: pass --config.images=a.png[,b.png].")
  opts = options_from_config(cfg)
  inputs.check_task(opts.task)
  for p in paths:
    inputs.read_image(p)
  check_options(opts, len(paths))
  check_bundle(checkpoint)
  return opts


def sample_from_config(cfg, log=print) -> dict[str, str]:
  """Run ``launch/sample.py`` for a config; returns ``{output file name: path}``."""
  import jax

  from gen3r_jax.convert.bundle import load_bundle
  from gen3r_jax.sampling.export import export_all
  from gen3r_jax.sampling.pipeline import generate
  if cfg.matmul_precision != "default":
    jax.config.update("jax_default_matmul_precision", cfg.matmul_precision)
  checkpoint, paths = resolve_demo(cfg, log)
  opts = check_config(cfg, checkpoint, paths)
  images = inputs.load_control_images(paths, opts.size)
  shape = parse_mesh(cfg.mesh)
  mesh = None
  if shape:
    from gen3r_jax.parallel.rules import make_mesh
    mesh = make_mesh(shape)
  placement = cfg.placement
  t0 = time.perf_counter()
  bundle = load_bundle(checkpoint, dtype=cfg.dtype, param_dtype=cfg.param_dtype or None, mesh=mesh,
                       placement=placement, log=log)
  log(f"[sample] loaded {checkpoint} ({time.perf_counter() - t0:.1f} s, dtype {cfg.dtype}, placement "
      f"{placement}{', mesh ' + str(dict(mesh.shape)) if mesh is not None else ''})")
  out = generate(bundle, images, cfg.prompt, opts, release=bool(cfg.release), progress=bool(cfg.progress),
                 context_parallel=cfg.context_parallel, log=log)
  k = out["intrinsics"]
  meta = {"task": opts.task, "trajectory": opts.cameras if isinstance(opts.cameras, str) else "json",
          "seed": opts.seed, "num_frames": opts.num_frames, "steps": opts.num_steps,
          "guidance": opts.guidance_scale, "shift": opts.shift, "scheduler": opts.scheduler or "checkpoint",
          "posterior": opts.posterior, "dtype": cfg.dtype, "images": paths, "checkpoint": checkpoint,
          "placement": placement, "timings_s": {n: v for n, v in out["timings"].items() if not isinstance(v, list)},
          "peak_bytes_in_use": out["stats"]["peak_bytes_in_use"]}
  files = export_all(cfg.out, rgb=out["rgb"], depth=out["depth"][..., 0], points=out["pcds"], masks=out["masks"],
                     c2w=out["c2w"], K=k, fps=cfg.fps, max_points=int(cfg.max_points) or None, seed=opts.seed,
                     prompt=cfg.prompt, meta=meta)
  np.savez(os.path.join(cfg.out, "latents.npz"), latents=out["latents"])
  files["latents.npz"] = os.path.join(cfg.out, "latents.npz")
  log(f"[sample] wrote {len(files)} files to {cfg.out}")
  return files


__all__ = ("sample_from_config", "check_config", "options_from_config", "resolve_demo", "image_paths", "parse_mesh")
