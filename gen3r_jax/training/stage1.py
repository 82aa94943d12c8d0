"""Stage 1: train the geometry adapter against frozen VGGT, frozen VGGT heads and the frozen Wan VAE.

One step, as ``GeometryAdapterTrainer.training_step`` (training-reference §2.2-2.5), channels-last:

```
frames [B, F, H, W, 3] in [0, 1] ─ NaN -> 0
  ├─ VGGT aggregator (no grad) ─► layers L_a..L_d + camera token of the last layer
  │     ─► target tokens V [B, F, 40, 40, 5D] = [L_a | L_b | L_c | L_d | camera token broadcast]
  └─ Wan VAE encode(clamp(2x - 1)) (no grad) ─► Wan posterior p
V ─► adapter encode ─► q ─► z = mu + exp(0.5 logvar) eps ─► adapter decode ─► V^
V^, V ─► 4-entry token lists ─► VGGT camera / depth / point heads (with grad on V^, none on V)
loss = 0.5 L_rec + 0.1 L_sim + 2.0 * (0.1 * a) * KL(q || p),  a = adaptive power of ten;  NaN -> 0
```

:func:`stage1_loss` is the pure, traceable step; :mod:`gen3r_jax.training.stage1_task` plugs it into the trainer
(:mod:`gen3r_jax.training.loop`): the adapter is the trainable module, VGGT and the Wan VAE are frozen.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.models.init import random_params
from gen3r_jax.models.vggt import VGGT
from gen3r_jax.models.wan_vae.vae import WanVAE
from gen3r_jax.parallel.rules import as_rules, state_shardings
from gen3r_jax.training import losses as L
from gen3r_jax.training.losses import Stage1LossConfig


class Frozen(nnx.Module):
  """The frozen modules of stage 1 (their parameters get no gradient and no optimiser state)."""

  def __init__(self, vggt, wan_vae):
    self.vggt = vggt
    self.wan_vae = wan_vae


def target_tokens(vggt, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Frozen VGGT tokens: ``frames [B, F, H, W, 3]`` -> (adapter input ``[B, F, h, w, 5D]``, camera token
  ``[B, F, D]`` of the last aggregator layer). ``D = 2 * embed_dim``; ``(h, w) = (H, W) / patch``."""
  cfg = vggt.cfg
  idx = tuple(cfg.intermediate_layer_idx)
  last = cfg.depth - 1
  layers = idx if last in idx else idx + (last,)
  toks = vggt.aggregator(frames, layers=layers)                            # [K, B, F, P, D]
  b, f, hh, ww, _ = frames.shape
  h, w = hh // cfg.patch_size, ww // cfg.patch_size
  ps = cfg.patch_start_idx
  cam = toks[layers.index(last), :, :, 0]                                  # [B, F, D]
  d = cam.shape[-1]
  grids = [toks[layers.index(i), :, :, ps:].reshape(b, f, h, w, d) for i in idx]
  grids.append(jnp.broadcast_to(cam[:, :, None, None], (b, f, h, w, d)))
  return jnp.concatenate(grids, axis=-1), cam


def head_token_list(image_tokens: jax.Array, cam_tokens: jax.Array, ps_idx: int) -> jax.Array:
  """``get_aggregated_token_list``: ``image_tokens [B, F, h, w, 4D]``, grid-averaged camera tokens ``[B, F, D]``
  -> ``[4, B, F, ps_idx + h*w, D]`` (prefix zeros in entries 0-2, the camera mean repeated in entry 3)."""
  b, f, h, w, d4 = image_tokens.shape
  d = d4 // 4
  pre_cam = jnp.broadcast_to(cam_tokens[:, :, None], (b, f, ps_idx, d)).astype(image_tokens.dtype)
  zeros = jnp.zeros_like(pre_cam)
  out = []
  for k in range(4):
    patch = image_tokens[..., k * d:(k + 1) * d].reshape(b, f, h * w, d)
    out.append(jnp.concatenate([pre_cam if k == 3 else zeros, patch], axis=2))
  return jnp.stack(out)


def _heads(vggt, token_list: jax.Array, image_hw: tuple[int, int]) -> dict[str, jax.Array]:
  out = vggt.heads(token_list, image_hw, camera=False)
  out["pose_enc_list"] = vggt.camera_head(token_list[-1])
  return out


def stage1_loss(adapter, frozen: Frozen, frames: jax.Array, eps: jax.Array,
                cfg: Stage1LossConfig = Stage1LossConfig(), *, with_intermediates: bool = False):
  """The official stage-1 loss.

  Args:
    adapter: the trainable :class:`GeometryAdapter`.
    frozen: VGGT and the Wan VAE.
    frames: ``[B, F, H, W, 3]`` in [0, 1] (``F = 1 + 4k``; ``H = W = 40 * patch``).
    eps: standard normal ``[B, f, 70, 70, z]`` for the posterior sample.
    cfg: weights.
    with_intermediates: also return the large tensors the parity fixture stores.

  Returns:
    ``(loss, metrics)`` or ``(loss, metrics, intermediates)``; ``metrics`` holds every scalar the official step
    logs (names as in the parity fixture).
  """
  vggt, wan = frozen.vggt, frozen.wan_vae
  frames = L.fix_inf_nan(frames.astype(jnp.float32), None)
  image_hw = tuple(frames.shape[2:4])
  # ---- frozen targets (no grad) ----
  target, _ = target_tokens(vggt, frames)
  target = jax.lax.stop_gradient(target).astype(jnp.float32)               # [B, F, h, w, 5D]
  wan_params = jax.lax.stop_gradient(wan.encode_params(jnp.clip(frames * 2 - 1, -1.0, 1.0))).astype(jnp.float32)
  d = target.shape[-1] // 5
  # ---- adapter ----
  q_params = adapter.encode_params(target).astype(jnp.float32)             # [B, f, 70, 70, 2z]
  mean, logvar = L.gaussian_parts(q_params)
  std = jnp.exp(0.5 * logvar)
  z = mean + std * eps.astype(jnp.float32)
  recon = adapter.decode_raw(z).astype(jnp.float32)                        # [B, F, h, w, 5D]
  rec_img, rec_cam = recon[..., :4 * d], recon[..., 4 * d:]
  tgt_img, tgt_cam = target[..., :4 * d], target[..., 4 * d:]
  rec_cam_mean = rec_cam.mean(axis=(2, 3))                                 # [B, F, D]
  tgt_cam_mean = tgt_cam.mean(axis=(2, 3))
  # ---- token losses ----
  image_token_loss = L.smooth_l1(rec_img, tgt_img, cfg.image_token_smooth_l1_beta).mean()
  camera_token_loss = L.smooth_l1(rec_cam_mean, tgt_cam_mean, cfg.camera_token_smooth_l1_beta).mean()
  # ---- geometry through the frozen heads ----
  ps = vggt.cfg.patch_start_idx
  rec_out = _heads(vggt, head_token_list(rec_img, rec_cam_mean, ps), image_hw)
  gt_out = jax.lax.stop_gradient(_heads(vggt, head_token_list(tgt_img, tgt_cam_mean, ps), image_hw))
  camera_loss = L.camera_loss(rec_out["pose_enc_list"], gt_out["pose_enc_list"], cfg)
  depth_loss = L.regression_loss(rec_out["depth"], gt_out["depth"], cfg.depth_point_hard_max)
  point_loss = L.regression_loss(rec_out["world_points"], gt_out["world_points"], cfg.depth_point_hard_max)
  recon_loss = (image_token_loss + camera_token_loss + cfg.camera_loss_in_recon * camera_loss
                + cfg.depth_loss_in_recon * depth_loss + cfg.point_loss_in_recon * point_loss)
  # ---- similarity ----
  img_cos = L.cosine_similarity(rec_img, tgt_img, axis=-1)                 # [B, F, h, w]
  cam_cos = L.cosine_similarity(rec_cam_mean, tgt_cam_mean, axis=-1)       # [B, F]
  image_similarity_loss = 1.0 - img_cos.mean()
  camera_similarity_loss = 1.0 - cam_cos.mean()
  similarity_loss = image_similarity_loss + camera_similarity_loss
  loss = cfg.recon_loss_weight * recon_loss + cfg.similarity_loss_weight * similarity_loss
  # ---- KL alignment to the Wan posterior ----
  kl_loss = L.kl_to(q_params, wan_params).mean()
  adaptive_target = cfg.recon_loss_weight * recon_loss
  kl_weight_raw = L.adaptive_weight(adaptive_target, kl_loss)
  kl_weight = kl_weight_raw * cfg.kl_adaptive_extra_factor
  align_loss = kl_weight * kl_loss
  loss = loss + cfg.align_kl_loss_weight * align_loss
  loss = L.fix_inf_nan(loss, None)
  wan_mean, wan_logvar = L.gaussian_parts(wan_params)
  sg = jax.lax.stop_gradient
  metrics = dict(
      loss=loss, image_token_loss=image_token_loss, camera_token_loss=camera_token_loss, camera_loss=camera_loss,
      depth_loss=depth_loss, point_loss=point_loss, recon_loss=recon_loss,
      recon_loss_weighted=cfg.recon_loss_weight * recon_loss, image_similarity_loss=image_similarity_loss,
      camera_similarity_loss=camera_similarity_loss, similarity_loss=similarity_loss, kl_loss=kl_loss,
      kl_weight_raw=kl_weight_raw, kl_weight=kl_weight, adaptive_target=adaptive_target,
      align_loss_weighted=cfg.align_kl_loss_weight * align_loss,
      log_mean=mean.mean(), log_mean_std=L.unbiased_std(mean), log_std=std.mean(),
      log_mean_wan=wan_mean.mean(), log_mean_std_wan=L.unbiased_std(wan_mean),
      log_std_wan=jnp.exp(0.5 * wan_logvar).mean())
  metrics = {k: sg(v).astype(jnp.float32) for k, v in metrics.items()}
  if not with_intermediates:
    return loss, metrics
  inter = dict(target_tokens=target, reconstructed_tokens=recon, adapter_posterior_parameters=q_params,
               wan_posterior_parameters=wan_params, z=z, pose_enc_recon=rec_out["pose_enc_list"],
               pose_enc_gt=gt_out["pose_enc_list"], depth_recon=rec_out["depth"], depth_gt=gt_out["depth"],
               point_recon=rec_out["world_points"], point_gt=gt_out["world_points"], image_cosine_map=img_cos,
               camera_cosine=cam_cos)
  return loss, metrics, jax.tree.map(sg, inter)


def latent_shape(adapter_cfg, frames_shape) -> tuple[int, ...]:
  """Shape of the posterior noise for frames ``[B, F, H, W, 3]``: ``[B, 1 + (F-1)/4, H/8, W/8, z]``."""
  b, f, hh, ww, _ = frames_shape
  return (b, 1 + (f - 1) // 4, hh // 8, ww // 8, adapter_cfg.z_dim)


def stage1_task_loss(adapter, frozen: Frozen, batch: dict, rng: jax.Array, cfg: Stage1LossConfig):
  """Trainer entry: draws the posterior noise from ``rng`` and returns ``(loss, metrics)``."""
  frames = batch["frames"]
  eps = jax.random.normal(rng, latent_shape(adapter.cfg, frames.shape), jnp.float32)
  return stage1_loss(adapter, frozen, frames, eps, cfg)


def random_on_mesh(cls, cfg, seed: int, mesh=None, rules=None):
  """A model of ``cls(cfg)`` with host-drawn random weights (:func:`gen3r_jax.models.init.random_params`: numpy, no
  jitted init program, which takes tens of seconds to compile on a small CPU), placed by its logical axes when
  ``mesh`` is given (``rules``: the sharding rules, default the library's). Same seed on every process:
  multi-process safe."""
  model = random_params(cls, cfg, seed=seed)
  if mesh is not None:
    state = nnx.state(model)
    host = jax.tree.map(np.asarray, state)
    nnx.update(model, jax.device_put(host, state_shardings(state, mesh, rules)))
  return model


def build_frozen(vggt_cfg, wan_cfg, *, mesh=None, seed: int = 0, vggt_checkpoint: str | None = None,
                 wan_checkpoint: str | None = None, overrides: dict | None = None, rules=None) -> Frozen:
  """VGGT and the Wan VAE from Orbax checkpoints (``launch/convert.py``; their stored config with
  ``overrides["vggt"]`` / ``overrides["wan_vae"]``, config field names) or, without one, seeded random weights
  drawn on the host (debug configs; :func:`random_on_mesh`). Parameters land directly on their shards when
  ``mesh`` is given, by ``rules`` (a :class:`~gen3r_jax.parallel.rules.Rules`, each model with its
  ``model_rules``; default the library's)."""
  rules, overrides = as_rules(rules), overrides or {}
  if vggt_checkpoint:
    vggt = VGGT.from_checkpoint(vggt_checkpoint, mesh=mesh, rules=rules.for_model("vggt"),
                                **overrides.get("vggt", {}))
  else:
    vggt = random_on_mesh(VGGT, vggt_cfg, seed, mesh, rules.for_model("vggt"))
  if wan_checkpoint:
    wan = WanVAE.from_checkpoint(wan_checkpoint, mesh=mesh, rules=rules.for_model("wan_vae"),
                                 **overrides.get("wan_vae", {}))
  else:
    wan = random_on_mesh(WanVAE, wan_cfg, seed + 1, mesh, rules.for_model("wan_vae"))
  return Frozen(vggt, wan)
