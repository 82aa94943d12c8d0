"""Stacked (scanned) repeated blocks: ``nnx.vmap`` at init, ``jax.lax.scan`` at call, a named remat policy.

    self.blocks = stack(lambda r: Block(cfg, rngs=r), cfg.num_layers, rngs)   # params [layers, ...]
    x = scan_layers(self.blocks, x, mask, remat=cfg.remat)                     # block(x, mask) per layer
    x = scan(self.blocks, lambda block, x: f(block(x, mask)), x, remat=cfg.remat)  # any body
    x, outs = scan(self.blocks, lambda block, x: (block(x), g(x)), x, collect=True)  # outs [layers, ...]
    x, kept = scan((self.a, self.b), body, x, collect=(3, 1))   # paired stacks; layers 3 and 1 only ([2, ...])

Every parameter of a stacked block gets the logical axis ``"layers"`` in front of its own axes, so the
converter fills it with one rule per layer (``index=i``) and the sharding rules see the layer axis.
The scan body rebuilds one layer from its slice of the stacked state (``nnx.merge``), so blocks stay plain
NNX modules that can also be called on their own. The whole scan step (body and any intermediate bookkeeping)
runs under ``jax.checkpoint`` with the named policy.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

M = TypeVar("M", bound=nnx.Module)

# The flash-attention forward primitives whose outputs (attention output + softmax statistics) the "attention"
# policy saves: cuDNN's (jax.nn.dot_product_attention) and FlashAttention-3's (flash_attn3_jax.flash_mha).
ATTENTION_RESIDUALS = ("dot_product_attention_fwd", "flash_mha_fwd")

# Names a block may tag with ``jax.ad_checkpoint.checkpoint_name`` for the "attention" policy: the rotated
# q/k/v, the attention output projections and the FFN output (each [B, L, D]-sized; the FFN hidden is not saved).
SAVED_NAMES = ("attn_q", "attn_k", "attn_v", "attn_proj", "cross_proj", "ffn_out")


# TPU splash attention's kernels are all the primitive ``pallas_call``; its forward is told apart by the kernel name
SPLASH_FORWARD = "splash_mha_fwd"


def _save_attention(prim, *_, **params) -> bool:
  """Save flash-attention forward outputs (so the backward never reruns the attention forward)."""
  if prim.name == "pallas_call":   # the kernel name: param "name" (jax 0.10) or "name_and_src_info.name" (older)
    info = params.get("name", params.get("name_and_src_info"))
    return str(getattr(info, "name", info) or "").startswith(SPLASH_FORWARD)
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


def scan(stacked: M | Sequence[M], body: Callable, carry, *, remat: str = "none",
         collect: bool | Sequence[int] = False):
  """Run ``carry = body(layer_i, carry)`` for every layer of a :func:`stack`-ed module, in order.

  ``stacked`` may be a tuple of stacked modules of the same depth (paired stacks, e.g. VGGT's frame / global
  blocks): ``body`` then gets the tuple of their ``i``-th layers. ``collect`` keeps per-layer outputs; ``body``
  then returns ``(carry, out)``:

  * ``True``: returns ``(carry, outs)`` with every layer's ``out`` stacked ``[layers, ...]``;
  * a sequence of distinct layer indices: returns ``(carry, kept)`` with those layers' outputs in that order
    ``[K, ...]``. They are written into a ``[K + 1, ...]`` carry buffer (the other layers write into the spare
    last slot), so memory stays at ``K + 1`` outputs; layers after the last requested one are not run.
  """
  paired = isinstance(stacked, (tuple, list))
  graphdefs, states = zip(*(nnx.split(m) for m in (stacked if paired else (stacked,))))

  def layers(layer_states):
    merged = tuple(nnx.merge(g, s) for g, s in zip(graphdefs, layer_states))
    return merged if paired else merged[0]

  if isinstance(collect, bool):
    def step(c, layer_states):
      out = body(layers(layer_states if paired else (layer_states,)), c)
      return out if collect else (out, None)

    carry, outs = jax.lax.scan(checkpointed(step, remat), carry, states if paired else states[0])
    return (carry, outs) if collect else carry
  return _scan_kept(layers, states, body, carry, tuple(collect), remat)


def _scan_kept(layers, states, body, carry, keep: tuple[int, ...], remat: str):
  """:func:`scan` keeping only the outputs of layers ``keep`` (a ``[K + 1, ...]`` buffer in the carry)."""
  depth = jax.tree.leaves(states)[0].shape[0]
  if not keep or min(keep) < 0 or max(keep) >= depth or len(set(keep)) != len(keep):
    raise ValueError(f"layers must be distinct indices in [0, {depth}), got {keep}")
  n = max(keep) + 1                                                     # later layers are never needed
  slot_of = np.full((n,), len(keep), np.int32)                          # spare slot K for unselected layers
  for k, i in enumerate(keep):
    slot_of[i] = k
  if n < depth:
    states = tuple(jax.tree.map(lambda a: a[:n], s) for s in states)
  one_layer = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), states)
  like = jax.eval_shape(lambda s, c: body(layers(s), c)[1], one_layer, carry)

  def step(c, xs):
    c, buf = c
    layer_states, slot = xs
    c, out = body(layers(layer_states), c)
    zero = jnp.zeros((), slot.dtype)                                    # indices of one dtype (x64-safe)
    buf = jax.lax.dynamic_update_slice(buf, out[None].astype(buf.dtype), (slot,) + (zero,) * out.ndim)
    return (c, buf), None

  buf = jnp.zeros((len(keep) + 1,) + like.shape, like.dtype)
  (carry, buf), _ = jax.lax.scan(checkpointed(step, remat), (carry, buf), (states, jnp.asarray(slot_of)))
  return carry, buf[:-1]


def scan_layers(stacked: M, x, *args: Any, remat: str = "none", **kwargs: Any):
  """``x = layer_i(x, *args, **kwargs)`` for every layer of a :func:`stack`-ed module (the same extra arguments
  for every call)."""
  return scan(stacked, lambda layer, h: layer(h, *args, **kwargs), x, remat=remat)
