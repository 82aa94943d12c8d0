"""Input checks and text padding for the Wan DiT (all on static shapes: they raise before anything is traced)."""

from __future__ import annotations

import jax.numpy as jnp

from gen3r_jax.errors import check_array, require


def pad_text(context, cfg) -> jnp.ndarray:
  """Zero-pad prompts to ``cfg.text_len`` rows (never masked later): ``[B, text_len, text_dim]``.

  ``context`` is either a list of ``[L_i, text_dim]`` arrays (the official API, one per batch row) or one
  ``[B, L, text_dim]`` array; every ``L_i`` must be ``<= text_len``.
  """
  rows = list(context) if isinstance(context, (list, tuple)) else None
  if rows is None:
    check_array(context, "context", ndim=3, layout="[B, L, text_dim]", floating=True,
                dims={2: cfg.text_dim})
    rows_len = [context.shape[1]]
  else:
    require(len(rows) > 0, "context: got an empty list; pass one [L, text_dim] text embedding per batch row")
    for i, r in enumerate(rows):
      check_array(r, f"context[{i}]", ndim=2, layout="[L, text_dim]", floating=True, dims={1: cfg.text_dim})
    rows_len = [r.shape[0] for r in rows]
  longest = max(rows_len)
  require(longest <= cfg.text_len,
          f"context: text has {longest} tokens but the DiT takes at most text_len={cfg.text_len}; truncate the "
          f"umT5 output to its first {cfg.text_len} tokens (the official tokenizer does) before calling the DiT")
  if rows is None:
    return jnp.pad(context, ((0, 0), (0, cfg.text_len - context.shape[1]), (0, 0)))
  return jnp.stack([jnp.pad(jnp.asarray(r), ((0, cfg.text_len - r.shape[0]), (0, 0))) for r in rows])


def check_inputs(cfg, x, t, clip_fea, y, y_camera, batch_context: int) -> None:
  """Validate the DiT inputs (channels-last latents) against ``cfg``; raises :class:`Gen3RInputError`."""
  check_array(x, "x (noisy latents)", ndim=5, layout="[B, F, H, W, C]", floating=True)
  b, f, h, w, c = x.shape
  require(c == cfg.out_dim,
          f"x (noisy latents): expected {cfg.out_dim} latent channels on the last axis of [B, F, H, W, C], got "
          f"shape {tuple(x.shape)}; pass channels-last latents (transpose PyTorch B C F H W with "
          f"x.transpose(0, 2, 3, 4, 1))")
  pt, ph, pw = cfg.patch_size
  require(h % ph == 0 and w % pw == 0 and f % pt == 0,
          f"x (noisy latents): latent frames/height/width {(f, h, w)} must be multiples of the patch size "
          f"{tuple(cfg.patch_size)} (latent height and width must be even); crop or resize the video so that "
          f"its pixel height and width are multiples of {8 * ph}")
  gf, gh, gw = f // pt, h // ph, w // pw
  require(gh == gw or gw % 2 == 0,
          f"x (noisy latents): a non-square token grid {(gf, gh, gw)} uses the side-by-side (appearance | "
          f"geometry) RoPE, which needs an even token-grid width; make the latent width a multiple of {2 * pw}")
  require(max(gf, gh, gw) <= cfg.rope_max_len,
          f"x (noisy latents): token grid {(gf, gh, gw)} exceeds the RoPE table ({cfg.rope_max_len} positions "
          "per axis); use fewer frames or a smaller resolution")
  require(y is not None,
          f"y: the i2v DiT needs conditioning latents y [B, F, H, W, {cfg.cond_dim}] (mask + control latents)")
  check_array(y, "y (conditioning latents)", ndim=5, layout="[B, F, H, W, C]", floating=True)
  require(tuple(y.shape) == (b, f, h, w, cfg.cond_dim),
          f"y (conditioning latents): expected shape {(b, f, h, w, cfg.cond_dim)} (in_dim {cfg.in_dim} - "
          f"{cfg.out_dim} noisy channels, same B, F, H, W as x), got {tuple(y.shape)}")
  require(clip_fea is not None,
          f"clip_fea: the i2v DiT needs the CLIP image tokens [B, {cfg.clip_tokens}, {cfg.clip_dim}] (CLIP "
          "ViT-H penultimate features of the first frame); run the CLIP encoder on the reference image")
  check_array(clip_fea, "clip_fea", ndim=3, layout=f"[B, {cfg.clip_tokens}, {cfg.clip_dim}]", floating=True,
              dims={0: b, 1: cfg.clip_tokens, 2: cfg.clip_dim})
  t_shape = tuple(getattr(t, "shape", ()))
  require(t_shape in ((), (1,), (b,)),
          f"t: expected a scalar or [B]={b} timesteps, got shape {t_shape}")
  require(batch_context == b, f"context: {batch_context} text rows for a batch of {b}; pass one per row")
  if y_camera is None:
    return
  require(cfg.add_control_adapter,
          "y_camera: this DiT has no camera control adapter (add_control_adapter=False); pass y_camera=None")
  r = 2 * cfg.control_unshuffle
  want = (b, f, gh * r, gw * r, cfg.in_dim_control_adapter)
  check_array(y_camera, "y_camera", ndim=5, layout="[B, F, Hpix, Wpix, 24]", floating=True)
  require(tuple(y_camera.shape) == want,
          f"y_camera: expected Plücker camera latents of shape {want} ([B, F, 8*H, 8*W, "
          f"{cfg.in_dim_control_adapter}] for latents {tuple(x.shape)}), got {tuple(y_camera.shape)}")


def batch_of(context) -> int:
  return len(context) if isinstance(context, (list, tuple)) else int(context.shape[0])

