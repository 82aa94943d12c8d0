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

Sharded sampling: a DiT whose parameters are sharded over a mesh (``load_bundle(..., mesh=mesh)`` or
``transformer.create(cfg, mesh=mesh)``) runs the same step under ``jax.set_mesh(mesh)``: activations follow the
sharding rules (``act_batch`` over ``data``/``fsdp`` — the CFG pair splits over ``fsdp=2`` —, ``act_length``
over ``context``; ``rules``, default the library's), and with ``mesh.context > 1`` self-attention goes through
``use_context_parallel`` (``"allgather"`` by default:
K/V all-gathered, the local kernel is cuDNN flash on GPU; ``"ring"`` keeps one K/V block per device but uses
einsum blocks; ``"ulysses"`` and its hybrids: all-to-all over heads, see ``nn/context_parallel.py``). CFG-parallel:
a mesh axis ``cfg=2`` splits the CFG batch ``[uncond, cond]`` over two device groups that each hold the weights
(``parallel/rules.py``); the two predictions meet in one all-gather per step. The latents and scheduler state
stay replicated. :func:`time_denoise_step` times one step of a
random-weight DiT created directly on its shards (the 14B benchmark).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import check_array, require
from gen3r_jax.models.wan_dit.inputs import pad_text
from gen3r_jax.models.wan_dit.transformer import create
from gen3r_jax.nn.context_parallel import SELF_STRATEGIES, check_strategy, context_size, use_context_parallel
from gen3r_jax.parallel.rules import as_rules, constrain, use_rules
from gen3r_jax.progress import Progress, fmt_seconds
from gen3r_jax.sampling import placement
from gen3r_jax.sampling.schedulers import get_scheduler


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
  """``[x, x]`` along axis 0, as a broadcast: split over the mesh axis ``cfg`` each half is the device's own copy
  (a concatenate would make GSPMD all-to-all the replicated inputs)."""
  return None if x is None else jnp.broadcast_to(x[None], (2, *x.shape)).reshape(2 * x.shape[0], *x.shape[1:])


def cfg_inputs(latents, y, y_camera, clip_fea, use_cfg: bool):
  """The DiT's per-sample inputs as the CFG batch (each doubled: unconditional rows, then conditional rows)."""
  if not use_cfg:
    return latents, y, y_camera, clip_fea
  return _double(latents), _double(y), _double(y_camera), _double(clip_fea)


def guide(uncond, cond, guidance):
  """Classifier-free guidance ``u + g (c - u)`` (the one formula every denoising program uses)."""
  return uncond + guidance * (cond - uncond)


def _guided_noise(model, latents, t, context, clip_fea, y, y_camera, guidance, use_cfg: bool):
  """DiT on the CFG batch -> guided flow prediction ``[B, ...]`` (float32)."""
  x_in, y_in, cam_in, clip_in = cfg_inputs(latents, y, y_camera, clip_fea, use_cfg)
  t_in = jnp.broadcast_to(t, (x_in.shape[0],))
  noise = model(x_in, t_in, context, clip_fea=clip_in, y=y_in, y_camera=cam_in).astype(jnp.float32)
  if not use_cfg:
    return noise
  noise = constrain(noise, (None,) * noise.ndim)    # under a mesh: the branches meet in one all-gather (cfg axis)
  return guide(*jnp.split(noise, 2, axis=0), guidance)


@functools.partial(jax.jit, static_argnames=("graphdef", "scheduler", "use_cfg", "parallel"),
                   donate_argnums=(2, 3))
def denoise_step(params, graphdef, latents, sched_state, i, timesteps, context, clip_fea, y, y_camera,
                 guidance, *, scheduler, use_cfg: bool, parallel: tuple | None = None):
  """One full step: ``(latents, sched_state, guided_noise)`` after step ``i`` (latents and state donated).

  ``timesteps [S]`` float32 (the model's ``t``), ``i`` int32 scalar, ``guidance`` float32 scalar.
  ``parallel``: ``(mesh, context_strategy[, rules])`` for a sharded DiT (call under ``jax.set_mesh(mesh)``); the
  sharding rules of the activation constraints and the attention hook are installed while tracing (the rules are
  part of the static argument, so other rules compile another step), and the carried latents / state / guided
  noise come out replicated so every step sees the same input shardings (one compile).
  """
  model = nnx.merge(graphdef, params)
  t = timesteps[i]
  if parallel is None:
    guided = _guided_noise(model, latents, t, context, clip_fea, y, y_camera, guidance, use_cfg)
    latents, sched_state = scheduler.step(sched_state, guided, i, latents)
    return latents, sched_state, guided
  mesh, strategy, *rest = parallel                     # (mesh, strategy[, rules]); rules default the library's
  rules = as_rules(rest[0] if rest else None)
  with use_rules(rules), use_context_parallel(mesh, strategy, rules=rules):
    guided = _guided_noise(model, latents, t, context, clip_fea, y, y_camera, guidance, use_cfg)
  replicated = lambda tree: jax.tree.map(                                        # noqa: E731
      lambda a: jax.lax.with_sharding_constraint(a, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())),
      tree)
  guided = replicated(guided)
  latents, sched_state = replicated(scheduler.step(sched_state, guided, i, latents))
  return latents, sched_state, guided


def param_mesh(params):
  """The mesh of the first ``NamedSharding``-placed parameter, else ``None``."""
  for a in jax.tree.leaves(params):
    if isinstance(getattr(a, "sharding", None), jax.sharding.NamedSharding):
      return a.sharding.mesh
  return None


def _commit_like(params, tree, mesh=None):
  """Place the carried arrays and inputs where the step's outputs will live, so that step 1 sees the same argument
  placement as step 0 and nothing recompiles: committed to the parameters' device, or replicated over ``mesh``."""
  if mesh is not None:
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.tree.map(lambda a: jax.device_put(a, rep), tree)
  leaves = jax.tree.leaves(params)
  leaf = leaves[0] if leaves else None
  if isinstance(leaf, jax.Array) and getattr(leaf, "committed", False) and \
      isinstance(leaf.sharding, jax.sharding.SingleDeviceSharding):
    return jax.device_put(tree, leaf.sharding)
  return tree


def mesh_scope(mesh):
  """``jax.set_mesh(mesh)`` (the DiT's activation constraints read it at trace time), or a no-op."""
  return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()


def check_parallel(mesh, context_parallel: str) -> None:
  require(context_parallel in SELF_STRATEGIES,
          f"context_parallel must be one of {SELF_STRATEGIES}, got {context_parallel!r}.")
  if mesh is not None:
    require(isinstance(mesh, jax.sharding.Mesh),
            f"mesh must be a jax.sharding.Mesh (gen3r_jax.parallel.rules.make_mesh), got {type(mesh).__name__}.")


def check_cfg_axis(mesh_shape, guidance_scale: float) -> None:
  """CFG-parallel sampling (mesh axis ``cfg``, :mod:`gen3r_jax.parallel.rules`): the CFG batch
  ``[unconditional, conditional]`` splits over ``cfg``, so it is 1 or 2, and 2 needs guidance (``> 1``)."""
  n = int((mesh_shape or {}).get("cfg", 1))
  require(n in (1, 2), f"mesh cfg={n}: the cfg axis splits the [unconditional, conditional] pair of classifier-free "
                       "guidance, so it is 1 or 2.")
  require(n == 1 or float(guidance_scale) > 1.0,
          f"mesh cfg=2 runs the unconditional and conditional branches on two device groups, but guidance_scale "
          f"{float(guidance_scale):g} <= 1 turns guidance off (one branch); set guidance_scale > 1 or drop cfg from "
          "the mesh.")


def _check_context_split(mesh, latents, dit_cfg, strategy: str = "allgather", rules=None) -> None:
  check_strategy(strategy, dit_cfg.num_heads, mesh.shape, as_rules(rules))
  n = context_size(mesh)
  if n > 1:
    pt, ph, pw = dit_cfg.patch_size
    tokens = (latents.shape[1] // pt) * (latents.shape[2] // ph) * (latents.shape[3] // pw)
    require(tokens % n == 0, f"the DiT sees {tokens} video tokens, not divisible by the mesh 'context' size {n}; "
                             f"use a context size that divides it (or context=1).")


def denoise(model, scheduler, schedule, latents, *, context, clip_fea, y, y_camera=None,
            guidance_scale: float = 5.0, record: bool = False, progress: bool = True,
            callback: Callable[[int, jax.Array], Any] | None = None, mesh=None,
            context_parallel: str = "allgather", rules=None) -> DenoiseOutput:
  """Run the whole denoising loop (compiled step driven from Python).

  Args:
    model: the :class:`~gen3r_jax.models.wan_dit.transformer.WanDiT`.
    scheduler: a scheduler from :mod:`gen3r_jax.sampling.schedulers`; ``schedule`` its ``set_timesteps`` output.
    latents: initial latents ``[B, f, h, 2w, 16]`` (used as given: the flow schedulers do not scale them).
    context: ``[2B, text_len, text_dim]`` from :func:`cfg_context` (``[B, ...]`` when ``guidance_scale <= 1``).
    clip_fea: ``[B, 257, C]``; ``y``: control latents + masks ``[B, f, h, 2w, 20]``;
      ``y_camera``: camera latents ``[B, f, 8h, 16w, 24]`` or None.
    record: keep the latents and the guided noise after every step (host copies).
    callback: called as ``callback(i, latents)`` after each step.
    mesh: run the step sharded over this mesh (default: the mesh the parameters are sharded over, if any);
      ``context_parallel`` (one of ``SELF_STRATEGIES``) is the self-attention strategy when ``context > 1``;
      a mesh axis ``cfg=2`` runs the unconditional and conditional branches on its two device groups;
      ``rules``: the sharding rules of its activations (:class:`gen3r_jax.parallel.rules.Rules`, default the
      library's; ``config.sharding`` in ``launch/sample.py``).
  """
  use_cfg = float(guidance_scale) > 1.0
  check_denoise_inputs(model.cfg, latents, context, clip_fea, y, y_camera, use_cfg)
  check_parallel(mesh, context_parallel)
  graphdef, params = nnx.split(model)
  mesh = mesh if mesh is not None else param_mesh(params)
  if mesh is not None:
    _check_context_split(mesh, latents, model.cfg, context_parallel, rules)
    check_cfg_axis(mesh.shape, guidance_scale)
  parallel = None if mesh is None else (mesh, context_parallel, as_rules(rules))
  timesteps = jnp.asarray(np.asarray(schedule.timesteps, np.float32))
  x = jnp.array(latents, jnp.float32)                                  # a fresh buffer: it is donated
  state = scheduler.init_state(jnp.asarray(schedule.sigmas, jnp.float32), x)
  state = jax.tree.map(jnp.copy, state)                                # distinct buffers (donated)
  x, state = _commit_like(params, (x, state), mesh)
  if mesh is not None:
    timesteps, context, clip_fea, y, y_camera = _commit_like(params, (timesteps, context, clip_fea, y, y_camera),
                                                             mesh)
  g = jnp.float32(guidance_scale)
  n = schedule.num_steps
  bar = Progress(n, "denoise", enabled=progress)
  hist, guided_all, secs = [], [], []
  t_compile = 0.0
  for i in range(n):
    if i == 0:
      bar.note("compiling the denoising step … (the first step includes compilation)")
    t0 = time.perf_counter()
    with mesh_scope(mesh):
      x, state, guided = denoise_step(params, graphdef, x, state, jnp.int32(i), timesteps, context, clip_fea, y,
                                      y_camera, g, scheduler=scheduler, use_cfg=use_cfg, parallel=parallel)
    x.block_until_ready()
    dt = time.perf_counter() - t0
    if i == 0:
      t_compile = dt
    secs.append(dt)
    bar.update(seconds=dt, extra=f"(first step + compile {fmt_seconds(dt)})" if i == 0 else "")
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


def time_denoise_step(cfg, mesh=None, frames: int = 49, height: int = 560, width: int = 560, iters: int = 5, *,
                      seed: int = 0, context_parallel: str = "allgather", guidance_scale: float = 5.0,
                      scheduler: str = "unipc", shift: float = 5.0, rules=None) -> dict:
  """Time the sampler's CFG step (:func:`denoise`, the production loop) for a random-weight DiT of ``cfg``.

  The parameters come from one jitted init whose outputs land on their shards over ``mesh``
  (:func:`gen3r_jax.models.wan_dit.transformer.create`): no full copy of the weights exists anywhere, so the 14B
  (33.8 GB of bfloat16) fits two 80 GB GPUs with ``fsdp=2``. The inputs (latents ``[1, f, h, 2w, 16]`` of
  ``frames`` x ``height`` x ``width`` video, text / CLIP / control / camera conditioning) are random, made on the
  devices. Runs ``iters + 1`` steps: the first includes compilation. ``rules``: the sharding rules (parameters
  and activations; default the library's).

  Returns a dict: ``first_step_s`` (compile + one step), ``median_s`` / ``min_s`` / ``max_s`` of the other steps,
  ``tokens``, ``params``, ``mesh``, ``context_parallel``, ``peak_bytes`` (max over the local devices, None on
  CPU), ``init_s``.
  """
  require(isinstance(frames, int) and frames >= 1 and (frames - 1) % 4 == 0,
          f"frames must be 1 + 4k (49 in infer.py), got {frames!r}.")
  require(height % 16 == 0 and width % 16 == 0, f"height and width must be multiples of 16, got {height}x{width}.")
  require(isinstance(iters, int) and iters >= 1, f"iters must be a positive integer, got {iters!r}.")
  check_parallel(mesh, context_parallel)
  t0 = time.perf_counter()
  rules = as_rules(rules)
  model = create(cfg, seed=seed, mesh=mesh, rules=rules.for_model("dit"), rng_impl="rbg")
  params = nnx.state(model, nnx.Param)
  jax.block_until_ready(params)
  init_s = time.perf_counter() - t0
  f, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
  use_cfg = guidance_scale > 1.0
  rows = 2 if use_cfg else 1
  sharding = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def make():
    k = jax.random.split(jax.random.key(seed + 1), 5)
    return dict(latents=jax.random.normal(k[0], (1, f, h, 2 * w, cfg.out_dim), jnp.float32),
                context=jax.random.normal(k[1], (rows, cfg.text_len, cfg.text_dim), jnp.float32),
                clip_fea=jax.random.normal(k[2], (1, cfg.clip_tokens, cfg.clip_dim), jnp.float32),
                y=jax.random.normal(k[3], (1, f, h, 2 * w, cfg.cond_dim), jnp.float32),
                y_camera=jax.random.normal(k[4], (1, f, 8 * h, 16 * w, cfg.in_dim_control_adapter), jnp.float32))

  inputs = jax.jit(make, out_shardings=sharding)()
  sched = get_scheduler(scheduler)
  schedule = sched.set_timesteps(iters + 1, shift)
  out = denoise(model, sched, schedule, guidance_scale=guidance_scale, progress=False, mesh=mesh,
                context_parallel=context_parallel, rules=rules.for_model("dit"), **inputs)
  steady = out.seconds[1:]
  pt, ph, pw = cfg.patch_size
  mem = placement.memory_stats(mesh.devices.flat if mesh is not None else None) or {}
  return {"frames": frames, "height": height, "width": width, "latent_shape": list(inputs["latents"].shape),
          "tokens": (f // pt) * (h // ph) * (2 * w // pw), "cfg_batch": rows, "dtype": cfg.dtype,
          "param_dtype": cfg.param_dtype, "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(params))),
          "mesh": dict(mesh.shape) if mesh is not None else None, "context_parallel": context_parallel,
          "init_s": init_s, "first_step_s": out.seconds[0], "median_s": float(np.median(steady)),
          "min_s": float(np.min(steady)), "max_s": float(np.max(steady)), "iters": len(steady),
          "peak_bytes": mem.get("peak_bytes_in_use"), "finite": bool(np.isfinite(np.asarray(out.latents)).all())}


__all__ = ("DenoiseOutput", "cfg_context", "cfg_inputs", "guide", "denoise", "denoise_scan", "denoise_step", "Progress",
           "check_denoise_inputs", "check_parallel", "check_cfg_axis", "mesh_scope", "param_mesh",
           "time_denoise_step")
