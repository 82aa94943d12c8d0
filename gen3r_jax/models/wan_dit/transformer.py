"""Wan2.1-Fun Control-Camera i2v DiT (Gen3R's denoiser), Flax NNX.

``WanDiT(cfg, rngs=...)(x, t, context, clip_fea=..., y=..., y_camera=None)``

* ``x``: noisy latents ``[B, F, H, W, out_dim]``; ``y``: conditioning ``[B, F, H, W, in_dim - out_dim]``
  (Gen3R: 4 mask + 16 control-latent channels, in the official ``cat([x, y])`` order).
* ``t``: timesteps ``[B]`` (or a scalar); ``context``: umT5 tokens, a list of ``[L_i, text_dim]`` or one
  ``[B, L, text_dim]`` array, zero-padded to ``text_len`` and never masked; ``clip_fea``: ``[B, 257, 1280]``.
* ``y_camera``: Plücker camera latents ``[B, F, 8H, 8W, 24]`` or ``None`` (adapter skipped).

Returns the flow prediction ``[B, F, H, W, out_dim]`` in float32. A token grid with ``h != w`` (appearance |
geometry latents side by side along width) uses the width-shared "concatenated" RoPE, as the official code does.

Blocks are stacked with ``nnx.vmap`` at init (leading ``layers`` axis) and run with ``lax.scan`` over the split
block state under the remat policy ``cfg.remat``. Activations are constrained to the logical
``(act_batch, act_length, act_embed)`` at block boundaries when a mesh is active (``jax.set_mesh``), so the
sequence can be sharded without touching this file.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.nn.params import abstract_module

from gen3r_jax.models.checkpoint import CheckpointMixin
from gen3r_jax.models.config import dtype_of
from gen3r_jax.models.init import sharded_init
from gen3r_jax.models.wan_dit.blocks import DiTBlock, Head
from gen3r_jax.models.wan_dit.camera_adapter import CameraAdapter
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.embed import ImageEmbedding, TextEmbedding, TimeEmbedding
from gen3r_jax.models.wan_dit.inputs import batch_of, check_inputs, pad_text
from gen3r_jax.nn.linear import Conv
from gen3r_jax.nn.rope import rope_tables
from gen3r_jax.nn.stack import scan, stack
from gen3r_jax.parallel.rules import DEFAULT_RULES, constrain



def unpatchify(x: jax.Array, grid: tuple[int, int, int], patch, c: int) -> jax.Array:
  """``[B, f*h*w, p1*p2*p3*c] -> [B, f*p1, h*p2, w*p3, c]`` (official ``fhwpqrc -> cfphqwr``)."""
  b = x.shape[0]
  (f, h, w), (p1, p2, p3) = grid, patch
  x = x.reshape(b, f, h, w, p1, p2, p3, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, f * p1, h * p2, w * p3, c)


class WanDiT(CheckpointMixin, nnx.Module):
  """The i2v Control-Camera DiT (see the module docstring for the call signature)."""

  Config = WanDiTConfig

  def __init__(self, cfg: WanDiTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt, pd = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    self.patch_embedding = Conv(cfg.in_dim, cfg.dim, cfg.patch_size, strides=cfg.patch_size,
                                dtype=dt, param_dtype=pd, rngs=rngs)
    self.control_adapter = CameraAdapter(cfg, rngs=rngs) if cfg.add_control_adapter else None
    self.text_embedding = TextEmbedding(cfg, rngs=rngs)
    self.time_embedding = TimeEmbedding(cfg, rngs=rngs)
    self.img_emb = ImageEmbedding(cfg, rngs=rngs)
    self.blocks = stack(lambda r: DiTBlock(cfg, rngs=r), cfg.num_layers, rngs)
    self.head = Head(cfg, rngs=rngs)

  def __call__(self, x, t, context, clip_fea=None, y=None, y_camera=None) -> jax.Array:
    return self.forward(x, t, context, clip_fea=clip_fea, y=y, y_camera=y_camera)[0]

  def forward(self, x, t, context, *, clip_fea=None, y=None, y_camera=None, intermediates: bool = False):
    """``(out, extras)``; with ``intermediates`` ``extras`` holds the embeddings and every block's output."""
    cfg = self.cfg
    check_inputs(cfg, x, t, clip_fea, y, y_camera, batch_of(context))
    context = pad_text(context, cfg)                                   # [B, text_len, text_dim]
    dt = dtype_of(cfg.dtype)
    b = x.shape[0]
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32).reshape(-1), (b,))
    extras = {}

    tok = self.patch_embedding(jnp.concatenate([x, y], axis=-1).astype(dt))  # [B, f, h, w, D]
    extras["patch_embedding_out"] = tok
    if y_camera is not None:
      cam = self.control_adapter(y_camera.astype(dt))                  # [B, f, h, w, D]
      extras["control_adapter_out"] = cam
      tok = tok + cam
    _, f, h, w, d = tok.shape
    xs = constrain(tok.reshape(b, f * h * w, d).astype(jnp.float32))    # [B, L, D] f-major, then h, w

    e, e0 = self.time_embedding(t)                                     # [B, D], [B, 6, D]
    txt = self.text_embedding(context.astype(dt))                      # [B, text_len, D]
    img = self.img_emb(clip_fea.astype(dt))                            # [B, 257, D]
    extras.update(time_embedding_out=e, time_projection_out=e0.reshape(b, 6 * d),
                  text_embedding_out=txt, img_emb_out=img)

    rope = rope_tables((f, h, w), cfg.head_dim, concatenated=h != w, theta=cfg.rope_theta)
    xs, per_block = self.run_blocks(xs, e0, rope, txt, img, collect=intermediates)
    if intermediates:
      extras["blocks_out"] = per_block                                 # [layers, B, L, D]
    out = self.head(xs, e)                                             # [B, L, p*p*p*C]
    out = unpatchify(out, (f, h, w), cfg.patch_size, cfg.out_dim)      # [B, F, H, W, C]
    return out, (extras if intermediates else {})

  def run_blocks(self, x, e0, rope, txt, img, *, collect: bool = False):
    """Scan the stacked blocks over ``x [B, L, D]`` (float32); optionally return every block's output."""
    graphdef, state = nnx.split(self.blocks)
    return scan_blocks(graphdef, state, x, e0, rope, txt, img, remat=self.cfg.remat, collect=collect)


def scan_blocks(graphdef, state, x, e0, rope, txt, img, *, remat: str = "none", collect: bool = False):
  """:func:`gen3r_jax.nn.stack.scan` of one block over the layer axis of the split stacked-block ``state``.

  Returns ``(x [B, L, D], per_block [layers, B, L, D] or None)``. ``remat`` names a policy of
  :data:`gen3r_jax.nn.stack.REMAT_POLICIES`; activations are constrained to ``(act_batch, act_length, act_embed)``
  after every block.
  """
  def body(blk, carry):
    out = constrain(blk(carry, e0, rope, txt, img))
    return (out, out) if collect else out

  out = scan(nnx.merge(graphdef, state), body, x, remat=remat, collect=collect)
  return out if collect else (out, None)


def abstract_model(cfg: WanDiTConfig) -> WanDiT:
  """The model with ``ShapeDtypeStruct`` parameters (nothing allocated): fill it with ``load_torch_weights``."""
  return abstract_module(lambda: WanDiT(cfg, rngs=nnx.Rngs(0)))


def create(cfg: WanDiTConfig, *, seed: int = 0, mesh=None, rules=DEFAULT_RULES,
           rng_impl: str | None = None) -> WanDiT:
  """Random-init model from one jitted init whose outputs land straight on their shards (``mesh``) or on the
  default device (:func:`gen3r_jax.models.init.sharded_init`; ``rng_impl="rbg"`` compiles much faster)."""
  return sharded_init(lambda r: WanDiT(cfg, rngs=r), seed=seed, mesh=mesh, rules=rules, rng_impl=rng_impl)
