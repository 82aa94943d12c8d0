"""Opt-in step caches for the denoising loop (``SampleOptions.cache``): skip most of the DiT on some steps.

    settings = CacheSettings("first_block", threshold=0.05)
    out = denoise_cached(dit, sched, schedule, x0, context=ctx, clip_fea=clip, y=control, y_camera=cam,
                         guidance_scale=5.0, settings=settings)
    out.step_kinds                     # ["full", "full", "cached", ...]
    out.cache_stats                    # full / cached counts, the per-step measures

The exact loop (:func:`gen3r_jax.sampling.denoise.denoise`) is untouched and stays the default (``cache="none"``).
Every cache here is approximate and measured against it (``bench/accelerators.py``, docs/sampling.md).

**Block caches** (``first_block``, ``magcache``): the DiT is split after its first block. A step runs the
embeddings and the first block (program ``first``, output ``h1 [R, L, D]``, R = 2 rows with CFG: uncond, cond),
then either

* ``full``: the remaining blocks, the head, CFG and the scheduler update; it also returns the *residual* of the
  remaining blocks ``h_last - h1`` (per CFG row), which is stored; or
* ``cached``: ``h1 + stored residual`` goes straight to the head (the other blocks are not run).

The Python loop decides per step (as the exact loop, each program is compiled once for the run):

* ``first_block``: cached when the relative L1 change of ``h1`` since the last full step,
  ``mean|h1 - h1_full| / mean|h1_full|``, is below ``threshold`` (no calibration: works with any checkpoint;
  ``threshold=0`` never caches).
* ``magcache``: a plan fixed before the loop from per-step residual-magnitude ratios ``gamma_i = mean over tokens
  of |r_i| / |r_(i-1)|`` (per CFG row) measured on the user's checkpoint (``launch/calibrate_cache.py``): as in
  MagCache, skipping accumulates ``ratio *= gamma_i``, ``err += |1 - ratio|``; a step is cached while ``err <
  threshold`` for every row and at most ``max_skips`` steps in a row, else computed (and the accumulators reset).

Both compute the first ``warmup`` steps fully and never more than ``max_skips`` cached steps in a row.

**CFG cache** (``cfg``): on a cached step the DiT runs on the conditional row only (half the work) and the
unconditional prediction is estimated from the *difference* ``d = cond - uncond`` stored at the last full step:
``uncond ~= cond - d``, so ``guided = cond + (g - 1) d``. This is FasterCache's CFG cache without its frequency
re-weighting of ``d`` (maxdiffusion implements the FFT variant); the difference varies more slowly over the
steps than either prediction. Default plan (maxdiffusion's for 480p Wan 2.1): full for the first third of the steps
(``warmup = S // 3``) and the last two, in between a full step every ``max_skips + 1 = 5``.

``steps`` (any kind) forces the plan: exactly those step indices are cached, whatever the measures say.

Not supported yet: caches with a DiT sharded over a mesh (:func:`check_mesh`: a one-line error, raised by the
sampler's input checks before anything compiles; the exact loop shards).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.sampling.denoise import (DenoiseOutput, Progress, _commit_like, cfg_inputs, check_denoise_inputs,
                                        denoise, guide, param_mesh)

KINDS = ("none", "first_block", "magcache", "cfg")
BLOCK_KINDS = ("first_block", "magcache")      # the caches that reuse the residual of the blocks after the first
SCHEDULE_FORMAT = "gen3r_jax.magcache/1"
# per-kind defaults of the knobs left at None (module docstring)
DEFAULT_THRESHOLD = {"first_block": 0.05, "magcache": 0.12}
DEFAULT_MAX_SKIPS = {"first_block": 3, "magcache": 2, "cfg": 4}
MAGCACHE_WARMUP_FRACTION = 0.2          # MagCache's retention ratio: the first 20 % of the steps are computed


@dataclasses.dataclass(frozen=True)
class CacheSettings:
  """What :func:`denoise_cached` does (see the module docstring; ``None`` = the kind's default).

  ``schedule``: a magcache schedule (path of the JSON written by ``launch/calibrate_cache.py``, or its dict).
  ``steps``: forced plan, the step indices served from the cache (``"3,5,7"`` or a sequence of ints).
  """
  kind: str = "none"
  threshold: float | None = None
  schedule: Any = None
  steps: Any = None
  max_skips: int | None = None
  warmup: int | None = None

  @property
  def enabled(self) -> bool:
    return self.kind != "none"


# ------------------------------------------------------------------------------------------------------------
# checks and plans (host only, before anything compiles)
# ------------------------------------------------------------------------------------------------------------

def parse_steps(steps, num_steps: int) -> tuple[int, ...] | None:
  """``"3,5,7"`` / ``[3, 5, 7]`` / ``None`` -> sorted step indices in ``[1, num_steps)`` (step 0 has nothing
  to reuse)."""
  if steps is None or (isinstance(steps, str) and not steps.strip()):
    return None
  items = steps.split(",") if isinstance(steps, str) else list(steps)
  out = []
  for s in items:
    s = s.strip() if isinstance(s, str) else s
    # isdecimal, not isdigit: "²" is a digit that int() refuses
    ok = (isinstance(s, str) and s.isdecimal()) or (isinstance(s, (int, np.integer)) and not isinstance(s, bool))
    require(ok, f"cache_steps must be comma-separated step indices like '10,12,14', got {steps!r}.")
    out.append(int(s))
  bad = [s for s in out if not 1 <= s < num_steps]
  require(not bad, f"cache_steps {bad} out of range: cached steps are 1..{num_steps - 1} (step 0 is always "
                   f"computed, num_steps={num_steps}).")
  require(len(set(out)) == len(out), f"cache_steps lists a step twice: {steps!r}.")
  return tuple(sorted(out))


def _nonneg_number(value, name: str) -> None:
  ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
  require(ok and value >= 0, f"{name} must be a finite number >= 0 (0 never caches), got {value!r}.")


def _positive_int(value, name: str) -> None:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  require(ok and value >= 1, f"{name} must be a positive integer, got {value!r}.")


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ratio_rows(value) -> bool:
  """``value`` is a non-empty list of equally long lists of 1 or 2 finite numbers (``[num_steps, rows]``)."""
  if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
    return False
  return len(value[0]) in (1, 2) and all(len(row) == len(value[0]) and all(map(_is_number, row)) for row in value)


def load_schedule(source) -> dict:
  """A magcache schedule from a JSON path (or an already loaded dict), format- and type-checked."""
  if isinstance(source, dict):
    data = source
  else:
    require(isinstance(source, str) and source != "",
            "cache=magcache needs cache_schedule=<schedule.json> (write one with launch/calibrate_cache.py).")
    require(os.path.isfile(source), f"cache_schedule {source!r} not found; write one with "
                                    f"launch/calibrate_cache.py --checkpoint <dir> --out {source}.")
    try:
      with open(source, encoding="utf-8") as f:
        data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      raise Gen3RInputError(f"cache_schedule {source!r} is not a readable JSON file ({e}).") from None
  name = source if isinstance(source, str) else "cache_schedule"
  require(isinstance(data, dict) and data.get("format") == SCHEDULE_FORMAT,
          f"{name}: not a magcache schedule (format {SCHEDULE_FORMAT!r}); write one with launch/calibrate_cache.py.")
  steps = data.get("num_steps")
  require(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
          f"{name}: 'num_steps' must be a positive integer, got {steps!r}; rewrite it with launch/calibrate_cache.py.")
  for key in ("shift", "guidance_scale"):
    require(_is_number(data.get(key)), f"{name}: {key!r} must be a finite number, got {data.get(key)!r}; rewrite "
                                       f"it with launch/calibrate_cache.py.")
  require(isinstance(data.get("scheduler"), str) and isinstance(data.get("scheduler_config"), dict),
          f"{name} does not record its scheduler and the scheduler's settings ('scheduler', 'scheduler_config'; "
          f"an older schedule); recalibrate with launch/calibrate_cache.py.")
  require(_ratio_rows(data.get("ratios")) and len(data["ratios"]) == steps,
          f"{name}: 'ratios' must be [num_steps={steps}, rows (1 or 2)] finite numbers; rewrite it with "
          f"launch/calibrate_cache.py.")
  return data


def scheduler_name(scheduler) -> str:
  return type(scheduler).__name__


def scheduler_settings(scheduler) -> dict:
  """Every setting of a scheduler (its frozen dataclass fields) as JSON stores them (tuples -> lists)."""
  fields = {f.name: getattr(scheduler, f.name) for f in dataclasses.fields(scheduler)}
  return json.loads(json.dumps(fields))


def check_schedule(data: dict, *, num_steps: int, use_cfg: bool, shift: float | None = None, scheduler=None,
                   guidance_scale: float | None = None, name: str = "cache_schedule") -> None:
  """The schedule (:func:`load_schedule`) must have been calibrated for this run's step count and guidance and
  (when given) its shift, guidance scale and scheduler (an object: its class and every setting are compared)."""
  require(data["num_steps"] == num_steps,
          f"{name} was calibrated for {data['num_steps']} steps, this run has num_steps={num_steps}; calibrate "
          f"for {num_steps} steps (launch/calibrate_cache.py --num_steps {num_steps}).")
  if shift is not None:
    require(math.isclose(float(data["shift"]), float(shift)),
            f"{name} was calibrated for shift={data['shift']}, this run has shift={shift}; calibrate with the "
            f"same shift.")
  rows = len(data["ratios"][0])
  require(rows == (2 if use_cfg else 1),
          f"{name} was calibrated {'with' if rows == 2 else 'without'} classifier-free guidance, this run is "
          f"{'with' if use_cfg else 'without'}; calibrate with the same guidance_scale.")
  if guidance_scale is not None:
    require(math.isclose(float(data["guidance_scale"]), float(guidance_scale)),
            f"{name} was calibrated for guidance_scale={data['guidance_scale']}, this run has guidance_scale="
            f"{guidance_scale}; calibrate with the same guidance_scale (launch/calibrate_cache.py --guidance_scale "
            f"{guidance_scale}).")
  if scheduler is not None:
    cls = scheduler_name(scheduler)
    require(data["scheduler"] == cls,
            f"{name} was calibrated with the {data['scheduler']} scheduler, this run uses {cls}; calibrate with the "
            f"same scheduler.")
    ours, theirs = scheduler_settings(scheduler), data["scheduler_config"]
    diff = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k, None) != theirs.get(k, None))
    require(not diff, f"{name} was calibrated with {cls} settings {({k: theirs.get(k) for k in diff})}, this run's "
                      f"are {({k: ours.get(k) for k in diff})}; calibrate with the same scheduler settings.")


def check_calibration(kind: str) -> None:
  """Calibration measures the residuals of the block caches (``first_block``, ``magcache``)."""
  require(kind in BLOCK_KINDS, f"calibration measures the block caches' residuals: use cache=first_block, not {kind}.")


def check_mesh(s: CacheSettings, mesh) -> None:
  """Step caches do not run a DiT sharded over a mesh yet (``mesh``: a ``jax.sharding.Mesh``, a ``{axis: size}``
  dict as ``apps.sample.parse_mesh`` returns, or None)."""
  require(not s.enabled or mesh is None,
          "step caches do not run a DiT sharded over a mesh yet; use cache=none with a mesh.")


def check_settings(s: CacheSettings, *, num_steps: int, use_cfg: bool, shift: float | None = None, scheduler=None,
                   guidance_scale: float | None = None) -> None:
  """Every cache value, before anything compiles (a magcache schedule's shift, guidance scale and scheduler are
  compared when given: ``scheduler`` is the run's scheduler object, None while it is not known yet)."""
  require(s.kind in KINDS, f"cache must be one of {', '.join(KINDS)}, got {s.kind!r}.")
  if s.threshold is not None:
    _nonneg_number(s.threshold, "cache_threshold")
  if s.max_skips is not None:
    _positive_int(s.max_skips, "cache_max_skips")
  if s.warmup is not None:
    _positive_int(s.warmup, "cache_warmup (steps computed before any is cached, at least 1)")
  steps = parse_steps(s.steps, num_steps)
  if not s.enabled:
    require(steps is None and not s.schedule,
            "cache_steps / cache_schedule need a cache kind: set cache=first_block, magcache or cfg.")
    return
  if s.kind == "cfg":
    require(use_cfg, "cache=cfg reuses the unconditional prediction, but guidance_scale <= 1 runs without "
                     "classifier-free guidance; use guidance_scale > 1 or another cache.")
  if s.kind == "magcache" and steps is None:
    check_schedule(load_schedule(s.schedule), num_steps=num_steps, shift=shift, use_cfg=use_cfg,
                   scheduler=scheduler, guidance_scale=guidance_scale)
  elif s.schedule:
    require(s.kind == "magcache", f"cache_schedule is read by cache=magcache only (cache={s.kind}).")


def resolved(s: CacheSettings, num_steps: int) -> dict:
  """The knobs with the kind's defaults filled in."""
  warm = s.warmup
  if warm is None:
    warm = {"magcache": max(1, round(MAGCACHE_WARMUP_FRACTION * num_steps)), "cfg": max(1, num_steps // 3)}.get(
        s.kind, 1)
  return {"threshold": s.threshold if s.threshold is not None else DEFAULT_THRESHOLD.get(s.kind),
          "max_skips": s.max_skips if s.max_skips is not None else DEFAULT_MAX_SKIPS.get(s.kind, 1),
          "warmup": warm, "steps": parse_steps(s.steps, num_steps)}


def magcache_plan(ratios, *, threshold: float, max_skips: int, warmup: int) -> list[bool]:
  """Cached flags per step from the calibrated ratios ``[S, rows]`` (module docstring)."""
  ratios = np.asarray(ratios, np.float64)
  plan, acc_ratio, acc_err, run = [], np.ones(ratios.shape[1]), np.zeros(ratios.shape[1]), 0
  for i, g in enumerate(ratios):
    cached = False
    if i >= warmup:
      acc_ratio = acc_ratio * g
      acc_err = acc_err + np.abs(1.0 - acc_ratio)
      cached = bool((acc_err < threshold).all()) and run < max_skips
    if cached:
      run += 1
    else:
      acc_ratio, acc_err, run = np.ones_like(acc_ratio), np.zeros_like(acc_err), 0
    plan.append(cached)
  return plan


def cfg_plan(num_steps: int, *, warmup: int, max_skips: int) -> list[bool]:
  """Cached flags for ``cfg``: steps ``warmup .. S-3``, with a full step every ``max_skips + 1`` (module
  docstring)."""
  end = num_steps - 2
  return [warmup <= i < end and (i - warmup) % (max_skips + 1) != 0 for i in range(num_steps)]


def static_plan(s: CacheSettings, num_steps: int) -> list[bool] | None:
  """The plan fixed before the loop (``None`` for ``first_block``, which decides on the fly)."""
  r = resolved(s, num_steps)
  if r["steps"] is not None:
    return [i in r["steps"] for i in range(num_steps)]
  if s.kind == "magcache":
    return magcache_plan(load_schedule(s.schedule)["ratios"], threshold=r["threshold"], max_skips=r["max_skips"],
                         warmup=r["warmup"])
  if s.kind == "cfg":
    return cfg_plan(num_steps, warmup=r["warmup"], max_skips=r["max_skips"])
  return None


def write_schedule(path: str, ratios, *, num_steps: int, shift: float, scheduler, guidance_scale: float,
                   meta: dict | None = None) -> dict:
  """Write a magcache schedule (atomically) for the run it was measured on: step count, shift, guidance scale and
  ``scheduler`` (the scheduler object: its class and settings are recorded); ``meta`` records what it was measured
  on (checkpoint, inputs)."""
  ratios = np.asarray(ratios, np.float64)
  require(ratios.shape[0] == num_steps, f"ratios: {ratios.shape[0]} steps for num_steps={num_steps}.")
  data = {"format": SCHEDULE_FORMAT, "num_steps": int(num_steps), "shift": float(shift),
          "scheduler": scheduler_name(scheduler), "scheduler_config": scheduler_settings(scheduler),
          "guidance_scale": float(guidance_scale), "rows": ["uncond", "cond"] if ratios.shape[1] == 2 else ["cond"],
          "ratios": ratios.tolist(), **(meta or {})}
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=1)
  return data


# ------------------------------------------------------------------------------------------------------------
# the compiled programs
# ------------------------------------------------------------------------------------------------------------

def _combine(noise, guidance, use_cfg: bool):
  return guide(*jnp.split(noise, 2, axis=0), guidance) if use_cfg else noise


@functools.partial(jax.jit, static_argnames=("graphdef", "use_cfg"))
def first_block(params, graphdef, latents, t, context, clip_fea, y, y_camera, *, use_cfg: bool):
  """Embeddings + the first block on the CFG batch: ``(h1 [R, L, D] float32, cond)`` (``cond``: what the other
  blocks and the head read, see ``WanDiT.embed``)."""
  model = nnx.merge(graphdef, params)
  x_in, y_in, cam_in, clip_in = cfg_inputs(latents, y, y_camera, clip_fea, use_cfg)
  t_in = jnp.broadcast_to(t, (x_in.shape[0],))
  xs, cond, _ = model.embed(x_in, t_in, context, clip_fea=clip_in, y=y_in, y_camera=cam_in)
  h1, _ = model.run_blocks(xs, cond, model.token_grid(x_in.shape), stop=1)
  return h1, cond


@functools.partial(jax.jit, static_argnames=("graphdef", "scheduler", "use_cfg"), donate_argnums=(4, 5))
def finish_full(params, graphdef, h1, cond, latents, sched_state, i, guidance, *, scheduler, use_cfg: bool):
  """Blocks 1.. + head + CFG + scheduler step: ``(latents, sched_state, guided, residual = h_last - h1)``."""
  model = nnx.merge(graphdef, params)
  grid = model.token_grid(latents.shape)
  h, _ = model.run_blocks(h1, cond, grid, start=1)
  guided = _combine(model.output(h, cond, grid), guidance, use_cfg)
  latents, sched_state = scheduler.step(sched_state, guided, i, latents)
  return latents, sched_state, guided, h - h1


@functools.partial(jax.jit, static_argnames=("graphdef", "scheduler", "use_cfg"), donate_argnums=(5, 6))
def finish_cached(params, graphdef, h1, residual, cond, latents, sched_state, i, guidance, *, scheduler,
                  use_cfg: bool):
  """The head on ``h1 + residual`` (the stored residual of the other blocks) + CFG + scheduler step:
  ``(latents, sched_state, guided)``."""
  model = nnx.merge(graphdef, params)
  guided = _combine(model.output(h1 + residual, cond, model.token_grid(latents.shape)), guidance, use_cfg)
  latents, sched_state = scheduler.step(sched_state, guided, i, latents)
  return latents, sched_state, guided


@jax.jit
def relative_l1(a, ref):
  """``mean|a - ref| / mean|ref|`` (the first-block change measure)."""
  return jnp.mean(jnp.abs(a - ref)) / jnp.maximum(jnp.mean(jnp.abs(ref)), jnp.finfo(jnp.float32).tiny)


@jax.jit
def magnitude_ratio(residual, previous):
  """Per CFG row: mean over tokens of ``|r| / |r_prev|`` (L2 over channels), ``[R]``."""
  num = jnp.linalg.norm(residual, axis=-1)
  den = jnp.maximum(jnp.linalg.norm(previous, axis=-1), jnp.finfo(jnp.float32).tiny)
  return jnp.mean(num / den, axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "scheduler"), donate_argnums=(2, 3))
def cfg_full(params, graphdef, latents, sched_state, i, timesteps, context, clip_fea, y, y_camera, guidance, *,
             scheduler):
  """The exact CFG step that also returns ``d = cond - uncond``: ``(latents, sched_state, guided, d)``."""
  model = nnx.merge(graphdef, params)
  x_in, y_in, cam_in, clip_in = cfg_inputs(latents, y, y_camera, clip_fea, True)
  noise = model(x_in, jnp.broadcast_to(timesteps[i], (x_in.shape[0],)), context, clip_fea=clip_in, y=y_in,
                y_camera=cam_in).astype(jnp.float32)
  uncond, cond = jnp.split(noise, 2, axis=0)
  guided = guide(uncond, cond, guidance)
  latents, sched_state = scheduler.step(sched_state, guided, i, latents)
  return latents, sched_state, guided, cond - uncond


@functools.partial(jax.jit, static_argnames=("graphdef", "scheduler"), donate_argnums=(2, 3))
def cfg_cached(params, graphdef, latents, sched_state, i, timesteps, context_cond, clip_fea, y, y_camera, diff,
               guidance, *, scheduler):
  """The conditional row only; ``uncond = cond - diff`` (the stored difference): ``(latents, sched_state,
  guided)``."""
  model = nnx.merge(graphdef, params)
  cond = model(latents, jnp.broadcast_to(timesteps[i], (latents.shape[0],)), context_cond, clip_fea=clip_fea, y=y,
               y_camera=y_camera).astype(jnp.float32)
  guided = guide(cond - diff, cond, guidance)
  latents, sched_state = scheduler.step(sched_state, guided, i, latents)
  return latents, sched_state, guided


# ------------------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class CachedDenoiseOutput(DenoiseOutput):
  """:class:`DenoiseOutput` + ``step_kinds`` (``"full"`` / ``"cached"`` per step) and ``cache_stats``."""
  step_kinds: list[str] = dataclasses.field(default_factory=list)
  cache_stats: dict = dataclasses.field(default_factory=dict)


def can_cache(settings: CacheSettings, plan: list[bool] | None, knobs: dict) -> bool:
  """False when no step can be served from the cache (a plan without cached steps, first_block at threshold 0)."""
  if plan is not None:
    return any(plan)
  return knobs["threshold"] > 0


def denoise_cached(model, scheduler, schedule, latents, *, context, clip_fea, y, y_camera=None,
                   guidance_scale: float = 5.0, settings: CacheSettings, record: bool = False, progress: bool = True,
                   callback: Callable[[int, jax.Array], Any] | None = None, mesh=None,
                   calibrate: bool = False) -> CachedDenoiseOutput:
  """The denoising loop with a step cache (module docstring); arguments as
  :func:`gen3r_jax.sampling.denoise.denoise`.

  When no step can be cached (:func:`can_cache`: e.g. ``first_block`` at threshold 0) the exact loop runs, so
  the outputs are exactly ``cache="none"``'s. ``calibrate=True`` (a block cache) runs the block-cache programs with
  every step full, whatever the threshold, plan or forced steps say (what ``launch/calibrate_cache.py`` measures:
  a ratio at every step after the first). ``cache_stats``: ``kind``, ``full_steps``, ``cached_steps``, ``cached``
  (indices), the resolved knobs, ``calibrate``, ``exact_loop``, ``changes`` (first_block: the measure per step,
  None where not measured) and ``ratios`` (block caches: the residual-magnitude ratio per CFG row between
  consecutive full steps, None elsewhere)."""
  require(settings.kind in KINDS[1:], f"denoise_cached needs a cache kind among {KINDS[1:]}, got "
                                      f"{settings.kind!r}.")
  use_cfg = float(guidance_scale) > 1.0
  n = schedule.num_steps
  if calibrate:
    check_calibration(settings.kind)
  check_settings(settings, num_steps=n, use_cfg=use_cfg, scheduler=scheduler, guidance_scale=guidance_scale)
  check_denoise_inputs(model.cfg, latents, context, clip_fea, y, y_camera, use_cfg)
  graphdef, params = nnx.split(model)
  check_mesh(settings, mesh if mesh is not None else param_mesh(params))
  plan = None if calibrate else static_plan(settings, n)        # calibrating: every step full (below)
  knobs = resolved(settings, n)
  stats = {"kind": settings.kind, **{k: v for k, v in knobs.items() if k != "steps"},
           "forced_steps": list(knobs["steps"]) if knobs["steps"] is not None else None, "calibrate": calibrate}
  if not calibrate and not can_cache(settings, plan, knobs):
    # nothing can be cached (threshold 0, an empty plan): the exact loop itself, so the outputs are exactly
    # cache=none's (the split programs agree with it only to float rounding: XLA fuses them differently)
    out = denoise(model, scheduler, schedule, latents, context=context, clip_fea=clip_fea, y=y, y_camera=y_camera,
                  guidance_scale=guidance_scale, record=record, progress=progress, callback=callback)
    stats.update(full_steps=n, cached_steps=0, cached=[], changes=None, ratios=None, exact_loop=True)
    return CachedDenoiseOutput(**vars(out), step_kinds=["full"] * n, cache_stats=stats)
  timesteps = jnp.asarray(np.asarray(schedule.timesteps, np.float32))
  x = jnp.array(latents, jnp.float32)
  state = jax.tree.map(jnp.copy, scheduler.init_state(jnp.asarray(schedule.sigmas, jnp.float32), x))
  x, state = _commit_like(params, (x, state))
  g = jnp.float32(guidance_scale)
  bar = Progress(n, f"denoise, cache {settings.kind}", enabled=progress)
  kinds, secs, hist, guided_all, changes, ratios = [], [], [], [], [None] * n, [None] * n
  store = {}                         # residual / h1 at the last full step (block caches), or diff (cfg)
  run = 0
  for i in range(n):
    if i == 0:
      bar.note("compiling the denoising programs … (the first steps include compilation)")
    t0 = time.perf_counter()
    if settings.kind == "cfg":
      cached = bool(plan[i]) and "diff" in store
      if cached:
        b = x.shape[0]
        x, state, guided = cfg_cached(params, graphdef, x, state, jnp.int32(i), timesteps, context[b:], clip_fea, y,
                                      y_camera, store["diff"], g, scheduler=scheduler)
      else:
        x, state, guided, store["diff"] = cfg_full(params, graphdef, x, state, jnp.int32(i), timesteps, context,
                                                   clip_fea, y, y_camera, g, scheduler=scheduler)
    else:
      h1, cond = first_block(params, graphdef, x, timesteps[i], context, clip_fea, y, y_camera, use_cfg=use_cfg)
      cached = False
      if "residual" in store:
        if plan is not None:
          cached = bool(plan[i])
        else:
          changes[i] = float(relative_l1(h1, store["h1"]))
          cached = (not calibrate and i >= knobs["warmup"] and run < knobs["max_skips"]
                    and changes[i] < knobs["threshold"])
      if cached:
        x, state, guided = finish_cached(params, graphdef, h1, store["residual"], cond, x, state, jnp.int32(i), g,
                                         scheduler=scheduler, use_cfg=use_cfg)
      else:
        x, state, guided, residual = finish_full(params, graphdef, h1, cond, x, state, jnp.int32(i), g,
                                                 scheduler=scheduler, use_cfg=use_cfg)
        if "residual" in store and kinds[-1] == "full":
          ratios[i] = np.asarray(magnitude_ratio(residual, store["residual"])).tolist()
        store.update(residual=residual, h1=h1)
    run = run + 1 if cached else 0
    kinds.append("cached" if cached else "full")
    x.block_until_ready()
    secs.append(time.perf_counter() - t0)
    bar.update(seconds=secs[-1], extra=kinds[-1])
    if record:
      hist.append(np.asarray(x))
      guided_all.append(np.asarray(guided))
    if callback is not None:
      callback(i, x)
  cached_idx = [i for i, k in enumerate(kinds) if k == "cached"]
  stats.update(full_steps=n - len(cached_idx), cached_steps=len(cached_idx), cached=cached_idx,
               changes=changes if settings.kind == "first_block" else None,
               ratios=ratios if settings.kind != "cfg" else None, exact_loop=False)
  return CachedDenoiseOutput(x, np.stack(hist) if record else None, np.stack(guided_all) if record else None, secs,
                             secs[0], step_kinds=kinds, cache_stats=stats)


def calibration_ratios(stats_list: Sequence[dict]) -> np.ndarray:
  """Mean per-step ratios ``[S, rows]`` over calibration runs (``cache_stats`` of :func:`denoise_cached` with
  ``calibrate=True``: every step full); step 0 (nothing before it) is 1. A run with a step after the first that has
  no ratio (a cached step: not a calibration run) or fewer than 2 steps is refused."""
  require(len(stats_list) >= 1, "calibration_ratios: no calibration run given.")
  per_run = []
  for k, st in enumerate(stats_list):
    r = st.get("ratios") or []
    require(len(r) >= 2, f"calibration run {k}: {len(r)} step(s); calibrating needs num_steps >= 2 (a ratio "
                         f"compares two consecutive steps).")
    missing = [i for i, v in enumerate(r) if v is None and i > 0]
    require(not missing, f"calibration run {k}: steps {missing} have no residual ratio (cached steps); calibrate "
                         f"with every step computed (generate(..., calibrate_cache=True)).")
    per_run.append([[1.0] * len(r[1]) if i == 0 else v for i, v in enumerate(r)])
  shapes = {np.shape(p) for p in per_run}
  require(len(shapes) == 1, f"calibration runs of different shapes {sorted(shapes)} (steps, CFG rows); calibrate "
                            f"every run with the same settings.")
  return np.mean(np.asarray(per_run, np.float64), axis=0)


__all__ = ("KINDS", "SCHEDULE_FORMAT", "CacheSettings", "CachedDenoiseOutput", "can_cache", "check_settings",
           "check_schedule", "check_mesh", "check_calibration", "load_schedule", "write_schedule", "parse_steps", "resolved",
           "magcache_plan", "cfg_plan", "static_plan", "scheduler_name", "scheduler_settings", "denoise_cached",
           "calibration_ratios", "first_block", "finish_full", "finish_cached", "cfg_full", "cfg_cached",
           "relative_l1", "magnitude_ratio")
