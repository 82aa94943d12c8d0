"""``launch/sample.py``'s library side: check a sampling config, load the bundle once, generate, export.

Every user error is a one-line :class:`Gen3RInputError` raised before any model is loaded or compiled:
missing / unreadable image or video, image or frame count not matching the task, ``num_frames`` not ``1 + 4k``,
a ``size`` the models cannot take, unknown ``cameras`` (trajectory name), a malformed cameras JSON (or one whose
rotations are not orthonormal), a checkpoint directory with a missing part, an output directory that cannot be created or
written (it is created and probed before anything is computed). Inputs used in a way their author may not expect
get a one-line ``warning: ...`` (``warn``): a prompt longer than the text encoder's 512 tokens, images far smaller
than the model's input or of extreme aspect ratio, frames left out of a long video, outputs of a previous run
about to be replaced (see :mod:`gen3r_jax.sampling.inputs` and :func:`gen3r_jax.sampling.export.prepare_output_dir`).

As ``infer.py``: ``prompt`` may be the path of a text file (its first line is the prompt), and for ``allview``
``images`` may be a video or a folder of frames; ``allview`` ignores ``cameras`` (its camera map is zero), so
it runs as ``free`` (no VGGT camera estimate).

The config's sampling options carry :class:`SampleOptions`' field names (``num_steps``, ``cameras``,
``guidance_scale``, ``size``, ...: :func:`options_from_config`); ``config.sharding`` gives the sharding rules of a
``mesh`` run (:class:`gen3r_jax.parallel.rules.Rules`).

Several processes (``jax.distributed``, one per GPU: ``launch/sample.py --coordinator_address=... --num_processes=N
--process_id=i``, docs/multi_gpu.md): every process reads the same inputs and runs the sampler over the global
mesh (``mesh``); process 0 alone creates the demo cache and probes and writes the output directory (:func:`is_writer`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from gen3r_jax.apps import demo
from gen3r_jax.apps import export as scene_export
from gen3r_jax.apps.bundle import check_bundle, load_bundle, read_scheduler_config, resolve_checkpoint
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.models.umt5.tokenizer import SPIECE_FILE, UMT5Tokenizer
from gen3r_jax.parallel.rules import MESH_AXES, Rules, make_mesh
from gen3r_jax.progress import configure as configure_progress
from gen3r_jax.sampling import cache as step_cache
from gen3r_jax.sampling import inputs
from gen3r_jax.sampling.denoise import check_cfg_axis, check_parallel
from gen3r_jax.sampling.export import export_all, output_bytes, prepare_output_dir
from gen3r_jax.sampling.pipeline import (SampleOptions, cache_settings, check_cache, check_options, generate,
                                         make_scheduler)
from gen3r_jax.sampling.placement import check_placement


DTYPES = ("float32", "bfloat16")


def image_paths(spec: str) -> list[str]:
  return [p.strip() for p in str(spec or "").split(",") if p.strip()]


OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(SampleOptions))


def options_from_config(cfg) -> SampleOptions:
  """The :class:`SampleOptions` of a sampling config: its fields named as ``SampleOptions`` names them (one
  vocabulary, no renaming; the other fields, ``checkpoint``, ``images``, ``out``, ..., are the tool's). An unset
  placeholder (``None``) and an empty ``cache_steps`` keep ``SampleOptions``' default."""
  kw = {name: cfg[name] for name in OPTION_FIELDS if name in cfg and cfg[name] is not None}
  if kw.get("cache_steps") == "":
    del kw["cache_steps"]                                       # --config.cache_steps="": no forced plan
  if kw.get("task") == "allview":
    kw["cameras"] = "free"                                      # infer.py: allview's camera map is zero
  return SampleOptions(**kw)


def is_writer() -> bool:
  """Whether this process writes files: with several processes (``jax.distributed``) only process 0 does; every
  process reads the same inputs and runs the same sampler over the global mesh."""
  return jax.process_index() == 0


def _writer_first(fn):
  """``fn()`` on process 0, then (several processes) on the others once process 0 is done: files ``fn`` creates
  (the demo cache) are written by one process and only read by the others."""
  if jax.process_count() == 1:
    return fn()
  out = fn() if is_writer() else None
  multihost_utils.sync_global_devices("gen3r_jax.apps.sample: demo cache written")
  return out if is_writer() else fn()


def resolve_demo(cfg, log=print):
  """Demo config: fill ``checkpoint`` / ``images`` with the cached random bundle and example image."""
  if not cfg.demo.enabled:
    return cfg.checkpoint, image_paths(cfg.images)
  return _writer_first(lambda: _resolve_demo(cfg, log))


def _resolve_demo(cfg, log):
  cache = cfg.demo.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "gen3r_jax_demo")
  images = image_paths(cfg.images) or [demo.ensure_example_image(cache, seed=int(cfg.demo.seed))]
  if inputs.expected_views(cfg.task, cfg.num_frames) != len(images) and not cfg.images:
    images = images * inputs.expected_views(cfg.task, cfg.num_frames)
  ckpt = cfg.checkpoint or demo.ensure_demo_bundle(cache, seed=int(cfg.demo.seed), log=log)
  return ckpt, images


def parse_mesh(spec: str) -> dict[str, int] | None:
  """``"fsdp=2,context=2"`` -> ``{"fsdp": 2, "context": 2}`` (``""`` -> None: no mesh)."""
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


def read_prompt(prompt: str, log=print, warn=inputs.print_warning) -> str:
  """The prompt, or, when ``prompt`` is the path of a text file, its first line (``infer.py --prompts``)."""
  require(isinstance(prompt, str) and prompt.strip() != "", 'no prompt: pass --config.prompt="..." (or the path '
                                                            'of a text file whose first line is the prompt).')
  if not os.path.isfile(prompt):
    return prompt
  try:
    with open(prompt, encoding="utf-8") as f:
      lines = [ln.rstrip("\r\n") for ln in f]
  except (OSError, UnicodeDecodeError) as e:
    raise Gen3RInputError(f"cannot read prompt file {prompt!r} ({e}); pass a UTF-8 text file or the prompt itself."
                          ) from None
  text = lines[0] if lines else ""
  require(text.strip() != "", f"prompt file {prompt!r}: its first line is empty; put the prompt on the first line.")
  log(f"[sample] prompt: first line of {prompt}")
  if any(ln.strip() for ln in lines[1:]):
    warn(f"prompt file {prompt!r} has {len(lines)} lines; only the first is the prompt, as infer.py reads it.")
  return text


def check_prompt_length(checkpoint: str, texts: dict[str, str], max_length: int = 512,
                        warn=inputs.print_warning) -> dict[str, int]:
  """Tokenize each prompt with the checkpoint's tokenizer (when it has one) and warn for any longer than
  ``max_length`` tokens (eos included), which the text encoder cuts as ``infer.py`` does. Returns the counts."""
  tok_dir = os.path.join(checkpoint, "tokenizer")
  if not os.path.isfile(os.path.join(tok_dir, SPIECE_FILE)):
    return {}      # load_bundle names what is missing
  tok = UMT5Tokenizer.from_pretrained(tok_dir)
  counts = {}
  for name, text in texts.items():
    ids = tok.encode(text)
    counts[name] = n = len(ids) + (0 if ids[-1:] == [tok.eos_id] else 1)
    if n > max_length:
      warn(f"{name} is {n} tokens long (eos included) but the text encoder takes {max_length}: the last "
           f"{n - max_length} tokens are cut, as infer.py does; shorten it to keep all of it.")
  return counts


def _check(cfg, checkpoint: str, paths: list[str], *, log, warn):
  """All checks that need no model (module docstring): ``(options, views as read, prompt)``."""
  require(bool(cfg.out), "no output directory: pass --config.out=<dir>.")
  require(isinstance(cfg.prompt, str) and cfg.prompt.strip() != "", 'no prompt: pass --config.prompt="...".')
  require(cfg.dtype in DTYPES, f"dtype {cfg.dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
  require(cfg.param_dtype in ("",) + DTYPES,
          f"param_dtype {cfg.param_dtype!r} is not supported; use \"\" (as converted) or one of "
          f"{', '.join(DTYPES)}.")
  check_placement(cfg.placement)
  formats = scene_export.parse_formats(cfg.get("export_formats", ""))
  scene_export.check_export_targets(scene_export.destinations(formats, cfg.out))
  mesh_shape = parse_mesh(cfg.mesh)
  Rules.from_config(cfg.get("sharding"))
  check_parallel(None, cfg.context_parallel)
  require(bool(checkpoint), "no checkpoint: pass --config.checkpoint=<converted bundle dir> (launch/convert.py).")
  require(len(paths) > 0, "no conditioning image: pass --config.images=a.png[,b.png] (allview: also a video file or "
                          "a folder of frames).")
  opts = options_from_config(cfg)
  check_cfg_axis(mesh_shape, opts.guidance_scale)
  step_cache.check_mesh(cache_settings(opts), mesh_shape)
  inputs.check_task(opts.task)
  inputs.check_num_frames(opts.num_frames)
  inputs.check_size(opts.size)
  if opts.task == "allview" and cfg.cameras != "free":
    log(f"[sample] task allview: the cameras ({cfg.cameras}) are not used; the camera map is zero, as in infer.py")
  views = inputs.read_views(paths, opts.task, opts.num_frames, size=opts.size, warn=warn)
  check_options(opts, len(views))
  check_bundle(checkpoint)
  if opts.cache == "magcache" and not opts.scheduler:
    # the checkpoint's scheduler against the magcache schedule, before any weight is read
    check_cache(opts, make_scheduler(opts, read_scheduler_config(checkpoint)))
  prompt = read_prompt(cfg.prompt, log=log, warn=warn)
  texts = {"prompt": prompt}
  if opts.guidance_scale > 1.0:
    texts["negative_prompt"] = opts.negative_prompt
  check_prompt_length(checkpoint, texts, opts.max_sequence_length, warn=warn)
  expected = output_bytes(opts.num_frames, opts.size, opts.size, int(cfg.max_points) or None)
  if is_writer():
    prepare_output_dir(cfg.out, expected_bytes=expected, overwrite=bool(cfg.get("overwrite", True)), warn=warn)
  return opts, views, prompt


def check_config(cfg, checkpoint: str, paths: list[str], *, log=lambda s: None,
                 warn=inputs.print_warning) -> SampleOptions:
  """All checks that need no model (module docstring); creates and probes the output directory last."""
  return _check(cfg, checkpoint, paths, log=log, warn=warn)[0]


def load_for_config(cfg, checkpoint: str, log=print):
  """Load the bundle ``checkpoint`` as ``cfg`` asks (dtype, param_dtype, placement, mesh and its sharding rules,
  ``cfg.sharding``)."""
  shape = parse_mesh(cfg.mesh)
  mesh = make_mesh(shape) if shape else None
  t0 = time.perf_counter()
  bundle = load_bundle(checkpoint, dtype=cfg.dtype, param_dtype=cfg.param_dtype or None, mesh=mesh,
                       rules=Rules.from_config(cfg.get("sharding")), placement=cfg.placement, log=log)
  log(f"[sample] loaded {checkpoint} ({time.perf_counter() - t0:.1f} s, dtype {cfg.dtype}, placement "
      f"{cfg.placement}{', mesh ' + str(dict(mesh.shape)) if mesh is not None else ''})")
  return bundle


def sample_from_config(cfg, log=print, warn=inputs.print_warning, *, bundle=None,
                       on_step: Callable[[int, int], None] | None = None) -> dict[str, str]:
  """Run ``launch/sample.py`` for a config; returns ``{output file name: path}``. ``warn`` gets the one-line
  warnings (default: ``warning: ...`` on stderr).

  ``bundle``: one already loaded from ``cfg.checkpoint`` (the web app keeps one across runs); it is used as is and
  never released. ``on_step(k, num_steps)`` is called after each denoising step (:func:`generate`).
  """

  if cfg.matmul_precision != "default":
    jax.config.update("jax_default_matmul_precision", cfg.matmul_precision)
  checkpoint, paths = resolve_demo(cfg, log)
  checkpoint = resolve_checkpoint(checkpoint, log=log)   # hf:<repo>[@rev]: converted once into the hub cache
  opts, views, prompt = _check(cfg, checkpoint, paths, log=log, warn=warn)
  rules = Rules.from_config(cfg.get("sharding"))
  images = inputs.preprocess_views(views, opts.size)
  if views.source != "images":
    log(f"[sample] {len(views)} conditioning frames from {views.source} {paths[0]}")
  placement = cfg.placement
  release = bool(cfg.release) and bundle is None
  if bundle is None:
    bundle = load_for_config(cfg, checkpoint, log=log)
  configure_progress(bars=bool(cfg.progress))      # False: plain progress lines (as off a terminal), no \r
  out = generate(bundle, images, prompt, opts, release=release, progress=True,
                 context_parallel=cfg.context_parallel, rules=rules, log=log, on_step=on_step)
  k = out["intrinsics"]
  meta = {"task": opts.task, "cameras": opts.cameras if isinstance(opts.cameras, str) else "json",
          "seed": opts.seed, "num_frames": opts.num_frames, "num_steps": opts.num_steps,
          "guidance_scale": opts.guidance_scale, "shift": opts.shift, "scheduler": opts.scheduler or "checkpoint",
          "posterior": opts.posterior, "dtype": cfg.dtype, "images": paths, "checkpoint": checkpoint,
          "views": views.source, "num_views": len(views),
          "cache": {k: out["cache"].get(k) for k in ("kind", "full_steps", "cached_steps", "cached")},
          "precision": opts.precision,
          "placement": placement, "timings_s": {n: v for n, v in out["timings"].items() if not isinstance(v, list)},
          "peak_bytes_in_use": out["stats"]["peak_bytes_in_use"]}
  if not is_writer():
    log(f"[sample] process {jax.process_index()} of {jax.process_count()}: done; process 0 writes the outputs "
        f"to {cfg.out}")
    return {}
  files = export_all(cfg.out, rgb=out["rgb"], depth=out["depth"][..., 0], points=out["pcds"], masks=out["masks"],
                     c2w=out["c2w"], K=k, fps=cfg.fps, max_points=int(cfg.max_points) or None, seed=opts.seed,
                     prompt=prompt, meta=meta, extra_npz={"latents.npz": {"latents": out["latents"]},
                                "vggt_predictions.npz": {"depth_conf": out["depth_conf"].astype(np.float32)}})
  log(f"[sample] wrote {len(files)} files to {cfg.out}")
  formats = scene_export.parse_formats(cfg.get("export_formats", ""))
  scene = scene_export.scene_from_arrays(rgb=out["rgb"], depth=out["depth"][..., 0], points=out["pcds"],
                                         masks=out["masks"], c2w=out["c2w"], K=k, prompt=prompt, meta=meta,
                                         path=cfg.out)
  files.update(scene_export.replace_exports(scene, formats, seed=opts.seed, log=log, warn=warn))
  return files


__all__ = ("sample_from_config", "load_for_config", "check_config", "options_from_config", "resolve_demo", "image_paths", "parse_mesh",
           "read_prompt", "check_prompt_length")
