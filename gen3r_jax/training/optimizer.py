"""Optimiser and learning-rate schedule from config (optax).

``config.optimizer``:

* ``name``: ``"adamw"`` (PyTorch ``AdamW`` / DeepSpeed ``FusedAdam`` in AdamW mode: decoupled decay scaled by
  the learning rate, as ``optax.adamw``).
* ``learning_rate``, ``b1``, ``b2``, ``eps``, ``weight_decay``.
* ``schedule``: ``"constant"``, ``"cosine"`` (PyTorch ``CosineAnnealingLR``: from ``learning_rate`` to
  ``min_lr_ratio * learning_rate`` over ``decay_steps`` optimiser steps, no warm-up - the stage-1 release), or
  ``"warmup_cosine"`` (linear warm-up over ``warmup_steps`` then cosine to ``min_lr_ratio``).
  ``decay_steps`` 0 means "the number of optimiser steps of the run".
* ``grad_clip_norm``: global-norm clipping (> 0), applied to the (accumulated) gradient before Adam.
* ``grad_accum_steps``: gradient accumulation (``optax.MultiSteps``; gradients are averaged, which equals
  Lightning's ``loss / k`` accumulation).
"""

from __future__ import annotations

import optax

from gen3r_jax.errors import require

SCHEDULES = ("constant", "cosine", "warmup_cosine")


def check_optimizer_config(oc, num_steps: int) -> None:
  """Validate ``config.optimizer`` (clear errors before any compile)."""
  require(oc.name == "adamw", f"optimizer.name must be 'adamw', got {oc.name!r}.")
  require(oc.learning_rate > 0, f"optimizer.learning_rate must be > 0, got {oc.learning_rate}.")
  require(oc.schedule in SCHEDULES, f"optimizer.schedule must be one of {SCHEDULES}, got {oc.schedule!r}.")
  require(0.0 <= oc.min_lr_ratio <= 1.0, f"optimizer.min_lr_ratio must be in [0, 1], got {oc.min_lr_ratio}.")
  require(oc.grad_accum_steps >= 1, f"optimizer.grad_accum_steps must be >= 1, got {oc.grad_accum_steps}.")
  require(oc.grad_clip_norm >= 0, f"optimizer.grad_clip_norm must be >= 0 (0 = off), got {oc.grad_clip_norm}.")
  require(oc.warmup_steps >= 0, f"optimizer.warmup_steps must be >= 0, got {oc.warmup_steps}.")
  require(num_steps >= 1, f"num_train_steps must be >= 1, got {num_steps}.")


def make_schedule(oc, num_steps: int) -> optax.Schedule:
  """Learning rate per optimiser step (``num_steps`` micro-steps / ``grad_accum_steps`` optimiser steps)."""
  opt_steps = max(num_steps // oc.grad_accum_steps, 1)
  decay = int(oc.decay_steps) or opt_steps
  lr = float(oc.learning_rate)
  if oc.schedule == "constant":
    return optax.constant_schedule(lr)
  if oc.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=decay, alpha=float(oc.min_lr_ratio))
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=int(oc.warmup_steps), decay_steps=decay,
                                            end_value=lr * float(oc.min_lr_ratio))


def make_optimizer(oc, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``(tx, schedule)`` for ``config.optimizer`` and a run of ``num_steps`` micro-steps."""
  check_optimizer_config(oc, num_steps)
  sched = make_schedule(oc, num_steps)
  parts = []
  if oc.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(oc.grad_clip_norm)))
  parts.append(optax.adamw(sched, b1=float(oc.b1), b2=float(oc.b2), eps=float(oc.eps),
                           weight_decay=float(oc.weight_decay)))
  tx = optax.chain(*parts)
  if oc.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=int(oc.grad_accum_steps))
  return tx, sched
