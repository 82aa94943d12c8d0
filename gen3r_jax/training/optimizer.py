"""Optimiser and learning-rate schedule from config (optax).

```
grads ─► clip (global norm; threshold constant or ramped) ─► AdamW(schedule) ─► [MultiSteps accumulation]
```

``config.optimizer``:

* ``name``: ``"adamw"`` (PyTorch ``AdamW`` / DeepSpeed ``FusedAdam`` / ``DeepSpeedCPUAdam`` in AdamW mode:
  decoupled decay scaled by the learning rate, on every parameter, as ``optax.adamw``).
* ``learning_rate``, ``b1``, ``b2``, ``eps``, ``weight_decay``.
* ``schedule``, in optimiser steps ``k = 0, 1, ...`` (the k-th parameter update):

  - ``"constant"``;
  - ``"cosine"``: PyTorch ``CosineAnnealingLR`` from ``learning_rate`` to ``min_lr_ratio * learning_rate`` over
    ``decay_steps``, no warm-up (the stage-1 release);
  - ``"warmup_cosine"``: optax's linear warm-up over ``warmup_steps``, then cosine to ``min_lr_ratio``;
  - ``"deepspeed_warmup_cosine"``: DeepSpeed ``WarmupCosineLR`` with ``warmup_type="linear"`` as the stage-2
    release applies it (training-reference §3.9). DeepSpeed's scheduler starts at iteration -1 (lr 0) and is
    stepped after each update, so update ``k`` uses the ratio of iteration ``s = k - 1``:
    ``0`` for ``s < 0``; ``s / W`` for ``s < W`` (``W = max(2, warmup_steps)``); else
    ``max(0, m + (1 - m) (1 + cos(pi (s - W + 1) / (S - W))) / 2)`` with ``m = min_lr_ratio`` (1e-4) and
    ``S = decay_steps``. The first update therefore has learning rate 0 (it only fills Adam's moments).

  ``decay_steps`` 0 means "the number of optimiser steps of the run".
* ``grad_clip_norm``: global-norm clipping threshold (0 = off), applied to the (accumulated) gradient before Adam.
  ``grad_clip_initial_ratio`` > 1 ramps the threshold as the stage-2 release's ``linear_decay``: from
  ``grad_clip_norm * grad_clip_initial_ratio`` linearly down to ``grad_clip_norm`` over the first
  ``int(grad_clip_ramp_fraction * optimiser steps)`` updates (``abnormal_norm_clip_start``), then constant.
* ``grad_accum_steps``: gradient accumulation (``optax.MultiSteps``; gradients are averaged, which equals
  Lightning's ``loss / k`` and DeepSpeed's loss scaling by ``1 / k``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gen3r_jax.errors import require

SCHEDULES = ("constant", "cosine", "warmup_cosine", "deepspeed_warmup_cosine")


def check_optimizer_config(oc, num_steps: int) -> None:
  """Validate ``config.optimizer`` (clear errors before any compile)."""
  require(oc.name == "adamw", f"optimizer.name must be 'adamw', got {oc.name!r}.")
  require(oc.learning_rate > 0, f"optimizer.learning_rate must be > 0, got {oc.learning_rate}.")
  require(oc.schedule in SCHEDULES, f"optimizer.schedule must be one of {SCHEDULES}, got {oc.schedule!r}.")
  require(0.0 <= oc.min_lr_ratio <= 1.0, f"optimizer.min_lr_ratio must be in [0, 1], got {oc.min_lr_ratio}.")
  require(oc.grad_accum_steps >= 1, f"optimizer.grad_accum_steps must be >= 1, got {oc.grad_accum_steps}.")
  require(oc.grad_clip_norm >= 0, f"optimizer.grad_clip_norm must be >= 0 (0 = off), got {oc.grad_clip_norm}.")
  require(oc.get("grad_clip_initial_ratio", 1.0) >= 1.0,
          f"optimizer.grad_clip_initial_ratio must be >= 1 (1 = constant threshold), got "
          f"{oc.get('grad_clip_initial_ratio')}.")
  require(0.0 <= oc.get("grad_clip_ramp_fraction", 0.0) <= 1.0,
          f"optimizer.grad_clip_ramp_fraction must be in [0, 1], got {oc.get('grad_clip_ramp_fraction')}.")
  require(oc.warmup_steps >= 0, f"optimizer.warmup_steps must be >= 0, got {oc.warmup_steps}.")
  require(num_steps >= 1, f"num_train_steps must be >= 1, got {num_steps}.")


def optimizer_steps(oc, num_steps: int) -> int:
  """Optimiser updates of a run of ``num_steps`` micro-steps."""
  return max(num_steps // int(oc.grad_accum_steps), 1)


def deepspeed_warmup_cosine(lr: float, *, warmup_steps: int, total_steps: int,
                            min_ratio: float = 1e-4) -> optax.Schedule:
  """DeepSpeed ``WarmupCosineLR(warmup_type="linear")`` as applied per update ``k`` (see the module docstring)."""
  w = max(2, int(warmup_steps))
  span = max(int(total_steps) - w, 1)

  def schedule(count):
    s = jnp.asarray(count, jnp.float32) - 1.0
    warm = s / w
    cos = (1.0 + jnp.cos(math.pi * (s - w + 1.0) / span)) / 2.0
    ratio = jnp.where(s < 0, 0.0, jnp.where(s < w, warm, jnp.maximum(0.0, min_ratio + (1.0 - min_ratio) * cos)))
    return lr * ratio

  return schedule


def make_schedule(oc, num_steps: int) -> optax.Schedule:
  """Learning rate per optimiser step (``num_steps`` micro-steps / ``grad_accum_steps`` optimiser steps)."""
  decay = int(oc.decay_steps) or optimizer_steps(oc, num_steps)
  lr = float(oc.learning_rate)
  if oc.schedule == "constant":
    return optax.constant_schedule(lr)
  if oc.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=decay, alpha=float(oc.min_lr_ratio))
  if oc.schedule == "deepspeed_warmup_cosine":
    return deepspeed_warmup_cosine(lr, warmup_steps=int(oc.warmup_steps), total_steps=decay,
                                   min_ratio=float(oc.min_lr_ratio))
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=int(oc.warmup_steps), decay_steps=decay,
                                            end_value=lr * float(oc.min_lr_ratio))


def linear_decay(initial: float, final: float, total_steps: int) -> optax.Schedule:
  """The release's ``linear_decay(initial, final, total_steps, k)``: ``initial + (final - initial) k / total``
  for ``k < total_steps``, then ``final``."""
  def schedule(count):
    k = jnp.asarray(count, jnp.float32)
    ramp = initial + (final - initial) / max(total_steps, 1) * k
    return jnp.where(k >= total_steps, final, ramp)
  return schedule


class ClipState(NamedTuple):
  count: jax.Array   # optimiser updates seen so far


def clip_by_global_norm_schedule(threshold: optax.Schedule) -> optax.GradientTransformation:
  """Global-norm clipping whose threshold is ``threshold(k)`` at update ``k``: ``g * min(1, t / ||g||)``."""
  def init(params):
    del params
    return ClipState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    t = threshold(state.count)
    scale = jnp.where(norm <= t, 1.0, t / jnp.maximum(norm, 1e-30))
    updates = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
    return updates, ClipState(optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


def clip_threshold(oc, num_steps: int) -> optax.Schedule:
  """The clipping threshold per optimiser step (constant unless ``grad_clip_initial_ratio`` > 1)."""
  final = float(oc.grad_clip_norm)
  ratio = float(oc.get("grad_clip_initial_ratio", 1.0))
  ramp = int(float(oc.get("grad_clip_ramp_fraction", 0.0)) * optimizer_steps(oc, num_steps))
  if ratio == 1.0 or ramp == 0:
    return optax.constant_schedule(final)
  return linear_decay(final * ratio, final, ramp)


def make_optimizer(oc, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``(tx, schedule)`` for ``config.optimizer`` and a run of ``num_steps`` micro-steps."""
  check_optimizer_config(oc, num_steps)
  sched = make_schedule(oc, num_steps)
  parts = []
  if oc.grad_clip_norm > 0:
    if float(oc.get("grad_clip_initial_ratio", 1.0)) > 1.0:
      parts.append(clip_by_global_norm_schedule(clip_threshold(oc, num_steps)))
    else:
      parts.append(optax.clip_by_global_norm(float(oc.grad_clip_norm)))
  parts.append(optax.adamw(sched, b1=float(oc.b1), b2=float(oc.b2), eps=float(oc.eps),
                           weight_decay=float(oc.weight_decay)))
  tx = optax.chain(*parts)
  if oc.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=int(oc.grad_accum_steps))
  return tx, sched
