"""Stacked (scanned) repeated blocks: ``nnx.vmap`` at init, ``jax.lax.scan`` at call, a named remat policy.

    self.blocks = stack(lambda r: Block(cfg, rngs=r), cfg.num_layers, rngs)   # params [layers, ...]
    x = scan(self.blocks, lambda block, x: block(x, mask), x, remat=cfg.remat)

Every parameter of a stacked block gets the logical axis ``"layers"`` in front of its own axes, so the
converter fills it with one rule per layer (``index=i``) and the sharding rules see the layer axis.
The scan body rebuilds one layer from its slice of the stacked state (``nnx.merge``), so blocks stay plain
NNX modules that can also be called on their own.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
from flax import nnx

M = TypeVar("M", bound=nnx.Module)

# remat policy name -> jax.checkpoint policy ("none" = no rematerialisation)
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(name: str):
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat policy must be one of {sorted(REMAT_POLICIES)}, got {name!r}")
  return REMAT_POLICIES[name]


def stack(make: Callable[[nnx.Rngs], M], num: int, rngs: nnx.Rngs) -> M:
  """Build ``num`` independent copies of ``make(rngs)`` as one module whose parameters are ``[num, ...]``."""

  @nnx.split_rngs(splits=num)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def _make(r):
    return make(r)

  return _make(rngs)


def scan(stacked: M, body: Callable[[M, jax.Array], jax.Array], carry, *, remat: str = "none"):
  """Run ``carry = body(layer_i, carry)`` for every layer of a :func:`stack`-ed module, in order."""
  graphdef, state = nnx.split(stacked)

  def step(c, layer_state):
    return body(nnx.merge(graphdef, layer_state), c), None

  policy = remat_policy(remat)
  if remat != "none":
    step = jax.checkpoint(step, policy=policy, prevent_cse=False)
  carry, _ = jax.lax.scan(step, carry, state)
  return carry
