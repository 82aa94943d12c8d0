"""Orbax checkpoints of a training run: train state, NaN-guard counters, grain iterator state and the config.

``<workdir>/checkpoints/<step>/`` holds four items:

* ``state``: ``{"step", "params", "opt_state"[, "ema"]}`` (``StandardSave``; restored straight onto the
  current mesh's shardings, so a run may resume on a different mesh);
* ``guard``: the NaN guard's counters as JSON (``skipped_steps``, ``consecutive_skips``; checkpoints written
  before it existed restore with zeros);
* ``data``: the grain iterator state (``grain.checkpoint.CheckpointSave``; one file per process), so a resumed
  run sees exactly the batches the uninterrupted run would have seen;
* ``config``: the run's ``ConfigDict`` as JSON (for reference; the command line decides what runs).

Saves are asynchronous (the step loop continues while the write finishes) and only the newest ``keep`` are
kept. ``wait()`` blocks until pending writes are done (before exit and in tests).

Damaged checkpoints: :meth:`Checkpointer.restore_newest` restores the newest step that restores cleanly. Newer
steps that fail (a file deleted or truncated, a half-copied directory) are moved, never deleted, to
``<checkpoints>.damaged/<step>`` (out of the manager's sight, so it neither garbage-collects them nor trips on them
when the run saves that step again), with one warning line per step naming the step, the error and where it went.
When no step restores, a one-line :class:`~gen3r_jax.errors.Gen3RInputError` names the directory and each error,
and nothing is moved.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from gen3r_jax.errors import Gen3RInputError


_GUARD_JSON = ("skipped_steps", "consecutive_skips")


def _config_json(config) -> dict:
  try:
    return json.loads(config.to_json_best_effort())
  except Exception:  # noqa: BLE001 - the config is informative only
    return {"repr": str(config)}


def _reason(e: BaseException, limit: int = 300) -> str:
  """One line: the exception type and the first line of its message (without TensorStore's spec dump), cut to
  ``limit`` characters."""
  text = str(e).strip().splitlines()
  line = f"{type(e).__name__}: {text[0].split(' [tensorstore_spec=')[0]}" if text else type(e).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _all_processes(ok: bool) -> bool:
  """``ok`` on every process (a step counts as restored only where all processes restored it)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def _replicated(value: int, like) -> jax.Array:
  sharding = getattr(like, "sharding", None)
  if sharding is None:
    return np.asarray(value, np.int32)
  return jax.make_array_from_callback((), sharding, lambda _: np.asarray(value, np.int32))


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` with the items above."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True, with_data: bool = True):
    self.directory = os.path.abspath(directory) if "://" not in directory else directory
    self.with_data = with_data
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
                "guard": ocp.JsonCheckpointHandler()}
    if with_data:
      import grain  # heavy optional dependency: imported on first use
      handlers["data"] = grain.checkpoint.CheckpointHandler()
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=opts, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(int(s) for s in self.manager.all_steps())

  def save(self, step: int, state: Any, data_iter: Any = None, config=None, *, force: bool = False) -> bool:
    import grain  # heavy optional dependency: imported on first use
    state = dict(state)
    guard = state.pop("guard", None)
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(_config_json(config) if config
                                                                                is not None else {})}
    if guard is not None:
      g = jax.device_get(guard)
      items["guard"] = ocp.args.JsonSave({"skipped_steps": int(g["skipped"]),
                                          "consecutive_skips": int(g["consecutive"])})
    if self.with_data:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s (async)", step, self.directory)
    return saved

  def _step_dir(self, step: int) -> epath.Path:
    return epath.Path(self.directory) / str(step)

  def restore(self, step: int, abstract_state: Any, data_iter: Any = None) -> Any:
    """Restore ``state`` onto the shardings of ``abstract_state`` (and ``data_iter`` in place). When
    ``abstract_state`` has a ``guard``, it comes from the ``guard`` item (zeros if the checkpoint has none)."""
    import grain  # heavy optional dependency: imported on first use
    abstract = dict(abstract_state)
    guard_like = abstract.pop("guard", None)
    items = {"state": ocp.args.StandardRestore(abstract)}
    has_guard = guard_like is not None and (self._step_dir(step) / "guard").exists()
    if has_guard:
      items["guard"] = ocp.args.JsonRestore()
    if self.with_data and data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    state = dict(out["state"])
    if guard_like is not None:
      g = dict(out["guard"]) if has_guard else {}
      state["guard"] = {"skipped": _replicated(int(g.get("skipped_steps", 0)), guard_like["skipped"]),
                        "consecutive": _replicated(int(g.get("consecutive_skips", 0)), guard_like["consecutive"]),
                        "stop_at": _replicated(-1, guard_like["stop_at"])}
    logging.info("checkpoint: restored step %d from %s", step, self.directory)
    return state

  def restore_newest(self, abstract_state: Any, data_iter: Any = None, *,
                     set_aside_damaged: bool = True) -> tuple[Any, int] | None:
    """``(state, step)`` of the newest checkpoint that restores cleanly, ``None`` when there is none at all.

    Newer steps that fail are reported (one warning line each) and, with ``set_aside_damaged``, moved to
    :meth:`damaged_dir` (never deleted). Raises :class:`Gen3RInputError` when no step restores.
    """
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      return None
    failed: list[tuple[int, str]] = []
    for step in steps:
      try:
        state, ok = self.restore(step, abstract_state, data_iter), True
      except Exception as e:  # noqa: BLE001 - any failure to read a step means: try the previous one
        state, ok, why = None, False, _reason(e)
      else:
        why = "restored on this process but not on every process"
      if _all_processes(ok):
        for bad, reason in failed:
          where = self._set_aside(bad) if set_aside_damaged else "left in place"
          logging.warning("checkpoint: skipped step %d in %s: it does not restore (%s); %s; resuming from step %d",
                          bad, self.directory, reason,
                          f"moved it to {where} (not deleted)" if set_aside_damaged else where, step)
        if failed and set_aside_damaged:
          self.manager.reload()
        return state, step
      failed.append((step, why))
    tried = "; ".join(f"step {s}: {r}" for s, r in failed)
    raise Gen3RInputError(
        f"no checkpoint in {self.directory} restores ({tried}); nothing was moved or deleted: repair them, or move "
        f"{self.directory} away to start the run from scratch.")

  def damaged_dir(self) -> str:
    """Where damaged steps go: ``<checkpoints>.damaged`` beside the checkpoint directory."""
    return self.directory.rstrip("/") + ".damaged"

  def _set_aside(self, step: int) -> str:
    """Move step ``step`` to ``damaged_dir()/<step>`` (``<step>-2``, ... if taken); process 0 moves, all wait."""
    root = epath.Path(self.damaged_dir())
    dest = root / str(step)
    n = 1
    while dest.exists():
      n += 1
      dest = root / f"{step}-{n}"
    multi = jax.process_count() > 1
    if multi:  # every process has picked the same name before process 0 moves the step
      multihost_utils.sync_global_devices(f"gen3r_checkpoint_set_aside_{step}_name")
    if jax.process_index() == 0:
      try:
        root.mkdir(parents=True, exist_ok=True)
        self._step_dir(step).rename(dest)
      except OSError as e:
        raise Gen3RInputError(
            f"checkpoint step {step} in {self.directory} is damaged and could not be moved to {dest} ({_reason(e)}); "
            f"move it out of {self.directory} by hand and restart.") from e
    if multi:
      multihost_utils.sync_global_devices(f"gen3r_checkpoint_set_aside_{step}_moved")
    return str(dest)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
