"""Gen3R sampling end to end: conditioning images + prompt + cameras -> rgb video, depth, points, cameras.

    bundle = load_bundle("ckpt/gen3r")                      # gen3r_jax.apps.bundle (weights loaded once)
    images = load_control_images(["first.png"])             # [1, 560, 560, 3] in [0, 1]
    out = generate(bundle, images, "a palace", SampleOptions(task="1view", cameras="zoom_out"))
    out["rgb"] [F, H, W, 3]   out["depth"] [F, H, W, 1]   out["pcds"] [F, H, W, 3]   out["masks"] [F, H, W]
    out["c2w"] [F, 4, 4]      out["intrinsics"] [F, 3, 3] (decoded cameras)

This module only wires the stages (``sampling/stages.py``, ``sampling/denoise.py``) of the official ``infer.py`` +
``Gen3RPipeline.__call__``, one model per stage (the stages are independent until the denoising loop, so their
order does not change any output):

1. ``text``: umT5 on the prompt and the negative prompt (then the text encoder may be released);
2. ``clip``: CLIP tokens of the first frame (then CLIP may be released);
3. ``cameras``: VGGT on the conditioning views -> first-frame intrinsics and scene scale (built-in trajectories
   only); cameras -> Plücker -> camera latents;
4. ``vae_encode``: zero-filled control video -> Wan VAE posterior (``sample``, the official default, or ``mode``)
   + masks;
5. ``denoise``: the CFG denoising loop (then the DiT may be released);
6. ``vae_decode``: appearance half -> Wan VAE decode -> rgb;
7. ``geometry_decode``: geometry half -> adapter -> VGGT heads (not its aggregator) -> depth, points, cameras.

Opt-in accelerators (approximate, off by default): ``opts.cache`` (``first_block`` | ``magcache`` | ``cfg``, step
caches of :mod:`gen3r_jax.sampling.cache`) and ``opts.precision="fp8"`` (the DiT blocks' GEMMs in float8,
:mod:`gen3r_jax.nn.fp8`); docs/sampling.md "Accelerators".

With ``release=True`` each model is dropped from the bundle (field set to ``None``) once no later stage needs it.
A bundle loaded with ``placement="sequential"`` keeps its weights in host memory; each stage copies its model to
the device and deletes the copy afterwards, so the device holds one stage's weights at a time
(:mod:`gen3r_jax.sampling.placement`; per-stage time and memory in ``out["stats"]``). A DiT sharded over a mesh
runs the denoising step sharded (fsdp / context parallel, :mod:`gen3r_jax.sampling.denoise`).
Everything the user passes is checked before the first compile. All randomness comes from ``seed``: the initial
noise and, with ``posterior="sample"``, the VAE posterior draw; the same seed gives the same outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import require
from gen3r_jax.models.wan_dit.transformer import with_config
from gen3r_jax.nn.fp8 import check_fp8_supported
from gen3r_jax.parallel.rules import as_rules
from gen3r_jax.sampling import cache as step_cache
from gen3r_jax.sampling import inputs, stages
from gen3r_jax.sampling.cameras import BUILTIN_TRAJECTORIES, check_num_frames, load_cameras_json, parse_cameras
from gen3r_jax.sampling.denoise import cfg_context, check_cfg_axis, check_parallel, denoise
from gen3r_jax.sampling.geometry_decode import decode_geometry, split_joint_latents
from gen3r_jax.sampling.placement import StageStats, mesh_of
from gen3r_jax.sampling.schedulers import get_scheduler, scheduler_from_config
from gen3r_jax.sampling.schedulers.schedules import check_shift


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  """Sampling settings (defaults: the released ``infer.py``; ``num_frames`` 49, 50 steps)."""
  task: str = "1view"                      # 1view | 2view | allview
  cameras: Any = "zoom_out"                # built-in trajectory, cameras JSON path, or its decoded dict
  num_frames: int = 49                     # 1 + 4k
  num_steps: int = 50
  guidance_scale: float = 5.0              # <= 1: no classifier-free guidance
  shift: float = 5.0
  negative_prompt: str = "bad detailed"
  seed: int = 0
  scheduler: str | None = None             # None or "": the checkpoint's scheduler_config.json; else unipc|dpmpp|euler
  posterior: str = "sample"                # VAE posterior of the control video: sample (official) | mode
  min_max_depth_mask: bool = True
  max_sequence_length: int = 512
  size: int = inputs.SIZE
  # opt-in accelerators (approximate; docs/sampling.md "Accelerators"): defaults = the exact path
  cache: str = "none"                      # none | first_block | magcache | cfg (gen3r_jax.sampling.cache)
  cache_threshold: float | None = None     # first_block / magcache; None: 0.05 / 0.12; 0 never caches
  cache_schedule: str = ""                 # magcache: the schedule JSON of launch/calibrate_cache.py
  cache_steps: Any = None                  # forced plan: these step indices are cached ("10,12,14")
  cache_max_skips: int | None = None       # most cached steps in a row; None: 3 / 2 / 4 (first_block/magcache/cfg)
  cache_warmup: int | None = None          # steps computed before any is cached; None: 1 / 20 % / a third
  precision: str = "exact"                 # exact | fp8 (the DiT blocks' linear layers in float8 e4m3)


PRECISIONS = ("exact", "fp8")


def cache_settings(opts: SampleOptions) -> step_cache.CacheSettings:
  return step_cache.CacheSettings(kind=opts.cache, threshold=opts.cache_threshold,
                                  schedule=opts.cache_schedule or None, steps=opts.cache_steps,
                                  max_skips=opts.cache_max_skips, warmup=opts.cache_warmup)


def check_cache(opts: SampleOptions, scheduler=None) -> None:
  """The cache options of ``opts`` (:func:`gen3r_jax.sampling.cache.check_settings`); ``scheduler``: the run's
  scheduler object, compared with a magcache schedule (None while it is not known yet)."""
  step_cache.check_settings(cache_settings(opts), num_steps=int(opts.num_steps), shift=float(opts.shift),
                            use_cfg=opts.guidance_scale > 1.0, guidance_scale=float(opts.guidance_scale),
                            scheduler=scheduler)


def check_options(opts: SampleOptions, num_views: int) -> None:
  """Every user-settable value, before anything compiles."""
  inputs.check_views(opts.task, num_views, check_num_frames(opts.num_frames))
  ok = isinstance(opts.num_steps, (int, np.integer)) and not isinstance(opts.num_steps, bool)
  require(ok and opts.num_steps >= 1, f"num_steps must be a positive integer (50 in infer.py), got "
                                      f"{opts.num_steps!r}.")
  check_shift(opts.shift)
  require(isinstance(opts.guidance_scale, (int, float)) and np.isfinite(opts.guidance_scale)
          and opts.guidance_scale >= 0, f"guidance_scale must be a number >= 0, got {opts.guidance_scale!r}.")
  require(opts.posterior in stages.POSTERIORS,
          f"posterior must be one of {stages.POSTERIORS}, got {opts.posterior!r}.")
  inputs.check_size(opts.size)
  inputs.check_cameras_arg(opts.cameras)
  if isinstance(opts.cameras, dict):
    parse_cameras(opts.cameras, opts.num_frames)
  elif isinstance(opts.cameras, str) and opts.cameras not in BUILTIN_TRAJECTORIES:
    load_cameras_json(opts.cameras, opts.num_frames)
  # the checkpoint's scheduler (opts.scheduler empty) is compared with a magcache schedule once the bundle is
  # known (generate, apps.sample), still before anything compiles
  check_cache(opts, get_scheduler(opts.scheduler) if opts.scheduler else None)
  require(opts.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got "
                                        f"{opts.precision!r}.")
  if opts.precision == "fp8":
    check_fp8_supported()


def make_scheduler(opts: SampleOptions, scheduler_config: dict | None):
  if opts.scheduler:
    return get_scheduler(opts.scheduler)
  require(scheduler_config is not None, "the checkpoint has no scheduler config; set scheduler=unipc.")
  return scheduler_from_config(scheduler_config)


def latent_shape(opts: SampleOptions, z_dim: int = 16) -> tuple[int, ...]:
  """``[1, f, h, 2w, z]`` of the joint (appearance | geometry) latents."""
  h = opts.size // 8
  return (1, (opts.num_frames - 1) // 4 + 1, h, 2 * h, z_dim)


def _release(bundle, field: str, release: bool) -> None:
  if release:
    setattr(bundle, field, None)


def generate(bundle, images, prompt: str, opts: SampleOptions = SampleOptions(), *, latents=None,
             release: bool = False, record: bool = False, progress: bool = True, mesh=None,
             context_parallel: str = "allgather", rules=None, log: Callable[[str], None] = lambda s: None,
             probe: Callable[[str, tuple], None] | None = None, calibrate_cache: bool = False,
             on_step: Callable[[int, int], None] | None = None) -> dict:
  """Run the whole pipeline (module docstring).

  Args:
    bundle: a :class:`~gen3r_jax.apps.bundle.Gen3RBundle` (tokenizer, text_encoder, clip, transformer, vae,
      geo_adapter, vggt, scheduler_config), resident on the device or in host memory (``placement``: each model
      is then copied to the device for its stage only, see :mod:`gen3r_jax.sampling.placement`).
    images: conditioning views ``[n, 560, 560, 3]`` in [0, 1] (see :func:`inputs.load_control_images`).
    prompt: the text prompt.
    latents: optional initial latents ``[1, f, 70, 140, 16]`` (default: normal noise from ``opts.seed``).
    release: drop each model from ``bundle`` once it is no longer needed.
    record: also return every stage's intermediates and the latents after each step.
    mesh: the mesh of a sharded DiT (default: read from its parameters); ``context_parallel`` (``"allgather"`` |
      ``"ring"`` | ``"ulysses"`` | ...) is the self-attention strategy when the mesh has ``context > 1``; a mesh
      axis ``cfg=2`` runs the two guidance branches on two device groups (CFG-parallel, needs guidance > 1);
      ``rules`` the sharding rules of its activations (:class:`gen3r_jax.parallel.rules.Rules`; the DiT's
      ``model_rules`` apply).
    probe: called as ``probe(stage, models)`` at the end of each stage while its models are on the device.
    calibrate_cache: run the block-cache programs with every step computed, whatever the cache's threshold or
      plan, and return the residual-magnitude ratios in ``out["cache"]["ratios"]`` (what
      ``launch/calibrate_cache.py`` does; ``opts.cache`` must be a block cache, ``first_block``).
    on_step: called as ``on_step(k, num_steps)`` after denoising step k (1-based), e.g. a web app's progress bar
      (``log`` gets a line as each stage starts and ends).
  Returns:
    a dict of numpy arrays (batch axis removed for the video outputs): ``rgb``, ``depth``, ``depth_conf`` (VGGT's
    depth confidence), ``points`` (VGGT point head), ``pcds`` (depth unprojection), ``masks``, ``extrinsics``,
    ``intrinsics``, ``c2w``, the trajectory (``traj_c2w``, ``traj_K``), ``timings`` (seconds per stage, denoise
    compile and steps),
    ``stats`` (per stage: seconds, weights on the device and device memory, see
    :class:`~gen3r_jax.sampling.placement.StageStats`; ``denoise`` also ``full_steps`` / ``cached_steps``),
    ``cache`` (the step cache's record, :func:`gen3r_jax.sampling.cache.denoise_cached`, with ``step_kinds``);
    with ``record`` also ``stages`` (a dict).
  """
  images = np.asarray(images)
  require(isinstance(prompt, str) and prompt.strip() != "", "prompt must be a non-empty string.")
  inputs.check_images(images, opts.size)
  check_options(opts, images.shape[0])
  check_parallel(mesh, context_parallel)
  cache = cache_settings(opts)
  dit_mesh = mesh if mesh is not None else mesh_of(bundle.transformer)
  check_cfg_axis(dit_mesh.shape if dit_mesh is not None else None, opts.guidance_scale)   # before any stage runs
  step_cache.check_mesh(cache, dit_mesh)
  use_cfg = opts.guidance_scale > 1.0
  sched = make_scheduler(opts, bundle.scheduler_config)
  check_cache(opts, sched)
  if calibrate_cache:
    step_cache.check_calibration(opts.cache)
  shape = latent_shape(opts, bundle.transformer.cfg.out_dim)
  if latents is not None:
    require(tuple(np.shape(latents)) == shape,
            f"latents: expected shape {shape} ([1, f, h, 2w, C] channels-last), got {tuple(np.shape(latents))}.")
  key_noise, key_post = jax.random.split(jax.random.PRNGKey(int(opts.seed)))
  views = jnp.asarray(images, jnp.float32)[None]                          # [1, n, H, W, 3]
  stats = StageStats(log, probe)
  rec = {}

  # 1. umT5 on the prompt and the negative prompt
  with stats.stage("text", bundle.text_encoder) as (te,):
    pos = stages.encode_text(bundle.tokenizer, te, prompt, opts.max_sequence_length)
    neg = stages.encode_text(bundle.tokenizer, te, opts.negative_prompt, opts.max_sequence_length) \
        if use_cfg else None
  _release(bundle, "text_encoder", release)
  context = cfg_context([pos["embeds"]], [neg["embeds"]] if use_cfg else None, bundle.transformer.cfg)

  # 2. CLIP tokens of the first frame
  with stats.stage("clip", bundle.clip) as (clip,):
    clip_ctx = stages.clip_context(clip, views)
  _release(bundle, "clip", release)

  # 3. VGGT on the conditioning views (built-in trajectories), cameras -> Plücker -> camera latents
  estimate = None
  builtin = isinstance(opts.cameras, str) and opts.cameras in BUILTIN_TRAJECTORIES
  with stats.stage("cameras", bundle.vggt if builtin else None) as (vggt,):
    if builtin:
      estimate = stages.estimate_cameras(vggt, views)
    raw, c2ws, ks = stages.trajectory(opts.cameras, opts.num_frames, estimate)
    plucker, cam_latents = stages.camera_conditioning(c2ws, ks, opts.size, cameras=opts.cameras, task=opts.task)

  # 4. zero-filled control video -> Wan VAE posterior + masks
  with stats.stage("vae_encode", bundle.vae) as (vae,):
    control = stages.control_latents(vae, views, opts.num_frames, posterior=opts.posterior, key=key_post)

  # 5. the CFG denoising loop
  schedule = sched.set_timesteps(int(opts.num_steps), float(opts.shift))
  x0 = (jnp.asarray(latents, jnp.float32) if latents is not None
        else jax.random.normal(key_noise, shape, jnp.float32))
  # precision=fp8: the same parameters under a DiT config whose block GEMMs run in float8 (nothing is copied)
  transformer = bundle.transformer if opts.precision == "exact" else with_config(bundle.transformer, gemm="fp8")
  with stats.stage("denoise", transformer) as (dit,):
    kw = dict(context=context, clip_fea=clip_ctx, y=control, y_camera=cam_latents,
              guidance_scale=float(opts.guidance_scale), record=record, progress=progress, mesh=mesh,
              callback=None if on_step is None else lambda i, _: on_step(i + 1, schedule.num_steps))
    if cache.enabled:
      den = step_cache.denoise_cached(dit, sched, schedule, x0, settings=cache, calibrate=calibrate_cache, **kw)
    else:
      den = denoise(dit, sched, schedule, x0, context_parallel=context_parallel,
                    rules=as_rules(rules).for_model("dit"), **kw)
  del transformer
  cache_stats = getattr(den, "cache_stats", None) or {"kind": "none", "full_steps": schedule.num_steps,
                                                      "cached_steps": 0}
  stats.stages["denoise"].update(full_steps=cache_stats["full_steps"], cached_steps=cache_stats["cached_steps"],
                                 cache=cache_stats["kind"], precision=opts.precision)
  if cache.enabled or opts.precision != "exact":
    log(f"[sample] denoise: {cache_stats['full_steps']} full + {cache_stats['cached_steps']} cached steps "
        f"(cache {cache_stats['kind']}, precision {opts.precision})")
  _release(bundle, "transformer", release)

  # 6. appearance half -> Wan VAE decode -> rgb; geometry half -> adapter -> VGGT heads -> depth, points, cameras
  final = np.asarray(den.latents)           # via the host (8 MB): the decoders may live on other devices than a
  z_app, z_geo = split_joint_latents(final)  # sharded DiT
  with stats.stage("vae_decode", bundle.vae) as (vae,):
    rgb = stages.decode_rgb(vae, z_app)
  with stats.stage("geometry_decode", bundle.geo_adapter, bundle.vggt, only={1: stages.VGGT_HEADS}) as (ad, vg):
    dec = decode_geometry(ad, vg, z_geo, min_max_depth_mask=opts.min_max_depth_mask)
  dec["rgb"] = rgb

  out = {k: np.asarray(dec[k])[0] for k in ("rgb", "depth", "depth_conf", "points", "pcds", "masks", "extrinsics",
                                            "intrinsics", "c2w", "pose_enc")}
  timings = {name: st["seconds"] for name, st in stats.stages.items()}
  out.update(traj_c2w=np.asarray(c2ws), traj_K=np.asarray(ks), latents=final,
             timings=dict(timings, denoise_compile=den.compile_seconds, denoise_steps=den.seconds),
             stats=stats.summary(), cache=dict(cache_stats, step_kinds=getattr(den, "step_kinds", None)))
  if record:
    rec.update(prompt_ids=pos["input_ids"], prompt_mask=pos["attention_mask"], prompt_embeds=pos["embeds"],
               c2ws_raw=np.asarray(raw), c2ws=np.asarray(c2ws), Ks=np.asarray(ks), plucker=plucker,
               camera_latents=cam_latents, control_latents=control, clip_context=clip_ctx,
               timesteps=schedule.timesteps, sigmas=schedule.sigmas, latents_init=x0,
               latents_per_step=den.history, guided=den.guided, decode=dec)
    if neg is not None:
      rec.update(negative_ids=neg["input_ids"], negative_mask=neg["attention_mask"], negative_embeds=neg["embeds"])
    if estimate is not None:
      rec["estimate"] = estimate
    out["stages"] = rec
  return out


__all__ = ("SampleOptions", "PRECISIONS", "cache_settings", "check_cache", "check_options", "generate", "latent_shape",
           "make_scheduler")
