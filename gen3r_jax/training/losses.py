"""Stage-1 loss terms exactly as the official code computes them (``train_geo_adapter_pl.py``,
``gen3r/utils/loss_utils.py``, diffusers ``DiagonalGaussianDistribution.kl``), channels-last.

Every function is a pure, traceable function of arrays; reductions, clamps and NaN fixes follow the reference
(see ``shared/docs/training-reference.md`` §2.4-2.5):

* :func:`smooth_l1` - ``torch.nn.functional.smooth_l1_loss`` elementwise.
* :func:`camera_loss` - ``compute_camera_loss`` (L1, all refinement iterations, ``gamma ** (n - 1 - i)``).
* :func:`regression_loss` - ``compute_depth_loss`` / ``compute_point_loss`` (per-pixel Euclidean norm, not
  squared; NaN -> 0; clamp to 100; mean).
* :func:`cosine_similarity` - ``torch.nn.functional.cosine_similarity`` (norms clamped at ``eps`` separately).
* :func:`kl_to` - ``posterior.kl(other)``: summed over (C, T, H) only, leaving ``[B, W]``.
* :func:`adaptive_weight` - ``calculate_adaptive_weight``: a power of ten, no gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

HARD_MAX = 100.0


@dataclasses.dataclass(frozen=True)
class Stage1LossConfig:
  """Loss weights (argparse defaults of the release; the class defaults 1/1/1 are overridden there)."""
  recon_loss_weight: float = 0.5
  similarity_loss_weight: float = 0.1
  align_kl_loss_weight: float = 2.0
  camera_loss_in_recon: float = 10.0
  depth_loss_in_recon: float = 2.0
  point_loss_in_recon: float = 1.0
  image_token_smooth_l1_beta: float = 0.15
  camera_token_smooth_l1_beta: float = 0.1
  kl_adaptive_extra_factor: float = 0.1
  camera_gamma: float = 0.6
  weight_trans: float = 1.0
  weight_rot: float = 1.0
  weight_focal: float = 0.5
  depth_point_hard_max: float = HARD_MAX

  @classmethod
  def from_fixture(cls, cfg: dict) -> "Stage1LossConfig":
    """From a fixture config (``loss_weights``, ``camera_loss``, ``depth_point_loss`` blocks)."""
    lw = dict(cfg.get("loss_weights", {}))
    cam = dict(cfg.get("camera_loss", {}))
    dp = dict(cfg.get("depth_point_loss", {}))
    if cam.get("loss_type", "l1") != "l1":
      raise ValueError(f"only the L1 camera loss (official) is implemented, got {cam['loss_type']!r}")
    if dp.get("power", False) or dp.get("valid_range", -1) > 0:
      raise ValueError("only power=False and valid_range<=0 (official stage 1) are implemented")
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: float(v) for k, v in lw.items() if k in names}
    kw.update(camera_gamma=float(cam.get("gamma", 0.6)), weight_trans=float(cam.get("weight_trans", 1.0)),
              weight_rot=float(cam.get("weight_rot", 1.0)), weight_focal=float(cam.get("weight_focal", 0.5)),
              depth_point_hard_max=float(dp.get("per_pixel_hard_max", HARD_MAX)))
    return cls(**kw)


def fix_inf_nan(x: jax.Array, hard_max: float | None = HARD_MAX) -> jax.Array:
  """``check_and_fix_inf_nan``: NaN/Inf -> 0, then clamp to ``[-hard_max, hard_max]`` (``None``: no clamp)."""
  x = jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))
  return x if hard_max is None else jnp.clip(x, -hard_max, hard_max)


def smooth_l1(pred: jax.Array, target: jax.Array, beta: float) -> jax.Array:
  """Elementwise smooth-L1 (``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - 0.5 beta``)."""
  d = pred.astype(jnp.float32) - target.astype(jnp.float32)
  a = jnp.abs(d)
  return jnp.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)


def safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
  """Euclidean norm over ``axis`` whose gradient at 0 is 0 (as ``torch.norm``'s backward), not NaN."""
  sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axis)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def camera_loss(pred: jax.Array, gt: jax.Array, cfg: Stage1LossConfig = Stage1LossConfig()) -> jax.Array:
  """``compute_camera_loss(loss_type="l1")`` on pose encodings ``[iters, B, S, 9]`` (T 3 | quat 4 | FoV 2)."""
  n = pred.shape[0]
  tot_t = tot_r = tot_f = 0.0
  for i in range(n):
    w = cfg.camera_gamma ** (n - i - 1)
    d = jnp.abs(pred[i].astype(jnp.float32) - gt[i].astype(jnp.float32))
    lt = jnp.minimum(fix_inf_nan(d[..., :3]), 100.0).mean()
    lr = fix_inf_nan(d[..., 3:7]).mean()
    lf = fix_inf_nan(d[..., 7:]).mean()
    tot_t, tot_r, tot_f = tot_t + lt * w, tot_r + lr * w, tot_f + lf * w
  return (tot_t / n) * cfg.weight_trans + (tot_r / n) * cfg.weight_rot + (tot_f / n) * cfg.weight_focal


def regression_loss(pred: jax.Array, gt: jax.Array, hard_max: float = HARD_MAX) -> jax.Array:
  """``compute_depth_loss`` / ``compute_point_loss`` (power False, valid_range -1, no conf): ``[B, S, H, W, C]``
  -> mean over pixels of ``min(||gt - pred||, hard_max)`` (NaN -> 0)."""
  per_pixel = safe_norm(gt.astype(jnp.float32) - pred.astype(jnp.float32), axis=-1)
  per_pixel = fix_inf_nan(per_pixel, hard_max)   # loss_reg
  per_pixel = fix_inf_nan(per_pixel, hard_max)   # loss_reg_depth (second pass, identity after the first)
  return per_pixel.mean()


def cosine_similarity(x: jax.Array, y: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  """``torch.nn.functional.cosine_similarity``: ``x.y / (max(||x||, eps) * max(||y||, eps))``."""
  x, y = x.astype(jnp.float32), y.astype(jnp.float32)
  nx = jnp.maximum(safe_norm(x, axis), eps)
  ny = jnp.maximum(safe_norm(y, axis), eps)
  return jnp.sum(x * y, axis=axis) / (nx * ny)


def gaussian_parts(parameters: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``[..., 2z]`` = ``[mean | raw logvar]`` -> (mean, logvar clamped to [-30, 20]) in float32."""
  mean, logvar = jnp.split(parameters.astype(jnp.float32), 2, axis=-1)
  return mean, jnp.clip(logvar, -30.0, 20.0)


def kl_to(params_q: jax.Array, params_p: jax.Array) -> jax.Array:
  """diffusers ``q.kl(p)`` on channels-last posteriors ``[B, T, H, W, 2z]`` -> ``[B, W]``.

  diffusers sums over dims (1, 2, 3) of ``[B, C, T, H, W]``, i.e. (C, T, H) - the width axis survives.
  """
  mq, lq = gaussian_parts(params_q)
  mp, lp = gaussian_parts(params_p)
  vq, vp = jnp.exp(lq), jnp.exp(lp)
  el = jnp.square(mq - mp) / vp + vq / vp - 1.0 - lq + lp
  return 0.5 * jnp.sum(el, axis=(1, 2, 4))


def adaptive_weight(target: jax.Array, current: jax.Array) -> jax.Array:
  """``calculate_adaptive_weight(target, current)``: ``10 ** floor(log10(target / current))`` if
  ``current > target`` (``0.01`` if ``current == 0``), else 1. No gradient (a constant, as under no_grad)."""
  t = jax.lax.stop_gradient(target).astype(jnp.float32)
  c = jax.lax.stop_gradient(current).astype(jnp.float32)
  ratio = jnp.abs(t / jnp.where(c == 0, 1.0, c))
  n = jnp.floor(jnp.log10(ratio))
  # guard float32 log10 rounding next to exact powers of ten
  n = jnp.where(10.0 ** (n + 1) <= ratio, n + 1, n)
  n = jnp.where(10.0 ** n > ratio, n - 1, n)
  w = jnp.where(c == 0, 1e-2, 10.0 ** n)
  return jnp.where(c > t, w, 1.0)


def unbiased_std(x: jax.Array) -> jax.Array:
  """``torch.Tensor.std()`` over all elements (N - 1)."""
  x = x.astype(jnp.float32)
  n = x.size
  return jnp.sqrt(jnp.sum(jnp.square(x - x.mean())) / max(n - 1, 1))
