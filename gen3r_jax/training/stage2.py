"""Stage 2: train the Gen3R DiT with flow matching on joint appearance | geometry latents (``train_dit.py``,
training-reference §3), channels-last.

```
frames [B, F, H, W, 3] in [0, 1]   (or pre-encoded posteriors, see below)
  ├─ clean:   VGGT tokens ─► adapter posterior ─┐ samples (eps[:, 0] adapter, eps[:, 1] Wan)
  │           Wan VAE(2x - 1) posterior ────────┴► x0 [B, f, h, 2w, 16] = [Wan | adapter] along width
  ├─ control: frames of the example's mode (others 0) ─► same encode (eps[:, 2:4]) ─► [Wan | adapter or 0]
  │           + masks [B, f, h, 2w, 4] (1 on the appearance half of the selected frames) ─► y [.., 20]
  ├─ CLIP:    first control frame (uint8-truncated, [-1, 1]) ─► clip_fea [B, 257, Dc]
  └─ text:    umT5 tokens (zero rows past the caption length), or the empty caption where dropped
c2ws, Ks ─► Plücker [B, F, H, W, 6] ─► camera latents [B, f, H, 2W, 24], zeros where the camera is dropped
t_index ─► (t, sigma) of FlowMatchEulerDiscreteScheduler(1000, shift 2)
x_t = (1 - sigma) x0 + sigma noise;  target = noise - x0;  pred = DiT(x_t, t, context, clip_fea, y, y_camera)
loss = mean((pred - target)^2 * [|pred - target| <= loss_clip])     (all elements, both halves, all frames)
```

Random choices per example (:func:`draw_choices`): the condition mode (``u < 1/3`` first frame, ``u > 2/3`` first
and last frames, else all frames), the caption drop (``u < text_drop_prob``), the camera drop
(``u < camera_drop_prob``) and the timestep index (uniform in ``[0, num_train_timesteps)``). Everything below
:func:`stage2_loss` is pure: draws (``choices``, ``eps``, ``noise``) are explicit arguments, which is how the
parity case injects the official scripted draws.

Batch formats of :func:`stage2_loss`:

* online: ``frames``, ``c2ws [B, F, 4, 4]``, ``Ks [B, F, 3, 3]`` and either ``context [B, L, Dt]`` (+ optional
  ``clip_fea [B, 257, Dc]``) or ``text_ids`` / ``text_mask [B, L]`` encoded by ``frozen.text_encoder``;
  without ``clip_fea`` CLIP runs on the first frame (``frozen.clip``).
* pre-encoded (:func:`encode_posteriors`): ``wan_mean``, ``wan_logvar``, ``geo_mean``, ``geo_logvar``
  ``[B, f, h, w, 16]`` of the clean clip and ``ctrl_{first,first_last}_{wan,geo}_{mean,logvar}`` of the two
  partial modes (mode ``all`` reuses the clean posterior: its control video is the clip itself), ``context``,
  ``clip_fea``, ``c2ws``, ``Ks``; the frame size is ``8 h x 8 w``. The posterior samples use the same ``eps``
  as online, so for one key both formats give the same loss.
* either may carry ``empty_context [L, Dt]`` (or ``[B, L, Dt]``): the dropped-caption encoding, replacing
  ``frozen.empty_context``.

Online, the clean and the control video go through one ``lax.map`` of the frozen encoders
(:func:`stacked_posterior_params`: one traced encoder, one video's activations at a time); pre-encoded batches
need no encoder at all (``Stage2Frozen(None, None, None, empty_context=...)``).

Official behaviours, and what this port does by default:

* Geometry condition: the official training encodes the masked control video through VGGT + the adapter, so
  the geometry half of ``y`` holds adapter latents of the selected frames (nearly the target in all-frames
  mode), while the paper and the inference pipeline use zeros there (training-reference §4, §5.1).
  ``geometry_condition="adapter"`` (default) reproduces training; ``"zeros"`` matches inference.
* Draws: the official mode / caption / camera draws come from Python ``random`` seeded identically on every
  rank, so all ranks draw the same sequence (§3.10); here each example of the global batch draws
  independently.
* Camera drop: official is ONE draw per micro-batch (the whole ``y_camera`` becomes zeros, not ``None``: the
  camera adapter still runs on zeros); ``camera_drop="batch"`` reproduces it (one draw for the global batch,
  which equals the official rank-identical draw), ``"example"`` (default) draws per example.
* Timesteps: under distributed training the official ``DiscreteSampling`` gives each rank group its own band of
  ``1000 / groups`` indices (stratified across devices, §3.6); here every example draws uniformly from all
  ``num_train_timesteps`` indices.
* Noise mixing: the official ``x_t`` and target are computed in bf16 with a bf16-rounded sigma while the model
  gets the float32 timestep; ``noise_dtype="bfloat16"`` reproduces it, ``"float32"`` (default) does not round.
"""

from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.errors import check_array, fmt_list, require
from gen3r_jax.models.wan_vae.vae import DiagonalGaussian, unit_to_vae_range
from gen3r_jax.sampling import conditioning as cond
from gen3r_jax.sampling.cameras import check_num_frames
from gen3r_jax.sampling.schedulers.schedules import shift_sigmas
from gen3r_jax.sampling.stages import encode_text
from gen3r_jax.training.stage1 import target_tokens


MODES = ("first", "all", "first_last")   # official draw u: u < 1/3 first, u > 2/3 first_last, else all
CAMERA_DROPS = ("example", "batch")
GEOMETRY_CONDITIONS = ("adapter", "zeros")
NOISE_DTYPES = ("float32", "bfloat16")
PARTIAL_MODES = ("first", "first_last")  # control posteriors a pre-encoded batch stores ("all" = the clean one)


@dataclasses.dataclass(frozen=True)
class Stage2Config:
  """Stage-2 loss settings (defaults: the release's values, per-example camera drop)."""
  num_train_timesteps: int = 1000
  shift: float = 2.0                   # training FlowMatchEulerDiscreteScheduler shift (gen3r.yaml)
  text_drop_prob: float = 0.2
  camera_drop_prob: float = 0.5
  camera_drop: str = "example"         # "example": one draw per example | "batch": one per batch (official)
  loss_clip: float = 50.0              # elements with |pred - target| > loss_clip get zero loss and gradient
  geometry_condition: str = "adapter"  # "adapter": official training | "zeros": paper / inference
  noise_dtype: str = "float32"         # "bfloat16": the official bf16 x_t / target mixing

  def validate(self) -> "Stage2Config":
    require(isinstance(self.num_train_timesteps, int) and self.num_train_timesteps >= 1,
            f"num_train_timesteps must be a positive integer (1000 in gen3r.yaml), got {self.num_train_timesteps!r}.")
    require(isinstance(self.shift, (int, float)) and np.isfinite(self.shift) and self.shift > 0,
            f"shift must be a finite number > 0 (2.0 in gen3r.yaml), got {self.shift!r}.")
    for name in ("text_drop_prob", "camera_drop_prob"):
      v = getattr(self, name)
      require(isinstance(v, (int, float)) and 0.0 <= v <= 1.0, f"{name} must be a probability in [0, 1], got {v!r}.")
    require(self.camera_drop in CAMERA_DROPS,
            f"camera_drop must be one of {fmt_list(CAMERA_DROPS)} (per example, or one draw per batch as the "
            f"official code), got {self.camera_drop!r}.")
    require(isinstance(self.loss_clip, (int, float)) and self.loss_clip > 0,
            f"loss_clip must be a number > 0 (50 officially), got {self.loss_clip!r}.")
    require(self.geometry_condition in GEOMETRY_CONDITIONS,
            f"geometry_condition must be one of {fmt_list(GEOMETRY_CONDITIONS)} ('adapter': official training, "
            f"'zeros': paper / inference), got {self.geometry_condition!r}.")
    require(self.noise_dtype in NOISE_DTYPES,
            f"noise_dtype must be one of {fmt_list(NOISE_DTYPES)}, got {self.noise_dtype!r}.")
    return self


class Buffer(nnx.Variable):
  """A non-trainable array held by a module (no gradient, no optimiser state)."""


class Stage2Frozen(nnx.Module):
  """The frozen modules of stage 2 and the empty-caption encoding ``empty_context [L, Dt]`` (zeros past its
  token count). ``text_encoder`` / ``clip`` may be ``None`` when batches come with ``context`` / ``clip_fea``."""

  def __init__(self, vggt, geo_adapter, wan_vae, *, text_encoder=None, clip=None, empty_context=None):
    self.vggt = vggt
    self.geo_adapter = geo_adapter
    self.wan_vae = wan_vae
    self.text_encoder = text_encoder
    self.clip = clip
    self.empty_context = None if empty_context is None else Buffer(jnp.asarray(empty_context, jnp.float32))


def empty_caption_context(tokenizer, text_encoder, max_length: int) -> jax.Array:
  """The umT5 encoding of ``""`` as the training loop builds it: ``[max_length, Dt]``, zeros past its length."""
  emb = encode_text(tokenizer, text_encoder, "", max_length)["embeds"]          # [len, Dt]
  return jnp.pad(emb.astype(jnp.float32), ((0, max_length - emb.shape[0]), (0, 0)))


# ---------------------------------------------------------------------------------------------- random choices
def _host(u) -> bool:
  return isinstance(u, (np.ndarray, np.floating, float))


def mode_from_uniform(u):
  """``train_dit.py``: ``u < 1/3`` -> first (0), ``u > 2/3`` -> first_last (2), else all (1). Host draws
  (numpy / Python floats) are compared in float64 as Python does."""
  xp = np if _host(u) else jnp
  u = np.asarray(u, np.float64) if _host(u) else u
  return xp.where(u < 1 / 3, MODES.index("first"), xp.where(u > 2 / 3, MODES.index("first_last"),
                                                            MODES.index("all")))


def choices_from_uniforms(u_mode, u_text, u_camera, t_index, cfg: Stage2Config) -> dict[str, jax.Array]:
  """The official thresholds applied to uniform draws ``u_mode``, ``u_text`` ``[B]`` and ``u_camera`` (``[B]``
  or one value for the batch); ``t_index [B]``."""
  lt = lambda u, p: (np.asarray(u, np.float64) < p) if _host(u) else (u < p)  # noqa: E731
  mode = jnp.asarray(mode_from_uniform(u_mode), jnp.int32)
  b = mode.shape[0]
  return dict(mode=mode, text_drop=jnp.asarray(lt(u_text, cfg.text_drop_prob), bool).reshape(b),
              camera_drop=jnp.broadcast_to(jnp.asarray(lt(u_camera, cfg.camera_drop_prob), bool), (b,)),
              t_index=jnp.asarray(t_index, jnp.int32).reshape(b))


def draw_choices(key, batch_size: int, cfg: Stage2Config) -> dict[str, jax.Array]:
  """Independent per-example draws: ``mode`` int32 ``[B]`` (index into :data:`MODES`), ``text_drop`` and
  ``camera_drop`` bool ``[B]`` (all equal when ``cfg.camera_drop == "batch"``), ``t_index`` int32 ``[B]``
  uniform in ``[0, num_train_timesteps)``."""
  km, kt, kc, ki = jax.random.split(key, 4)
  u_cam = jax.random.uniform(kc, (batch_size if cfg.camera_drop == "example" else 1,))
  t_index = jax.random.randint(ki, (batch_size,), 0, cfg.num_train_timesteps, jnp.int32)
  return choices_from_uniforms(jax.random.uniform(km, (batch_size,)), jax.random.uniform(kt, (batch_size,)),
                               u_cam, t_index, cfg)


def schedule_table(cfg: Stage2Config) -> tuple[np.ndarray, np.ndarray]:
  """``(scheduler.timesteps, scheduler.sigmas)`` ``[T]`` of the training scheduler, in float32 as diffusers
  computes them (``s = linspace(1, T, T)[::-1] / T``, shifted; ``timesteps = sigmas * T``)."""
  n = cfg.num_train_timesteps
  sigmas = shift_sigmas(np.linspace(1, n, n, dtype=np.float32)[::-1].copy() / np.float32(n), cfg.shift)
  return sigmas * np.float32(n), sigmas


def timesteps(t_index, cfg: Stage2Config) -> tuple[jax.Array, jax.Array]:
  """``(t, sigma)`` float32 ``[B]``: the model timestep ``scheduler.timesteps[i]`` and its sigma."""
  ts, sig = schedule_table(cfg)
  i = jnp.asarray(t_index, jnp.int32)
  return jnp.asarray(ts)[i], jnp.asarray(sig)[i]


# ------------------------------------------------------------------------------------------------ conditions
def selected_frames(mode, num_frames: int) -> jax.Array:
  """``[B, F]`` bool: the frames each example's mode conditions on (frame 0 always)."""
  mode = jnp.asarray(mode, jnp.int32)[:, None]
  idx = jnp.arange(num_frames)[None]
  return (idx == 0) | (mode == MODES.index("all")) | ((mode == MODES.index("first_last")) & (idx == num_frames - 1))


def control_frames(frames, mode) -> jax.Array:
  """``frames [B, F, H, W, 3]``: zeros except the selected frames of each example's mode."""
  sel = selected_frames(mode, frames.shape[1])
  return jnp.where(sel[:, :, None, None, None], frames, jnp.zeros((), frames.dtype))


def condition_masks(mode, num_frames: int, latent_hw) -> jax.Array:
  """``[B, f, h, 2w, 4]``: 1 on the appearance half of the selected frames (``latent_hw`` = one half)."""
  return cond.frame_masks(selected_frames(mode, num_frames), latent_hw)


def posterior_params(frozen, frames, *, geometry: bool = True, return_tokens: bool = False):
  """``(wan, geo)`` posterior parameters ``[B, f, h, w, 2z]`` = ``[mean | logvar]`` of ``frames`` (no grad);
  ``geo`` is ``None`` without ``geometry`` (VGGT and the adapter are skipped). ``return_tokens`` appends the
  VGGT token stack ``[B, F, 40, 40, 5D]`` the adapter encoded (``None`` without ``geometry``)."""
  sg = jax.lax.stop_gradient
  frames = jnp.asarray(frames, jnp.float32)
  wan = sg(frozen.wan_vae.encode_params(unit_to_vae_range(frames))).astype(jnp.float32)
  geo = tokens = None
  if geometry:
    tokens = sg(target_tokens(frozen.vggt, frames)[0])                          # [B, F, 40, 40, 5D]
    geo = sg(frozen.geo_adapter.encode_params(tokens)).astype(jnp.float32)
  return (wan, geo, tokens) if return_tokens else (wan, geo)


def stacked_posterior_params(frozen, videos, *, geometry: bool = True):
  """:func:`posterior_params` of ``videos [N, B, F, H, W, 3]`` one video at a time (``lax.map``: one traced
  encoder, the activation memory of one encode) -> ``(wan, geo)`` with a leading ``N`` axis."""
  graphdef, state = nnx.split(frozen)
  return jax.lax.map(lambda x: posterior_params(nnx.merge(graphdef, state), x, geometry=geometry), videos)


def _sample(params, eps) -> jax.Array:
  return DiagonalGaussian(params).sample(eps=eps.astype(jnp.float32)).astype(jnp.float32)


def joint_from_params(wan, geo, eps) -> jax.Array:
  """Posterior samples ``[B, f, h, 2w, 16]`` = ``[Wan | adapter]``; ``eps [B, 2, ...]`` (0 adapter, 1 Wan);
  ``geo=None`` gives zeros on the geometry half."""
  a = _sample(wan, eps[:, 1])
  g = jnp.zeros_like(a) if geo is None else _sample(geo, eps[:, 0])
  return jnp.concatenate([a, g], axis=3)


def joint_latents(frozen, frames, eps) -> jax.Array:
  """Clean joint latents: posterior SAMPLES ``[B, f, h, 2w, 16]`` = ``[Wan | adapter]`` of ``frames``."""
  return joint_from_params(*posterior_params(frozen, frames), eps)


def control_from_params(wan, geo, mode, num_frames: int, eps) -> jax.Array:
  """``[B, f, h, 2w, 20]`` = control latent samples + masks from the control posteriors."""
  x = joint_from_params(wan, geo, eps)
  return jnp.concatenate([x, condition_masks(mode, num_frames, wan.shape[2:4])], axis=-1)


def control_latents(frozen, frames, mode, eps, cfg: Stage2Config) -> jax.Array:
  """``[B, f, h, 2w, 20]``: the control video of each example's mode encoded like the clean one (16 latent
  channels; geometry half zeroed for ``geometry_condition == "zeros"``) + 4 mask channels."""
  geometry = cfg.geometry_condition == "adapter"
  wan, geo = posterior_params(frozen, control_frames(frames, mode), geometry=geometry)
  return control_from_params(wan, geo, mode, frames.shape[1], eps)


def camera_map(c2ws, Ks, height: int, width: int, drop) -> jax.Array:
  """Plücker camera latents ``[B, f, H, 2W, 24]`` (duplicated along width), zeros where ``drop [B]``."""
  b, f = c2ws.shape[:2]
  p = cond.plucker(jnp.reshape(c2ws, (b * f, 4, 4)), jnp.reshape(Ks, (b * f, 3, 3)), height, width)
  lat = cond.camera_latents(p.reshape(b, f, height, width, 6))
  return jnp.where(jnp.asarray(drop)[:, None, None, None, None], jnp.zeros((), lat.dtype), lat)


def clip_features(frozen, frames) -> jax.Array:
  """CLIP tokens ``[B, 257, Dc]`` of the first control frame (= frame 0 for every mode)."""
  return jax.lax.stop_gradient(frozen.clip(cond.clip_image_input(frames[:, 0]))).astype(jnp.float32)


def prompt_context(hidden, lengths) -> jax.Array:
  """Encoder output ``[B, L, Dt]`` with the rows past each caption's token count ``lengths [B]`` zeroed."""
  rows = jnp.arange(hidden.shape[1])[None, :, None]
  return jnp.where(rows < jnp.asarray(lengths)[:, None, None], hidden, 0).astype(jnp.float32)


def text_context(frozen, text_ids, text_mask) -> jax.Array:
  """umT5 embeddings ``[B, L, Dt]`` of tokenised captions, zero past each mask length."""
  hidden = frozen.text_encoder(jnp.asarray(text_ids), jnp.asarray(text_mask))
  return jax.lax.stop_gradient(prompt_context(hidden, (jnp.asarray(text_mask) > 0).sum(axis=1)))


def select_context(context, empty_context, text_drop) -> jax.Array:
  """``context [B, L, Dt]`` with dropped examples replaced by ``empty_context [L', Dt]`` or ``[B, L', Dt]``
  (the shorter one is zero-padded, as the DiT pads text anyway)."""
  empty = jnp.asarray(empty_context, jnp.float32)
  empty = jnp.broadcast_to(empty, (context.shape[0],) + empty.shape[-2:])
  n = max(context.shape[1], empty.shape[1])
  pad = lambda x: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0)))  # noqa: E731
  return jnp.where(jnp.asarray(text_drop)[:, None, None], pad(empty), pad(context.astype(jnp.float32)))


# ------------------------------------------------------------------------------------------------------ loss
def flow_matching_loss(transformer, x0, y, context, clip_fea, y_camera, t_index, noise, cfg: Stage2Config):
  """``(loss, aux)``: clipped MSE between the DiT's velocity and ``noise - x0`` at ``x_t``.

  ``aux``: ``noisy``, ``target``, ``pred`` ``[B, f, h, 2w, 16]`` (float32), ``sigma``, ``t`` ``[B]``,
  ``n_masked_out`` (elements beyond ``loss_clip``).
  """
  t, sigma = timesteps(t_index, cfg)
  dt = jnp.bfloat16 if cfg.noise_dtype == "bfloat16" else jnp.float32
  s = sigma.astype(dt)[:, None, None, None, None]
  x0, noise = x0.astype(dt), noise.astype(dt)
  noisy = (1.0 - s) * x0 + s * noise
  target = (noise - x0).astype(jnp.float32)
  pred = transformer(noisy, t, context, clip_fea=clip_fea, y=y, y_camera=y_camera).astype(jnp.float32)
  diff = pred - target
  keep = jnp.abs(diff) <= cfg.loss_clip
  loss = jnp.mean(jnp.square(diff) * keep.astype(jnp.float32))
  aux = dict(noisy=noisy.astype(jnp.float32), target=target, pred=pred, sigma=sigma, t=t,
             n_masked_out=jnp.sum(~keep).astype(jnp.float32))
  return loss, aux


def clip_threshold(step: int, max_grad_norm: float = 0.25, initial_ratio: float = 2.0,
                   decay_steps: int = 2000) -> float:
  """The official grad-clip threshold (``train_dit.py`` ``linear_decay``): from ``max_grad_norm *
  initial_ratio`` down to ``max_grad_norm`` linearly over ``decay_steps`` optimiser steps, then constant."""
  start, end = max_grad_norm * initial_ratio, max_grad_norm
  if step >= decay_steps:
    return end
  return start + (end - start) / decay_steps * max(0, step)


# ------------------------------------------------------------------------------------------- batch handling
def _gaussian(mean, logvar) -> jax.Array:
  return jnp.concatenate([jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32)], axis=-1)


def _split(params) -> tuple[jax.Array, jax.Array]:
  d = DiagonalGaussian(params)
  return d.mean, d.logvar


def encode_posteriors(frozen, frames) -> dict[str, jax.Array]:
  """The posteriors a pre-encoded batch stores for ``frames [B, F, H, W, 3]`` in [0, 1]: the clean clip
  (``wan_mean``, ``wan_logvar``, ``geo_mean``, ``geo_logvar``) and the control videos of the two partial modes
  (``ctrl_{first,first_last}_{wan,geo}_{mean,logvar}``), each ``[B, f, h, w, 16]`` float32 (log-variance
  clamped to [-30, 20] as the sampler does)."""
  return _encode_posteriors(frozen, jnp.asarray(frames, jnp.float32))


@nnx.jit
def _encode_posteriors(frozen, frames):
  b = frames.shape[0]
  ctrl = [control_frames(frames, jnp.full((b,), MODES.index(m), jnp.int32)) for m in PARTIAL_MODES]
  wan, geo = stacked_posterior_params(frozen, jnp.stack([frames] + ctrl))    # [1 + len(PARTIAL_MODES), ...]
  out = {}
  for i, prefix in enumerate([""] + [f"ctrl_{m}_" for m in PARTIAL_MODES]):
    for name, p in (("wan", wan[i]), ("geo", geo[i])):
      out[f"{prefix}{name}_mean"], out[f"{prefix}{name}_logvar"] = _split(p)
  return out


def _key(prefix: str, name: str, part: str) -> str:
  return f"{prefix}{name}_{part}"


def _pick_by_mode(batch, name: str, mode) -> jax.Array:
  """Control posterior parameters of ``name`` (``wan`` | ``geo``) per example: mode ``all`` uses the clean
  posterior, the partial modes their stored control posterior."""
  per_mode = {"all": ""} | {m: f"ctrl_{m}_" for m in PARTIAL_MODES}
  out = None
  for m, prefix in per_mode.items():
    p = _gaussian(batch[_key(prefix, name, "mean")], batch[_key(prefix, name, "logvar")])
    sel = (jnp.asarray(mode) == MODES.index(m))[:, None, None, None, None]
    out = p if out is None else jnp.where(sel, p, out)
  return out


def is_preencoded(batch) -> bool:
  return "wan_mean" in batch


def check_batch(batch, frozen, cfg: Stage2Config) -> None:
  """Clear errors for missing or misshaped batch entries (at trace time, before compile)."""
  cfg.validate()
  keys = sorted(batch)
  if is_preencoded(batch):
    need = [_key(p, n, q) for p in ("",) for n in ("wan", "geo") for q in ("mean", "logvar")]
    need += [_key(f"ctrl_{m}_", "wan", q) for m in PARTIAL_MODES for q in ("mean", "logvar")]
    if cfg.geometry_condition == "adapter":
      need += [_key(f"ctrl_{m}_", "geo", q) for m in PARTIAL_MODES for q in ("mean", "logvar")]
    need += ["context", "clip_fea", "c2ws", "Ks"]
    missing = [k for k in need if k not in batch]
    require(not missing, f"pre-encoded stage-2 batch lacks {fmt_list(missing)} (has {fmt_list(keys)}); write it "
                         "with launch/preencode.py (gen3r_jax.training.stage2.encode_posteriors).")
    check_array(batch["wan_mean"], "wan_mean", ndim=5, layout="[B, f, h, w, 16]", floating=True)
    b, f = batch["wan_mean"].shape[:2]
  else:
    missing = [k for k in ("frames", "c2ws", "Ks") if k not in batch]
    has_text = "context" in batch or ("text_ids" in batch and "text_mask" in batch)
    require(not missing and has_text,
            f"stage-2 batch needs frames, c2ws, Ks and either context or text_ids + text_mask (has {fmt_list(keys)}).")
    check_array(batch["frames"], "frames", ndim=5, layout="[B, F, H, W, 3]", dims={4: 3})
    b, nf = batch["frames"].shape[:2]
    check_num_frames(int(nf))
    f = (nf + 3) // 4
    absent = [n for n in ("vggt", "geo_adapter", "wan_vae") if getattr(frozen, n) is None]
    require(not absent, f"online stage-2 batches need the frozen {fmt_list(absent)}; pass them to Stage2Frozen "
                        "or train on pre-encoded batches.")
    require("context" in batch or frozen.text_encoder is not None,
            "batch has text_ids but the frozen modules have no text_encoder; pass one to Stage2Frozen or "
            "pre-encode the captions into batch['context'].")
    require("clip_fea" in batch or frozen.clip is not None,
            "batch has no clip_fea and the frozen modules have no clip encoder; pass clip= to Stage2Frozen.")
  check_array(batch["c2ws"], "c2ws", ndim=4, layout="[B, F, 4, 4]", dims={0: b, 2: 4, 3: 4})
  check_array(batch["Ks"], "Ks", ndim=4, layout="[B, F, 3, 3]", dims={0: b, 1: batch["c2ws"].shape[1], 2: 3, 3: 3})
  nf = batch["c2ws"].shape[1]
  require((nf + 3) // 4 == f, f"c2ws has {nf} frames, which does not match {f} latent frames ((F + 3) // 4).")
  require(cfg.text_drop_prob == 0 or "empty_context" in batch or frozen.empty_context is not None,
          "text_drop_prob > 0 needs the empty-caption encoding: pass empty_context= to Stage2Frozen "
          "(stage2.empty_caption_context) or put empty_context in the batch.")


def _latent_shape(frozen, batch) -> tuple[int, int, int, int, int]:
  if is_preencoded(batch):
    return tuple(batch["wan_mean"].shape)
  b, nf, hh, ww, _ = batch["frames"].shape
  s = frozen.wan_vae.cfg.spatial_factor
  return (b, (nf - 1) // 4 + 1, hh // s, ww // s, frozen.wan_vae.cfg.z_dim)


def _online_latents(frozen, frames, mode, eps, cfg: Stage2Config) -> tuple[jax.Array, jax.Array]:
  """``(x0, y)``; with the adapter condition the clean and the control video share one ``lax.map`` encode."""
  if cfg.geometry_condition != "adapter":
    return joint_latents(frozen, frames, eps[:, :2]), control_latents(frozen, frames, mode, eps[:, 2:], cfg)
  wan, geo = stacked_posterior_params(frozen, jnp.stack([frames, control_frames(frames, mode)]))
  x0 = joint_from_params(wan[0], geo[0], eps[:, :2])
  return x0, control_from_params(wan[1], geo[1], mode, frames.shape[1], eps[:, 2:])


def stage2_loss(transformer, frozen, batch, key, cfg: Stage2Config = Stage2Config()):
  """The trainer's ``Task.loss_fn`` body: ``(loss, metrics)`` (metrics are float32 scalars).

  ``key`` gives the choices (:func:`draw_choices`), the posterior eps (clean ``[:, :2]`` and control
  ``[:, 2:]``, each adapter then Wan) and the flow noise.
  """
  check_batch(batch, frozen, cfg)
  b, f, h, w, z = _latent_shape(frozen, batch)
  k_choice, k_eps, k_noise = jax.random.split(key, 3)
  ch = draw_choices(k_choice, b, cfg)
  # flat draws, reshaped: bit-identical to the 6-D / 5-D draws, but XLA:CPU compiles N-D threefry very slowly
  eps = jax.random.normal(k_eps, (b * 4 * f * h * w * z,), jnp.float32).reshape(b, 4, f, h, w, z)
  noise = jax.random.normal(k_noise, (b * f * h * 2 * w * z,), jnp.float32).reshape(b, f, h, 2 * w, z)
  nf = batch["c2ws"].shape[1]
  adapter = cfg.geometry_condition == "adapter"
  if is_preencoded(batch):
    x0 = joint_from_params(_gaussian(batch["wan_mean"], batch["wan_logvar"]),
                           _gaussian(batch["geo_mean"], batch["geo_logvar"]), eps[:, :2])
    y = control_from_params(_pick_by_mode(batch, "wan", ch["mode"]),
                            _pick_by_mode(batch, "geo", ch["mode"]) if adapter else None, ch["mode"], nf, eps[:, 2:])
    height, width = 8 * h, 8 * w
  else:
    frames = jnp.asarray(batch["frames"], jnp.float32)
    x0, y = _online_latents(frozen, frames, ch["mode"], eps, cfg)
    height, width = frames.shape[2:4]
  context = batch["context"] if "context" in batch else text_context(frozen, batch["text_ids"], batch["text_mask"])
  if cfg.text_drop_prob > 0:
    empty = batch["empty_context"] if "empty_context" in batch else frozen.empty_context[...]
    context = select_context(context, empty, ch["text_drop"])
  clip_fea = batch["clip_fea"] if "clip_fea" in batch else clip_features(frozen, batch["frames"])
  y_camera = camera_map(batch["c2ws"], batch["Ks"], height, width, ch["camera_drop"])
  loss, aux = flow_matching_loss(transformer, x0, y, jnp.asarray(context, jnp.float32),
                                 jnp.asarray(clip_fea, jnp.float32), y_camera, ch["t_index"], noise, cfg)
  f32 = lambda v: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32))  # noqa: E731
  metrics = dict(diffusion_loss=f32(loss), n_masked_out=f32(aux["n_masked_out"]), sigma_mean=f32(aux["sigma"].mean()),
                 text_drop_frac=f32(ch["text_drop"].mean()), camera_drop_frac=f32(ch["camera_drop"].mean()))
  for i, m in enumerate(MODES):
    metrics[f"mode_{m}_frac"] = f32((ch["mode"] == i).mean())
  return loss, metrics
