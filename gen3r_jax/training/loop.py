"""The generic trainer: a task plugs in a trainable module, frozen modules, a loss and a data iterator.

```
config ─► mesh (data, fsdp, context, tensor) ─► task = TASKS[config.task](config, mesh)
      ─► optax tx + schedule ─► sharded train state (jitted init with out_shardings)
      ─► restore the newest checkpoint that restores (state + guard + grain iterator) if any
      ─► loop: next(batch) ─► global array ─► jitted, donated train step ─► NaN guard ─► metrics ─► checkpoint
```

The train step differentiates ``task.loss_fn(module, frozen, batch, rng)`` w.r.t. the trainable parameters only
(traced under the mesh, ``jax.set_mesh``, so models can constrain activations by logical ``act_*`` axes, and with
context-parallel attention, ``config.context_strategy``, when the mesh has ``context > 1``), applies the optimiser
(clipping, AdamW, schedule, optional accumulation) and updates the optional EMA.

Sharding: ``config.sharding`` (``rules``, ``model_rules``, ``allow_replicated``; :mod:`gen3r_jax.parallel.rules`)
places the trainable parameters (with ``model_rules.<task.model>``), each frozen model (with its own
``model_rules``), the batch (``act_batch``) and the activations constrained inside the step.

NaN guard (inside the jitted step, no extra host sync): when the loss or the gradient norm is not finite the update
is dropped (parameters, optimiser state and EMA unchanged; the step counter and the data advance) and counted in
the state's ``guard`` (metric ``skipped_steps``). ``nan_policy="stop"`` (default) then marks the run to stop: the
host sees the mark at its next check (every ``nan_check_every`` steps, at every log and before every checkpoint)
and raises :class:`TrainingDivergedError` without saving, so the newest checkpoint is the last good one.
``nan_policy="skip"`` goes on, and stops the same way only after more than ``max_consecutive_skips`` non-finite
steps in a row. ``skip_batches_at_steps`` drops the updates of the listed steps whatever their values (the way to
step past a bad batch after a stop: the stop message names the steps). The per-step key is
``fold_in(PRNGKey(seed), step)``, so a resumed run draws the same noise as the uninterrupted one.

Resume restores the newest checkpoint that restores cleanly; newer damaged ones are moved aside, never deleted
(:meth:`gen3r_jax.training.checkpointing.Checkpointer.restore_newest`).

:func:`dry_run` prints the per-device memory of stage-2 configs on their target hardware without allocating
anything (:mod:`gen3r_jax.training.memory`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
from typing import Any, Mapping

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax

from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.nn.context_parallel import use_context_parallel
from gen3r_jax.parallel.rules import activation_spec, as_rules, make_mesh, module_shardings, use_rules
from gen3r_jax.progress import Progress as ConsoleProgress
from gen3r_jax.training.checkpointing import Checkpointer
from gen3r_jax.training.memory import estimate, format_table, mesh_sizes
from gen3r_jax.training.metrics import Progress, create_writer
from gen3r_jax.training.optimizer import make_optimizer
from gen3r_jax.training.state import StateSpec, create_train_state, merge_params, train_state_spec
from gen3r_jax.training.task import Task, rules_of


NAN_POLICIES = ("stop", "skip")


class TrainingDivergedError(RuntimeError):
  """The loss or the gradient norm became NaN/Inf; the last good checkpoint is kept."""


TASKS: dict[str, str] = {
    "toy": "gen3r_jax.training.toy:make_task",
    "stage1": "gen3r_jax.training.stage1_task:make_task",
    "stage2": "gen3r_jax.training.stage2_task:make_task",
}


def get_task(config, mesh: Mesh, workdir: str) -> Task:
  """``TASKS[config.task](config, mesh, workdir)``."""
  require(config.task in TASKS, f"task must be one of {sorted(TASKS)}, got {config.task!r}.")
  mod, fn = TASKS[config.task].split(":")
  return getattr(importlib.import_module(mod), fn)(config, mesh, workdir)


def check_config(config, num_devices: int | None = None, *, check_mesh: bool = True) -> None:
  """Validate the trainer settings before anything is built or compiled."""
  num_devices = jax.device_count() if num_devices is None else num_devices
  require(config.num_train_steps >= 1, f"num_train_steps must be >= 1, got {config.num_train_steps}.")
  require(config.log_every >= 1, f"log_every must be >= 1, got {config.log_every}.")
  require(config.checkpoint.every >= 1, f"checkpoint.every must be >= 1, got {config.checkpoint.every}.")
  require(config.checkpoint.keep >= 1, f"checkpoint.keep must be >= 1, got {config.checkpoint.keep}.")
  if check_mesh:
    mesh_sizes(config.mesh, num_devices)      # known axes, cfg = 1, sizes that divide the devices
  pc = jax.process_count()
  require(config.data.batch_size % pc == 0,
          f"data.batch_size {config.data.batch_size} (global) must be divisible by the {pc} processes.")
  require(config.profile.steps >= 0, f"profile.steps must be >= 0, got {config.profile.steps}.")
  require(int(config.get("nan_check_every", 1)) >= 1,
          f"nan_check_every must be >= 1, got {config.get('nan_check_every')}.")
  policy = config.get("nan_policy", "stop")
  require(policy in NAN_POLICIES, f"nan_policy must be one of {NAN_POLICIES}, got {policy!r}.")
  limit = config.get("max_consecutive_skips", 0)
  require(isinstance(limit, int) and limit >= 0, f"max_consecutive_skips must be an integer >= 0, got {limit!r}.")
  skips = config.get("skip_batches_at_steps", ())
  skips = (skips,) if isinstance(skips, int) else tuple(skips or ())
  require(all(isinstance(k, int) and 1 <= k <= config.num_train_steps for k in skips),
          f"skip_batches_at_steps must list steps in [1, num_train_steps={config.num_train_steps}] "
          f"(--config.skip_batches_at_steps=5 or =5,9), got {skips!r}.")


@contextlib.contextmanager
def step_context(mesh: Mesh, strategy: str = "allgather", rules=None):
  """Where the train step is traced and run: the mesh is active (``jax.set_mesh``), so are the sharding ``rules``
  of the activation constraints (:func:`gen3r_jax.parallel.rules.use_rules`; default the library's), and attention
  is context-parallel over the mesh axis ``context`` when it is > 1 (:mod:`gen3r_jax.nn.context_parallel`)."""
  rules = as_rules(rules)
  with jax.set_mesh(mesh), use_rules(rules), use_context_parallel(mesh, strategy, rules=rules):
    yield


def batch_sharding(mesh: Mesh, axes: tuple, rules=None) -> NamedSharding:
  return NamedSharding(mesh, activation_spec(axes, mesh, as_rules(rules)))


def batch_shardings(task: Task, mesh: Mesh, batch: Mapping, rules=None) -> dict[str, NamedSharding]:
  """Shardings of a host ``batch``'s array entries: ``task.batch_axes``, else axis 0 over ``act_batch``."""
  axes = dict(task.batch_axes or {})
  return {k: batch_sharding(mesh, axes.get(k, ("act_batch",) + (None,) * (np.ndim(v) - 1)), rules)
          for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype != object}


def place_frozen(task: Task, mesh: Mesh, rules=None):
  """``(frozen_state, frozen_shardings)`` of ``task.frozen`` on the mesh by its logical axes, each frozen model
  with its own ``model_rules`` (``None``s without frozen models; a no-op for modules built sharded)."""
  if task.frozen is None:
    return None, None
  frozen_state = nnx.state(task.frozen)
  frozen_sh = module_shardings(frozen_state, mesh, rules)
  return jax.device_put(frozen_state, frozen_sh), frozen_sh


def check_batch_divides(mesh: Mesh, global_batch: int) -> None:
  n = int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))
  require(global_batch % n == 0,
          f"data.batch_size {global_batch} must be divisible by mesh data x fsdp = {n} (the batch axis is sharded "
          f"over both); use a multiple of {n} or move devices to the context/tensor axes.")


def to_global(batch: Mapping[str, np.ndarray], shardings: Mapping[str, NamedSharding]) -> dict[str, jax.Array]:
  """This process's share of the batch -> global arrays on the mesh (multi-process safe)."""
  out = {}
  for k, sh in shardings.items():
    out[k] = jax.make_array_from_process_local_data(sh, np.asarray(batch[k]))
  return out


def skip_steps_of(config) -> tuple[int, ...]:
  """``config.skip_batches_at_steps`` as a sorted tuple of steps (an int on the command line is one step)."""
  skips = config.get("skip_batches_at_steps", ())
  skips = (skips,) if isinstance(skips, int) else tuple(skips or ())
  return tuple(sorted({int(k) for k in skips}))


def make_train_step(spec: StateSpec, task: Task, tx: optax.GradientTransformation, *, ema_decay: float | None,
                    batch_sh: Mapping[str, NamedSharding], frozen_sh, mesh: Mesh, nan_policy: str = "stop",
                    max_consecutive_skips: int = 0, skip_steps: tuple[int, ...] = ()):
  """The jitted step ``(state, frozen_state, batch, key) -> (state, metrics)`` with the state donated.

  A step whose loss or gradient norm is not finite, or whose number (1-based, after the step) is in
  ``skip_steps``, leaves parameters, optimiser state and EMA as they were; the step counter advances. The guard
  counts it and sets ``guard.stop_at`` (sticky) when the policy says stop: at once for ``"stop"``, after more than
  ``max_consecutive_skips`` non-finite steps in a row for ``"skip"`` (steps in ``skip_steps`` never stop a run).
  """
  fgd = nnx.graphdef(task.frozen) if task.frozen is not None else None
  rep = NamedSharding(mesh, P())
  limit = 0 if nan_policy == "stop" else int(max_consecutive_skips)
  forced_steps = np.asarray(sorted(skip_steps), np.int32)

  def step(state, frozen_state, batch, key):
    rng = jax.random.fold_in(key, state["step"])
    frozen = nnx.merge(fgd, frozen_state) if fgd is not None else None

    def lf(params):
      return task.loss_fn(merge_params(spec, params), frozen, batch, rng)

    (loss, metrics), grads = jax.value_and_grad(lf, has_aux=True)(state["params"])
    gnorm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
    if "ema" in state:
      new["ema"] = optax.incremental_update(params, state["ema"], 1.0 - ema_decay)
    ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    done = state["step"] + 1
    forced = jnp.isin(done, forced_steps) if forced_steps.size else jnp.zeros((), bool)
    apply = ok & ~forced
    # NaN guard: a dropped update leaves params / opt_state / ema as they were; the step counter advances
    new = jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, {k: state[k] for k in new})
    new["step"] = done
    metrics = dict(metrics, loss=loss, grad_norm=gnorm, finite=ok)
    if "guard" in state:
      g = state["guard"]
      bad = ~ok & ~forced
      consecutive = jnp.where(bad, g["consecutive"] + 1, jnp.where(forced, g["consecutive"], 0))
      stop_at = jnp.where((g["stop_at"] < 0) & (consecutive > limit), done, g["stop_at"])
      new["guard"] = {"skipped": g["skipped"] + (~apply).astype(jnp.int32), "consecutive": consecutive,
                      "stop_at": stop_at}
      metrics.update(skipped_steps=new["guard"]["skipped"], stop_at=stop_at)
    return new, metrics

  return jax.jit(step, in_shardings=(spec.shardings, frozen_sh, dict(batch_sh), rep),
                 out_shardings=(spec.shardings, rep), donate_argnums=(0,))


@dataclasses.dataclass
class TrainResult:
  state: dict
  history: list[dict]      # metrics of every logged step (host floats), with "step"
  last_checkpoint: int | None


class _ProfileWindow:
  """``jax.profiler`` trace for steps ``[start, start + steps)`` into ``<workdir>/profile`` (process 0)."""

  def __init__(self, pc, workdir: str):
    self.start, self.steps, self.dir = int(pc.start), int(pc.steps), os.path.join(workdir, "profile")
    self.on = False

  def before(self, step: int):
    if self.steps and step == self.start and jax.process_index() == 0:
      jax.profiler.start_trace(self.dir)
      self.on = True

  def after(self, step: int, sync):
    if self.on and step >= self.start + self.steps:
      jax.block_until_ready(sync)
      jax.profiler.stop_trace()
      self.on = False
      logging.info("profile of steps [%d, %d) written to %s", self.start, step, self.dir)


def train(config, workdir: str, *, task: Task | None = None, mesh: Mesh | None = None,
          stop_after: int | None = None) -> TrainResult:
  """Run (or resume) training as ``config`` says; ``stop_after`` ends the loop early at that step (tests:
  simulates a killed run) without a final checkpoint."""
  check_config(config, check_mesh=mesh is None)
  mesh = mesh or make_mesh(dict(config.mesh))
  logging.info("process %d of %d; %d devices (%d local); mesh %s", jax.process_index(), jax.process_count(),
               jax.device_count(), jax.local_device_count(), dict(mesh.shape))
  check_batch_divides(mesh, config.data.batch_size)
  rules = rules_of(config)
  task = task or get_task(config, mesh, workdir)
  num_steps = int(config.num_train_steps)
  tx, sched = make_optimizer(config.optimizer, num_steps)
  frozen_state, frozen_sh = place_frozen(task, mesh, rules)

  data = task.make_data()
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=int(config.checkpoint.keep),
                      async_save=bool(config.checkpoint.async_save), with_data=hasattr(data, "get_state"))
  # the trained model's own rules (model_rules.<task.model> laid over the table) place its state, its batch and the
  # activation constraints of the step, as in the sampler; the frozen models above take their own (place_frozen)
  model_rules = rules.for_model(task.model or None)
  # resume: the newest checkpoint that restores, straight onto the shards (no random init or pretrained load first)
  spec = train_state_spec(task.build, tx, seed=int(config.seed), mesh=mesh, rules=model_rules,
                          ema=bool(config.ema.enabled))
  restored = ckpt.restore_newest(spec.abstract, data)
  if restored is None:
    state, spec = create_train_state(task.build, tx, seed=int(config.seed), mesh=mesh, rules=model_rules,
                                     ema=bool(config.ema.enabled), init_params=task.init_params)
  else:
    state = restored[0]
  step = int(jax.device_get(state["step"]))
  skipped_seen = int(jax.device_get(state["guard"]["skipped"]))
  nan_policy = config.get("nan_policy", "stop")
  max_skips = int(config.get("max_consecutive_skips", 0))
  skip_steps = skip_steps_of(config)
  first = next(data)
  batch_sh = batch_shardings(task, mesh, first, model_rules)
  train_step = make_train_step(spec, task, tx, ema_decay=float(config.ema.decay), batch_sh=batch_sh,
                               frozen_sh=frozen_sh, mesh=mesh, nan_policy=nan_policy,
                               max_consecutive_skips=max_skips, skip_steps=skip_steps)
  key = jax.random.PRNGKey(int(config.seed))
  # lazy: clu is a training-run dependency only (make_train_step is also used where clu is absent, bench/)
  writer = create_writer(workdir, tensorboard=bool(config.tensorboard))
  progress = Progress(step, num_steps)
  bar = ConsoleProgress(num_steps, "train", initial=step, every=int(config.log_every),
                        enabled=jax.process_index() == 0, throughput=(int(config.data.batch_size), "examples"))
  profile = _ProfileWindow(config.profile, workdir)
  history: list[dict] = []
  end = num_steps if stop_after is None else min(stop_after, num_steps)
  nan_check_every = int(config.get("nan_check_every", 1))
  batch = first
  last_check = step
  try:
    while step < end:
      profile.before(step)
      with step_context(mesh, config.get("context_strategy", "allgather"), model_rules):
        state, metrics = train_step(state, frozen_state, to_global(batch, batch_sh), key)
      step += 1
      if step in skip_steps:
        logging.warning("step %d: batch dropped, its update not applied (config.skip_batches_at_steps)", step)
      profile.after(step, metrics)
      log_now = step % config.log_every == 0 or step == end
      save_now = step % config.checkpoint.every == 0 or (step == num_steps and stop_after is None)
      if log_now or save_now or step % nan_check_every == 0:
        g = jax.device_get({k: metrics[k] for k in ("loss", "grad_norm", "skipped_steps", "stop_at")})
        if int(g["stop_at"]) >= 0:
          raise TrainingDivergedError(_diverged_message(int(g["stop_at"]), step, g, nan_policy, max_skips,
                                                        skip_steps, ckpt))
        forced = sum(1 for k in skip_steps if last_check < k <= step)
        if int(g["skipped_steps"]) - skipped_seen > forced:
          n = int(g["skipped_steps"]) - skipped_seen - forced
          where = f"step {step}" if step - last_check == 1 else f"steps {last_check + 1}-{step}"
          logging.warning("%s: %d update(s) skipped: non-finite loss or gradient norm (last: loss %s, gradient norm "
                          "%s; nan_policy=skip); %d skipped in total", where, n, float(g["loss"]),
                          float(g["grad_norm"]), int(g["skipped_steps"]))
        skipped_seen, last_check = int(g["skipped_steps"]), step
      if log_now:
        m = {k: float(v) for k, v in jax.device_get(metrics).items() if k not in ("finite", "stop_at")}
        m["learning_rate"] = float(sched(max(step - 1, 0) // config.optimizer.grad_accum_steps))
        m.update(progress.report(step))
        writer.write_scalars(step, m)
        history.append(dict(m, step=step))
      bar.update(extra=f"loss {float(m['loss']):.4g}" if log_now else None)
      if save_now:
        ckpt.save(step, state, data if ckpt.with_data else None, config)
      if step < end:
        batch = next(data)
  finally:
    writer.close()
    ckpt.wait()
  last = ckpt.latest_step()
  ckpt.close()
  return TrainResult(state, history, last)


def _diverged_message(stop_at: int, step: int, g: Mapping, nan_policy: str, max_skips: int,
                      skip_steps: tuple[int, ...], ckpt: Checkpointer) -> str:
  """The one-paragraph stop message: what happened, the last good checkpoint, how to go on past the batch."""
  if nan_policy == "stop":
    values = f" ({float(g['loss'])}) or gradient norm ({float(g['grad_norm'])})" if stop_at == step else \
        f" or gradient norm (seen at the check of step {step})"
    head = f"step {stop_at}: non-finite loss{values}; the update was not applied and training stopped."
    bad = [stop_at]
  else:
    bad = list(range(stop_at - max_skips, stop_at + 1))
    head = (f"steps {bad[0]}-{stop_at}: {len(bad)} non-finite steps in a row, more than max_consecutive_skips="
            f"{max_skips} (nan_policy=skip); training stopped.")
  last = ckpt.latest_step()
  good = (f"The last good checkpoint is step {last} in {ckpt.directory}" if last is not None else
          f"No checkpoint has been written yet in {ckpt.directory} (a restart begins at step 0)")
  steps = ",".join(str(k) for k in sorted(set(skip_steps) | set(bad)))
  return (f"{head} {good}; nothing was saved after it. Lower the learning rate or check the batch for NaN/Inf "
          f"inputs. To go on past this batch, restart with --config.skip_batches_at_steps={steps} (the run replays "
          f"to step {bad[0] - 1} exactly, drops the update of step(s) {', '.join(map(str, bad))} and continues "
          f"with the following batches), or with --config.nan_policy=skip.")


def restore_params(workdir: str, config, task: Task, mesh: Mesh, *, step: int | None = None) -> tuple[dict, int]:
  """``(params, step)`` of a checkpoint (newest by default) for evaluation or export."""
  tx, _ = make_optimizer(config.optimizer, int(config.num_train_steps))
  spec = train_state_spec(task.build, tx, seed=int(config.seed), mesh=mesh,
                          rules=rules_of(config).for_model(task.model or None), ema=bool(config.ema.enabled))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=int(config.checkpoint.keep), with_data=False)
  if step is None:  # the newest that restores; damaged newer ones are reported and left in place
    restored = ckpt.restore_newest(spec.abstract, set_aside_damaged=False)
    if restored is None:
      raise Gen3RInputError(f"no checkpoint under {ckpt.directory}")
    state, step = restored
  else:
    state = ckpt.restore(step, spec.abstract)
  ckpt.close()
  return state["params"], step


# ------------------------------------------------------------------------------------------------- dry run
def dry_run_configs(config_arg: str, config, overrides: Mapping[str, Any] | None = None) -> list[tuple[str, object]]:
  """The configs a ``--dry_run`` reports: ``config_arg`` is the ``--config`` value (``file.py[:entry]``). With an
  entry, that entry (``config``, overrides applied); without one, every stage-2 entry of the file's ``ENTRIES``,
  each with ``overrides`` (the ``--config.<path>`` flags, ``{"model.dit.remat": "dots"}``) applied."""
  path, _, entry = config_arg.partition(":")
  if entry or config.task == "stage2":
    require(config.task == "stage2", f"the dry run estimates stage-2 (DiT) training memory; {config_arg} is task "
                                     f"{config.task!r}. Name a stage-2 entry ({path}:<entry>).")
    return [(config_arg, config)]
  spec = importlib.util.spec_from_file_location("_gen3r_dry_run_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  names = list(getattr(module, "ENTRIES", {}))
  out = [(f"{path}:{n}", module.get_config(n)) for n in names]
  out = [(n, _with_overrides(c, overrides or {}, n)) for n, c in out if c.task == "stage2"]
  require(bool(out), f"{path} has no stage-2 entry to estimate (ENTRIES: {names}); pass a stage-2 config.")
  return out


def _with_overrides(config, overrides: Mapping[str, Any], name: str):
  """``config`` with the flat ``{"a.b": value}`` overrides of ``--config.a.b=value`` flags applied (as absl applies
  them to the named entry); a path the entry does not have is an error naming it."""
  for key, value in overrides.items():
    path = key.split(".")
    target = config
    for depth, part in enumerate(path):
      require(hasattr(target, "keys") and part in target,
              f"--config.{key}: {name} has no field {key!r}; name an entry that has it ({name}).")
      if depth < len(path) - 1:
        target = target[part]
    leaf = path[-1]
    with target.unlocked() if hasattr(target, "unlocked") else contextlib.nullcontext():
      target[leaf] = value
  return config


def dry_run(configs) -> str:
  """The per-device memory table of ``[(name, config)]`` on each config's ``hardware`` (nothing allocated)."""
  return format_table([estimate(cfg, name=name) for name, cfg in configs])
