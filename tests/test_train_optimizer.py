"""Optimiser, schedule and metric writers of the trainer."""

import glob
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.training.metrics import Progress, TensorboardXWriter, create_writer
from gen3r_jax.training.optimizer import make_optimizer


def opt_config(**kw):
  oc = base.get_config().optimizer
  for k, v in kw.items():
    oc[k] = v
  return oc


def test_cosine_schedule_is_torch_cosine_annealing_to_0_2_lr():
  _, sched = make_optimizer(opt_config(grad_accum_steps=1), 100)
  lr, eta_min = 1e-5, 2e-6
  for t in (0, 1, 37, 99, 100):
    ref = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / 100)) / 2
    assert float(sched(t)) == pytest.approx(ref, rel=1e-5)


def test_adamw_step_matches_torch_adamw():
  import torch  # the dev extra installs it
  rng = np.random.default_rng(0)
  p0 = rng.normal(size=(5,)).astype(np.float32)
  grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(3)]
  tx, _ = make_optimizer(opt_config(learning_rate=1e-2, schedule="constant", grad_clip_norm=0.0,
                                    grad_accum_steps=1, weight_decay=0.1), 10)
  p, st = jnp.asarray(p0), None
  st = tx.init(p)
  for g in grads:
    u, st = tx.update(jnp.asarray(g), st, p)
    p = optax.apply_updates(p, u)
  tp = torch.nn.Parameter(torch.tensor(p0))
  opt = torch.optim.AdamW([tp], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
  for g in grads:
    tp.grad = torch.tensor(g)
    opt.step()
  np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_clipping_and_accumulation():
  tx, _ = make_optimizer(opt_config(learning_rate=1.0, schedule="constant", grad_clip_norm=0.5,
                                    grad_accum_steps=2, weight_decay=0.0), 10)
  p = jnp.zeros(2)
  st = tx.init(p)
  u1, st = tx.update(jnp.array([3.0, 0.0]), st, p)
  assert np.all(np.asarray(u1) == 0)                     # first micro-step: no update yet
  u2, st = tx.update(jnp.array([1.0, 0.0]), st, p)
  assert float(u2[0]) == pytest.approx(-1.0, rel=1e-3)   # Adam's first step moves by ~lr whatever the norm


def test_bad_optimizer_config():
  with pytest.raises(Gen3RInputError, match="learning_rate must be > 0"):
    make_optimizer(opt_config(learning_rate=0.0), 10)
  with pytest.raises(Gen3RInputError, match="min_lr_ratio must be in"):
    make_optimizer(opt_config(min_lr_ratio=2.0), 10)


def test_writers_log_and_write_tensorboard_events(tmp_path):
  w = create_writer(str(tmp_path))
  w.write_scalars(3, {"loss": 1.5, "grad_norm": 0.25})
  w.close()                                              # drains tensorboardX's async queue
  files = glob.glob(str(tmp_path / "events.out.tfevents.*"))
  assert files and b"grad_norm" in open(files[0], "rb").read()
  assert isinstance(w._writers[1], TensorboardXWriter)
  p = Progress(0, 10)
  out = p.report(5)
  assert out["steps_per_sec"] > 0 and out["eta_seconds"] >= 0
