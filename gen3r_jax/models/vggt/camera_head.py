"""VGGT camera head: iterative refinement of the pose encoding ``[T (3), quaternion XYZW (4), FoV h/w (2)]``.

Reads the camera token (index 0) of the last kept layer ``[B, S, P, 2C]``, LayerNorms it, then per iteration:
``x = gate * (adaln(tok) * (1 + scale) + shift) + tok`` with ``(shift, scale, gate)`` from
``SiLU -> Linear(embed_pose(previous raw prediction or the learned empty pose))``; the trunk (plain blocks,
attention across the S frames) runs on ``x``; ``delta = pose_branch(trunk_norm(x))`` accumulates into the raw
prediction, and the activated copy (T linear, quat linear, FoV relu) of each iteration is returned. The trunk
input is rebuilt from the original normalised camera tokens every iteration.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.models.config import dtype_of
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.vggt.layers import Block, Mlp
from gen3r_jax.nn.linear import Dense
from gen3r_jax.nn.norms import LayerNorm, layer_norm
from gen3r_jax.nn.params import make_param, zeros_init
from gen3r_jax.nn.stack import scan_layers, stack

POSE_DIM = 9


def base_act(x: jax.Array, kind: str) -> jax.Array:
  if kind == "linear":
    return x
  if kind == "inv_log":
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))
  if kind == "exp":
    return jnp.exp(x)
  if kind == "relu":
    return jax.nn.relu(x)
  raise ValueError(f"unknown pose activation {kind!r}")


def activate_pose(enc: jax.Array, trans_act: str, quat_act: str, fl_act: str) -> jax.Array:
  return jnp.concatenate([base_act(enc[..., :3], trans_act), base_act(enc[..., 3:7], quat_act),
                          base_act(enc[..., 7:], fl_act)], axis=-1)


class CameraHead(nnx.Module):
  def __init__(self, cfg: VGGTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d = 2 * cfg.embed_dim
    dtype, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    kw = dict(dtype=dtype, param_dtype=pdt)
    self.trunk = stack(lambda r: Block(
        d, cfg.camera_num_heads, mlp_ratio=cfg.camera_mlp_ratio, norm_eps=1e-5,
        init_values=cfg.camera_init_values, impl=cfg.attention, rngs=r, **kw), cfg.camera_trunk_depth, rngs)
    self.token_norm = LayerNorm(d, eps=1e-5, rngs=rngs, param_dtype=pdt)
    self.trunk_norm = LayerNorm(d, eps=1e-5, rngs=rngs, param_dtype=pdt)
    self.empty_pose_tokens = make_param(rngs, zeros_init, (POSE_DIM,), (None,), pdt)       # [9]
    self.embed_pose = Dense(POSE_DIM, d, axes=(None, "embed"), rngs=rngs, **kw)
    self.pose_ln_modulation = Dense(d, 3 * d, axes=("embed", "mlp"), rngs=rngs, **kw)
    self.pose_branch = Mlp(d, d // 2, POSE_DIM, rngs=rngs, **kw)

  def __call__(self, last_tokens: jax.Array, num_iterations: int | None = None) -> jax.Array:
    """``last_tokens [B, S, P, 2C]`` (the last kept layer) -> activated encodings ``[iters, B, S, 9]``."""
    cfg = self.cfg
    iters = cfg.camera_iterations if num_iterations is None else num_iterations
    dtype = dtype_of(cfg.dtype)
    tok = self.token_norm(last_tokens[:, :, 0].astype(dtype))                # [B, S, 2C]
    b, s, d = tok.shape
    normed = layer_norm(tok, None, None, 1e-6)                               # adaln_norm (no affine)
    pred = None
    outs = []
    for _ in range(iters):
      if pred is None:
        inp = jnp.broadcast_to(self.empty_pose_tokens[...], (b, s, POSE_DIM))
      else:
        # The official trunk detaches the running prediction itself (``pred = pred.detach()``), so iteration k
        # gets gradient only through its own delta: same forward values, the official training gradient.
        pred = jax.lax.stop_gradient(pred)
        inp = pred
      mod = self.pose_ln_modulation(jax.nn.silu(self.embed_pose(inp.astype(dtype))))
      shift, scale, gate = jnp.split(mod, 3, axis=-1)
      x = gate * (normed * (1 + scale) + shift) + tok
      x = scan_layers(self.trunk, x, remat=cfg.remat)
      delta = self.pose_branch(self.trunk_norm(x)).astype(jnp.float32)      # [B, S, 9]
      pred = delta if pred is None else pred + delta
      outs.append(activate_pose(pred, cfg.trans_act, cfg.quat_act, cfg.fl_act))
    return jnp.stack(outs)
