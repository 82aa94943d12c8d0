"""The Gen3R denoising loop: DiT with classifier-free guidance + a flow scheduler, one compiled step.

    ctx = cfg_context(prompt_embeds, negative_embeds, text_len)      # [2, text_len, D] (uncond row first)
    out = denoise(dit, sched, schedule, latents, context=ctx, clip_fea=clip, y=control, y_camera=cam,
                  guidance_scale=5.0)
    out.latents                                                      # [B, f, h, 2w, 16] after the last step

One step (the official ``Gen3RPipeline.__call__`` step 7) is ONE jitted function: the CFG batch
``[uncond, cond]`` (latents, control latents, camera latents and CLIP tokens duplicated, the timestep broadcast
to batch 2), the DiT, ``u + g * (c - u)`` and the scheduler update. The latents and the scheduler state are
donated, so the step updates them in place. The step index and the timestep are traced values (one compile
for the whole run); the guidance scale is traced too. ``guidance_scale <= 1`` runs without CFG (batch 1 and the
positive context only), as the reference does.

The loop is driven from Python (see ``docs/sampling.md`` for the measurement behind the choice): a progress line
with steps/s and ETA, an optional per-step callback, and the latents after every step when asked for (the
parity fixtures record them). :func:`denoise_scan` runs the same step inside one ``lax.scan`` for comparison.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.errors import check_array, require
from gen3r_jax.models.wan.dit_inputs import pad_text


@dataclasses.dataclass
class DenoiseOutput:
  """``latents [B, f, h, 2w, C]`` after the last step; per step (when recorded): ``history`` latents
  ``[S, B, ...]`` and ``guided`` noise predictions ``[S, B, ...]`` (numpy); ``seconds`` per step."""
  latents: jax.Array
  history: np.ndarray | None = None
  guided: np.ndarray | None = None
  seconds: list[float] = dataclasses.field(default_factory=list)
  compile_seconds: float = 0.0


def cfg_context(positive: Sequence[jax.Array] | jax.Array, negative: Sequence[jax.Array] | jax.Array | None,
                cfg) -> jax.Array:
  """The CFG text context ``[negative..., positive...]`` zero-padded to ``cfg.text_len`` (the reference's list
  concatenation ``negative + positive``; padding is never masked in the DiT).

  Args:
    positive / negative: lists of per-prompt ``[L_i, text_dim]`` embeddings (or ``[B, L, D]`` arrays).
      ``negative=None``: no guidance (positive rows only).
    cfg: the DiT config (``text_len``, ``text_dim``).
  Returns:
    ``[B_neg + B_pos, text_len, text_dim]`` float32.
  """
  rows = list(positive) if negative is None else list(negative) + list(positive)
  return pad_text(rows, cfg).astype(jnp.float32)


def check_denoise_inputs(dit_cfg, latents, context, clip_fea, y, y_camera, use_cfg: bool) -> None:
  """Shape checks before compiling (the DiT checks its own inputs again at trace time)."""
  check_array(latents, "latents", ndim=5, layout="[B, f, h, 2w, C]", floating=True, dims={4: dit_cfg.out_dim})
  b = latents.shape[0]
  check_array(context, "context", ndim=3, layout="[rows, text_len, text_dim]", dims={2: dit_cfg.text_dim})
  want = 2 * b if use_cfg else b
  require(context.shape[0] == want,
          f"context: {context.shape[0]} rows for {b} latents; with guidance pass [negative, positive] "
          f"({want} rows, see cfg_context).")
  check_array(y, "y (control latents + masks)", ndim=5, layout="[B, f, h, 2w, C]",
              dims={0: b, 1: latents.shape[1], 2: latents.shape[2], 3: latents.shape[3], 4: dit_cfg.cond_dim})
  check_array(clip_fea, "clip_fea", ndim=3, layout="[B, 257, C]", dims={0: b})
  if y_camera is not None:
    check_array(y_camera, "y_camera (camera latents)", ndim=5, layout="[B, f, 8h, 16w, 24]",
                dims={0: b, 1: latents.shape[1]})


def _double(x):
  return None if x is None else jnp.concatenate([x, x], axis=0)


def _guided_noise(model, latents, t, context, clip_fea, y, y_camera, guidance, use_cfg: bool):
  """DiT on the CFG batch -> guided flow prediction ``[B, ...]`` (float32)."""
  if use_cfg:
    x_in, y_in, cam_in, clip_in = _double(latents), _double(y), _double(y_camera), _double(clip_fea)
  else:
    x_in, y_in, cam_in, clip_in = latents, y, y_camera, clip_fea
  t_in = jnp.broadcast_to(t, (x_in.shape[0],))
  noise = model(x_in, t_in, context, clip_fea=clip_in, y=y_in, y_camera=cam_in).astype(jnp.float32)
  if not use_cfg:
    return noise
  uncond, cond = jnp.split(noise, 2, axis=0)
  return uncond + guidance * (cond - uncond)


@functools.partial(jax.jit, static_argnames=("graphdef", "scheduler", "use_cfg"), donate_argnums=(2, 3))
def denoise_step(params, graphdef, latents, sched_state, i, timesteps, context, clip_fea, y, y_camera,
                 guidance, *, scheduler, use_cfg: bool):
  """One full step: ``(latents, sched_state, guided_noise)`` after step ``i`` (latents and state donated).

  ``timesteps [S]`` float32 (the model's ``t``), ``i`` int32 scalar, ``guidance`` float32 scalar.
  """
  model = nnx.merge(graphdef, params)
  t = timesteps[i]
  guided = _guided_noise(model, latents, t, context, clip_fea, y, y_camera, guidance, use_cfg)
  latents, sched_state = scheduler.step(sched_state, guided, i, latents)
  return latents, sched_state, guided


def _commit_like(params, tree):
  """Place the carried arrays where the step's outputs will live (committed to the parameters' device), so that
  step 1 sees the same argument placement as step 0 and nothing recompiles. Sharded (mesh) parameters: unchanged."""
  leaves = jax.tree.leaves(params)
  leaf = leaves[0] if leaves else None
  if isinstance(leaf, jax.Array) and getattr(leaf, "committed", False) and \
      isinstance(leaf.sharding, jax.sharding.SingleDeviceSharding):
    return jax.device_put(tree, leaf.sharding)
  return tree


class Progress:
  """A one-line progress bar on stderr: ``step k/S  s/step  steps/s  ETA``."""

  def __init__(self, total: int, enabled: bool = True, stream=None, label: str = "denoise"):
    self.total, self.enabled, self.label = total, enabled, label
    self.stream = stream or sys.stderr
    self.times: list[float] = []

  def update(self, k: int, seconds: float) -> None:
    self.times.append(seconds)
    if not self.enabled:
      return
    steady = self.times[1:] or self.times               # the first step includes compilation
    per = float(np.median(steady))
    eta = per * (self.total - k)
    bar = "#" * int(20 * k / self.total)
    end = "\n" if k == self.total else ""
    self.stream.write(f"\r[{self.label}] [{bar:<20}] {k}/{self.total}  {per:.2f} s/step  "
                      f"{1.0 / max(per, 1e-9):.2f} steps/s  ETA {eta:.0f} s{end}")
    self.stream.flush()


def denoise(model, scheduler, schedule, latents, *, context, clip_fea, y, y_camera=None,
            guidance_scale: float = 5.0, record: bool = False, progress: bool = True,
            callback: Callable[[int, jax.Array], Any] | None = None) -> DenoiseOutput:
  """Run the whole denoising loop (compiled step driven from Python).

  Args:
    model: the :class:`~gen3r_jax.models.wan.transformer.WanDiT`.
    scheduler: a scheduler from :mod:`gen3r_jax.sampling.schedulers`; ``schedule`` its ``set_timesteps`` output.
    latents: initial latents ``[B, f, h, 2w, 16]`` (used as given: the flow schedulers do not scale them).
    context: ``[2B, text_len, text_dim]`` from :func:`cfg_context` (``[B, ...]`` when ``guidance_scale <= 1``).
    clip_fea: ``[B, 257, C]``; ``y``: control latents + masks ``[B, f, h, 2w, 20]``;
      ``y_camera``: camera latents ``[B, f, 8h, 16w, 24]`` or None.
    record: keep the latents and the guided noise after every step (host copies).
    callback: called as ``callback(i, latents)`` after each step.
  """
  use_cfg = float(guidance_scale) > 1.0
  check_denoise_inputs(model.cfg, latents, context, clip_fea, y, y_camera, use_cfg)
  graphdef, params = nnx.split(model)
  timesteps = jnp.asarray(np.asarray(schedule.timesteps, np.float32))
  x = jnp.array(latents, jnp.float32)                                  # a fresh buffer: it is donated
  state = scheduler.init_state(jnp.asarray(schedule.sigmas, jnp.float32), x)
  state = jax.tree.map(jnp.copy, state)                                # distinct buffers (donated)
  x, state = _commit_like(params, (x, state))
  g = jnp.float32(guidance_scale)
  n = schedule.num_steps
  bar = Progress(n, progress)
  hist, guided_all, secs = [], [], []
  t_compile = 0.0
  for i in range(n):
    t0 = time.perf_counter()
    x, state, guided = denoise_step(params, graphdef, x, state, jnp.int32(i), timesteps, context, clip_fea, y,
                                    y_camera, g, scheduler=scheduler, use_cfg=use_cfg)
    x.block_until_ready()
    dt = time.perf_counter() - t0
    if i == 0:
      t_compile = dt
    secs.append(dt)
    bar.update(i + 1, dt)
    if record:
      hist.append(np.asarray(x))
      guided_all.append(np.asarray(guided))
    if callback is not None:
      callback(i, x)
  return DenoiseOutput(x, np.stack(hist) if record else None, np.stack(guided_all) if record else None,
                       secs, t_compile)


@functools.partial(jax.jit, static_argnames=("graphdef", "scheduler", "use_cfg"))
def _scan_loop(params, graphdef, latents, sigmas, timesteps, context, clip_fea, y, y_camera, guidance, *,
               scheduler, use_cfg: bool):
  model = nnx.merge(graphdef, params)

  def body(carry, i):
    x, st = carry
    guided = _guided_noise(model, x, timesteps[i], context, clip_fea, y, y_camera, guidance, use_cfg)
    x, st = scheduler.step(st, guided, i, x)
    return (x, st), (x, guided)

  state = scheduler.init_state(sigmas, latents)
  n = timesteps.shape[0]
  (x, _), (hist, guided) = jax.lax.scan(body, (latents, state), jnp.arange(n, dtype=jnp.int32))
  return x, hist, guided


def denoise_scan(model, scheduler, schedule, latents, *, context, clip_fea, y, y_camera=None,
                 guidance_scale: float = 5.0) -> DenoiseOutput:
  """The same loop compiled whole in one ``lax.scan`` (no progress; every step's latents come back)."""
  use_cfg = float(guidance_scale) > 1.0
  check_denoise_inputs(model.cfg, latents, context, clip_fea, y, y_camera, use_cfg)
  graphdef, params = nnx.split(model)
  x, hist, guided = _scan_loop(params, graphdef, jnp.asarray(latents, jnp.float32),
                               jnp.asarray(schedule.sigmas, jnp.float32),
                               jnp.asarray(np.asarray(schedule.timesteps, np.float32)), context, clip_fea, y,
                               y_camera, jnp.float32(guidance_scale), scheduler=scheduler, use_cfg=use_cfg)
  return DenoiseOutput(x, np.asarray(hist), np.asarray(guided))


__all__ = ("DenoiseOutput", "cfg_context", "denoise", "denoise_scan", "denoise_step", "Progress",
           "check_denoise_inputs")
