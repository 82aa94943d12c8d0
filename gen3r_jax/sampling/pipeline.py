"""Gen3R sampling end to end: conditioning images + prompt + cameras -> rgb video, depth, points, cameras.

    bundle = load_bundle("ckpt/gen3r")                      # gen3r_jax.convert.bundle (weights loaded once)
    images = load_control_images(["first.png"])             # [1, 560, 560, 3] in [0, 1]
    out = generate(bundle, images, "a palace", SampleOptions(task="1view", cameras="zoom_out"))
    out["rgb"] [F, H, W, 3]   out["depth"] [F, H, W, 1]   out["pcds"] [F, H, W, 3]   out["masks"] [F, H, W]
    out["c2w"] [F, 4, 4]      out["intrinsics"] [F, 3, 3] (decoded cameras)

This module only wires the stages (``sampling/stages.py``, ``sampling/denoise.py``) in the order of the official
``infer.py`` + ``Gen3RPipeline.__call__``:

1. VGGT on the conditioning views: first-frame intrinsics and scene scale (built-in trajectories only);
2. cameras -> Plücker -> camera latents;
3. umT5 on the prompt and the negative prompt (then the text encoder may be released);
4. CLIP tokens of the first frame (then CLIP may be released);
5. zero-filled control video -> Wan VAE posterior (``sample``, the official default, or ``mode``) + masks;
6. the CFG denoising loop (then the DiT may be released);
7. appearance half -> Wan VAE decode -> rgb; geometry half -> adapter -> VGGT heads -> depth, points, cameras.

With ``release=True`` each model is dropped from the bundle (field set to ``None``) once no later stage needs it.
Everything the user passes is checked before the first compile. All randomness comes from ``seed``: the initial
noise and, with ``posterior="sample"``, the VAE posterior draw; the same seed gives the same outputs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import require
from gen3r_jax.sampling import inputs, stages
from gen3r_jax.sampling.cameras import BUILTIN_TRAJECTORIES, check_num_frames, load_cameras_json, parse_cameras
from gen3r_jax.sampling.denoise import cfg_context, denoise
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
  scheduler: str | None = None             # None: the checkpoint's scheduler_config.json; else unipc|dpmpp|euler
  posterior: str = "sample"                # VAE posterior of the control video: sample (official) | mode
  min_max_depth_mask: bool = True
  max_sequence_length: int = 512
  size: int = inputs.SIZE


def check_options(opts: SampleOptions, num_views: int) -> None:
  """Every user-settable value, before anything compiles."""
  inputs.check_views(opts.task, num_views, check_num_frames(opts.num_frames))
  ok = isinstance(opts.num_steps, (int, np.integer)) and not isinstance(opts.num_steps, bool)
  require(ok and opts.num_steps >= 1, f"steps (num_steps) must be a positive integer (50 in infer.py), got "
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
  if opts.scheduler is not None:
    get_scheduler(opts.scheduler)


def make_scheduler(opts: SampleOptions, scheduler_config: dict | None):
  if opts.scheduler is not None:
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
             release: bool = False, record: bool = False, progress: bool = True,
             log: Callable[[str], None] = lambda s: None) -> dict:
  """Run the whole pipeline (module docstring).

  Args:
    bundle: a :class:`~gen3r_jax.convert.bundle.Gen3RBundle` (tokenizer, text_encoder, clip, transformer, vae,
      geo_adapter, vggt, scheduler_config).
    images: conditioning views ``[n, 560, 560, 3]`` in [0, 1] (see :func:`inputs.load_control_images`).
    prompt: the text prompt.
    latents: optional initial latents ``[1, f, 70, 140, 16]`` (default: normal noise from ``opts.seed``).
    release: drop each model from ``bundle`` once it is no longer needed.
    record: also return every stage's intermediates and the latents after each step.
  Returns:
    a dict of numpy arrays (batch axis removed for the video outputs): ``rgb``, ``depth``, ``points`` (VGGT
    point head), ``pcds`` (depth unprojection), ``masks``, ``extrinsics``, ``intrinsics``, ``c2w``, the
    trajectory (``traj_c2w``, ``traj_K``) and ``timings``; with ``record`` also ``stages`` (a dict).
  """
  images = np.asarray(images)
  require(isinstance(prompt, str) and prompt.strip() != "", "prompt must be a non-empty string.")
  inputs.check_images(images, opts.size)
  check_options(opts, images.shape[0])
  sched = make_scheduler(opts, bundle.scheduler_config)
  shape = latent_shape(opts, bundle.transformer.cfg.out_dim)
  if latents is not None:
    require(tuple(np.shape(latents)) == shape,
            f"latents: expected shape {shape} ([1, f, h, 2w, C] channels-last), got {tuple(np.shape(latents))}.")
  key_noise, key_post = jax.random.split(jax.random.PRNGKey(int(opts.seed)))
  views = jnp.asarray(images, jnp.float32)[None]                          # [1, n, H, W, 3]
  rec, t = {}, {}

  def tick(name, t0):
    t[name] = time.perf_counter() - t0
    log(f"[sample] {name}: {t[name]:.1f} s")

  t0 = time.perf_counter()
  estimate = None
  if isinstance(opts.cameras, str) and opts.cameras in BUILTIN_TRAJECTORIES:
    estimate = stages.estimate_cameras(bundle.vggt, views)
  raw, c2ws, ks = stages.trajectory(opts.cameras, opts.num_frames, estimate)
  plucker, cam_latents = stages.camera_conditioning(c2ws, ks, opts.size, cameras=opts.cameras, task=opts.task)
  tick("cameras", t0)

  t0 = time.perf_counter()
  pos = stages.encode_text(bundle.tokenizer, bundle.text_encoder, prompt, opts.max_sequence_length)
  use_cfg = opts.guidance_scale > 1.0
  neg = stages.encode_text(bundle.tokenizer, bundle.text_encoder, opts.negative_prompt,
                           opts.max_sequence_length) if use_cfg else None
  _release(bundle, "text_encoder", release)
  context = cfg_context([pos["embeds"]], [neg["embeds"]] if use_cfg else None, bundle.transformer.cfg)
  tick("text", t0)

  t0 = time.perf_counter()
  clip_ctx = stages.clip_context(bundle.clip, views)
  _release(bundle, "clip", release)
  control = stages.control_latents(bundle.vae, views, opts.num_frames, posterior=opts.posterior, key=key_post)
  tick("control", t0)

  schedule = sched.set_timesteps(int(opts.num_steps), float(opts.shift))
  x0 = (jnp.asarray(latents, jnp.float32) if latents is not None
        else jax.random.normal(key_noise, shape, jnp.float32))
  t0 = time.perf_counter()
  den = denoise(bundle.transformer, sched, schedule, x0, context=context, clip_fea=clip_ctx, y=control,
                y_camera=cam_latents, guidance_scale=float(opts.guidance_scale), record=record,
                progress=progress)
  _release(bundle, "transformer", release)
  tick("denoise", t0)

  t0 = time.perf_counter()
  dec = stages.decode(bundle.vae, bundle.geo_adapter, bundle.vggt, den.latents,
                      min_max_depth_mask=opts.min_max_depth_mask)
  tick("decode", t0)

  out = {k: np.asarray(dec[k])[0] for k in ("rgb", "depth", "points", "pcds", "masks", "extrinsics",
                                            "intrinsics", "c2w", "pose_enc")}
  out.update(traj_c2w=np.asarray(c2ws), traj_K=np.asarray(ks), latents=np.asarray(den.latents),
             timings=dict(t, denoise_compile=den.compile_seconds, denoise_steps=den.seconds))
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


__all__ = ("SampleOptions", "check_options", "generate", "latent_shape", "make_scheduler")
