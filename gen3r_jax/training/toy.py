"""A toy task (a two-layer MLP regressing a fixed random function) to test the trainer on its own.

It goes through every trainer path the real stages use: logical-axis parameters (sharded over ``fsdp``), a frozen
module (the target function), a grain iterator over synthetic arrays (checkpointable), per-step randomness
(input noise from the step key) and the NaN guard (``toy.poison_step`` puts NaN into that batch and the
``toy.poison_count - 1`` batches after it).
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.nn.linear import Dense
from gen3r_jax.training.task import Task


class MLP(nnx.Module):
  def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs):
    self.fc1 = Dense(din, hidden, axes=("embed", "mlp"), rngs=rngs)
    self.fc2 = Dense(hidden, dout, axes=("mlp", "embed"), rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x)))


class Poison:
  """Replace the inputs of elements ``at, ..., at + count - 1`` with NaN (tests the NaN guard)."""

  def __init__(self, at: int, count: int = 1):
    self.at, self.count = at, count

  def __call__(self, i, x):
    if self.at >= 0 and self.at <= i < self.at + self.count:
      x = dict(x, x=np.full_like(x["x"], np.nan))
    return x


def make_data(config, seed: int):
  """A grain iterator over ``num_examples`` fixed random inputs, shuffled, repeated, batched per process."""
  import grain  # heavy optional dependency: imported on first use
  d = config.toy
  rng = np.random.default_rng(seed)
  xs = rng.normal(size=(d.num_examples, d.dim)).astype(np.float32)
  ds = grain.MapDataset.source([{"x": x} for x in xs]).shuffle(seed=seed).repeat()
  per_process = config.data.batch_size // jax.process_count()
  ds = ds.batch(config.data.batch_size)
  ds = ds.map_with_index(Poison(int(d.poison_step), int(d.get("poison_count", 1))))
  ds = ds.map(lambda b: {"x": b["x"][jax.process_index() * per_process:(jax.process_index() + 1) * per_process]})
  return iter(ds.to_iter_dataset())


def make_task(config, mesh, workdir: str) -> Task:
  del mesh, workdir
  d = config.toy
  target = MLP(d.dim, d.hidden, d.dim, rngs=nnx.Rngs(1234))

  def loss_fn(model, frozen, batch, rng):
    x = batch["x"] + d.noise * jax.random.normal(rng, batch["x"].shape)
    err = model(x) - frozen(x)
    loss = jnp.mean(jnp.square(err))
    return loss, {"mse": loss}

  return Task(build=lambda r: MLP(d.dim, d.hidden, d.dim, rngs=r), loss_fn=loss_fn,
              make_data=lambda: make_data(config, int(config.seed)), frozen=target)
