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
block state under the remat policy ``cfg.remat``. Activations are constrained to ``(batch, length, embed)`` at
block boundaries when a mesh is active (``jax.set_mesh``), so the sequence can be sharded
without touching this file.
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
    xs, cond, extras = self.embed(x, t, context, clip_fea=clip_fea, y=y, y_camera=y_camera)
    grid = self.token_grid(x.shape)
    xs, per_block = self.run_blocks(xs, cond, grid, collect=intermediates)
    if intermediates:
      extras["blocks_out"] = per_block                                 # [layers, B, L, D]
    return self.output(xs, cond, grid), (extras if intermediates else {})

  def token_grid(self, latent_shape) -> tuple[int, int, int]:
    """``(f, h, w)`` tokens of latents ``[B, F, H, W, C]`` (the patch grid)."""
    pt, ph, pw = self.cfg.patch_size
    return latent_shape[1] // pt, latent_shape[2] // ph, latent_shape[3] // pw

  def embed(self, x, t, context, *, clip_fea=None, y=None, y_camera=None):
    """Everything before the blocks: ``(tokens [B, L, D] float32, cond, extras)``; ``cond`` holds the time
    embedding ``e [B, D]``, its projection ``e0 [B, 6, D]`` and the text / image tokens ``txt`` / ``img``
    (what every block and the head read; a step cache passes it between programs)."""
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
    return xs, {"e": e, "e0": e0, "txt": txt, "img": img}, extras

  def run_blocks(self, x, cond, grid, *, start: int = 0, stop: int | None = None, collect: bool = False):
    """Scan blocks ``start:stop`` (default: all) over ``x [B, L, D]`` (float32); ``cond`` from :meth:`embed`,
    ``grid`` the token grid. Returns ``(x, per_block [layers, B, L, D] or None)``."""
    f, h, w = grid
    rope = rope_tables((f, h, w), self.cfg.head_dim, concatenated=h != w, theta=self.cfg.rope_theta)
    graphdef, state = nnx.split(self.blocks)
    if (start, stop) != (0, None):
      state = jax.tree.map(lambda a: a[start:stop], state)
    return scan_blocks(graphdef, state, x, cond["e0"], rope, cond["txt"], cond["img"], remat=self.cfg.remat,
                       collect=collect)

  def output(self, x, cond, grid) -> jax.Array:
    """The head on the last block's output ``[B, L, D]`` -> flow prediction ``[B, F, H, W, out_dim]`` float32."""
    out = self.head(x, cond["e"])                                      # [B, L, p*p*p*C]
    return unpatchify(out, grid, self.cfg.patch_size, self.cfg.out_dim)  # [B, F, H, W, C]


def scan_blocks(graphdef, state, x, e0, rope, txt, img, *, remat: str = "none", collect: bool = False):
  """:func:`gen3r_jax.nn.stack.scan` of one block over the layer axis of the split stacked-block ``state``.

  Returns ``(x [B, L, D], per_block [layers, B, L, D] or None)``. ``remat`` names a policy of
  :data:`gen3r_jax.nn.stack.REMAT_POLICIES`; activations are constrained to ``(batch, length, embed)`` after every block.
  """
  def body(blk, carry):
    out = constrain(blk(carry, e0, rope, txt, img))
    return (out, out) if collect else out

  out = scan(nnx.merge(graphdef, state), body, x, remat=remat, collect=collect)
  return out if collect else (out, None)


def abstract_model(cfg: WanDiTConfig) -> WanDiT:
  """The model with ``ShapeDtypeStruct`` parameters (nothing allocated): fill it with ``load_torch_weights``."""
  return abstract_module(lambda: WanDiT(cfg, rngs=nnx.Rngs(0)))


def with_config(model: WanDiT, **changes) -> WanDiT:
  """The same parameters (shared, not copied) under a config with ``changes`` that add or drop no parameter,
  e.g. ``with_config(dit, gemm="fp8")``: the static structure of a model built for the new config, merged with
  ``model``'s state."""
  graphdef, _ = nnx.split(abstract_model(model.cfg.replace(**changes)))
  return nnx.merge(graphdef, nnx.state(model))


def create(cfg: WanDiTConfig, *, seed: int = 0, mesh=None, rules=DEFAULT_RULES,
           rng_impl: str | None = None) -> WanDiT:
  """Random-init model from one jitted init whose outputs land straight on their shards (``mesh``) or on the
  default device (:func:`gen3r_jax.models.init.sharded_init`; ``rng_impl="rbg"`` compiles much faster)."""
  return sharded_init(lambda r: WanDiT(cfg, rngs=r), seed=seed, mesh=mesh, rules=rules, rng_impl=rng_impl)
