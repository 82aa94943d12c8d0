"""Orbax checkpoints of a training run: train state, grain iterator state and the config.

``<workdir>/checkpoints/<step>/`` holds three items:

* ``state``: ``{"step", "params", "opt_state"[, "ema"]}`` (``StandardSave``; restored straight onto the
  current mesh's shardings, so a run may resume on a different mesh);
* ``data``: the grain iterator state (``grain.checkpoint.CheckpointSave``; one file per process), so a resumed
  run sees exactly the batches the uninterrupted run would have seen;
* ``config``: the run's ``ConfigDict`` as JSON (for reference; the command line decides what runs).

Saves are asynchronous (the step loop continues while the write finishes) and only the newest ``keep`` are
kept. ``wait()`` blocks until pending writes are done (before exit and in tests).
"""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp
from absl import logging


def _config_json(config) -> dict:
  try:
    return json.loads(config.to_json_best_effort())
  except Exception:  # noqa: BLE001 - the config is informative only
    return {"repr": str(config)}


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` with the three items above."""

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True, with_data: bool = True):
    self.directory = os.path.abspath(directory)
    self.with_data = with_data
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
    if with_data:
      import grain
      handlers["data"] = grain.checkpoint.CheckpointHandler()
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=opts, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any = None, config=None, *, force: bool = False) -> bool:
    import grain
    items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(_config_json(config) if config
                                                                                is not None else {})}
    if self.with_data:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s (async)", step, self.directory)
    return saved

  def restore(self, step: int, abstract_state: Any, data_iter: Any = None) -> Any:
    """Restore ``state`` onto the shardings of ``abstract_state`` (and ``data_iter`` in place)."""
    import grain
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if self.with_data and data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    logging.info("checkpoint: restored step %d from %s", step, self.directory)
    return out["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
