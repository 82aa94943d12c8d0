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

# The flash-attention forward primitives whose outputs (attention output + softmax statistics) the "attention"
# policy saves: cuDNN's (jax.nn.dot_product_attention) and FlashAttention-3's (flash_attn3_jax.flash_mha).
ATTENTION_RESIDUALS = ("dot_product_attention_fwd", "flash_mha_fwd")

# Names a block may tag with ``jax.ad_checkpoint.checkpoint_name`` for the "attention" policy: the rotated
# q/k/v, the attention output projections and the FFN output (each [B, L, D]-sized; the FFN hidden is not saved).
SAVED_NAMES = ("attn_q", "attn_k", "attn_v", "attn_proj", "cross_proj", "ffn_out")


def _save_attention(prim, *_, **__) -> bool:
  """Save flash-attention forward outputs (so the backward never reruns the attention forward)."""
  return any(prim.name.startswith(n) for n in ATTENTION_RESIDUALS)


# remat policy name -> jax.checkpoint policy ("none" = no rematerialisation)
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # the flash-attention residuals + the tagged q/k/v and projection outputs: the backward recomputes only
    # norms, modulation and the FFN's first matmul (what "dots" saves, minus the FFN hidden and the small GEMMs)
    "attention": jax.checkpoint_policies.save_from_both_policies(
        _save_attention, jax.checkpoint_policies.save_only_these_names(*SAVED_NAMES)),
}


def remat_policy(name: str):
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat policy must be one of {sorted(REMAT_POLICIES)}, got {name!r}")
  return REMAT_POLICIES[name]


def checkpointed(fn: Callable, remat: str) -> Callable:
  """``fn`` under ``jax.checkpoint`` with the named policy (``fn`` itself for ``"none"``)."""
  policy = remat_policy(remat)
  if remat == "none":
    return fn
  return jax.checkpoint(fn, policy=policy, prevent_cse=False)


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

  carry, _ = jax.lax.scan(checkpointed(step, remat), carry, state)
  return carry
