"""What a training stage gives the generic trainer (:mod:`gen3r_jax.training.loop`): :class:`Task`.

Its own module so that the tasks (``toy``, ``stage1_task``, ``stage2_task``) and the memory estimate
(:mod:`gen3r_jax.training.memory`) need not import the trainer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Mapping

import jax
from flax import nnx

from gen3r_jax.parallel.rules import Rules


@dataclasses.dataclass
class Task:
  """What a training stage gives the trainer.

  Attributes:
    build: ``rngs -> module``: the trainable module (all its ``nnx.Param`` train).
    loss_fn: ``(module, frozen, batch, rng) -> (loss, metrics)`` (traceable; metrics are scalars).
    make_data: ``() -> iterator`` of host batches (dicts of numpy arrays, this process's share of the global
      batch); a grain ``DatasetIterator`` makes the data position part of the checkpoint.
    frozen: frozen modules (already on the mesh) or ``None``.
    batch_axes: logical activation axes per batch entry (default: axis 0 is ``act_batch``, the rest replicated).
    model: the trainable model's name in ``config.sharding.model_rules`` (``"dit"``, ``"adapter"``; ``""``: the
      plain rules).
    init_params: ``(abstract params, shardings) -> params`` (pure dicts) to start from, e.g. a pretrained
      checkpoint; ``None`` = the module's random init.
  """
  build: Callable[[nnx.Rngs], nnx.Module]
  loss_fn: Callable[..., tuple[jax.Array, dict]]
  make_data: Callable[[], Iterator[dict]]
  frozen: nnx.Module | None = None
  batch_axes: Mapping[str, tuple] | None = None
  init_params: Callable[[dict, dict], dict] | None = None
  model: str = ""


def rules_of(config) -> Rules:
  """The sharding rules of a training config (``config.sharding``; the library defaults without one)."""
  return Rules.from_config(config.get("sharding"))


__all__ = ("Task", "rules_of")
