"""Parity case ``training_stage2_tiny``: one official ``train_dit.py`` step (loss + backward) per call.

```
fixture config ─► VGGT (aggregator), adapter + Wan VAE (encoder, conv1), DiT (all) ─ converter tables
frames_u8_70 ─► x8 nearest, /255 ─► frames [B, F, 560, 560, 3]
random_draws ─► choices (mode per element, caption drop per element, ONE camera draw: camera_drop="batch")
posterior_eps_14 ─► x5 nearest ─► eps [B, 4, f, 70, 70, 16] (clean adapter, clean Wan, control adapter, Wan)
frames, eps, mode ─► posterior_params ─► joint_from_params / control_from_params (adapter condition) ─► x0, y
text_hidden, text_len (+ the empty caption) ─► prompt_context / select_context ─► context
c2ws, Ks ─► camera_map (zeros when dropped) ; clip_context = the CLIP stand-in's output
flow_matching_loss under nnx.value_and_grad w.r.t. the DiT ─► loss, intermediates, grads, grad norm
```

The fixture stores only the used weights (``vggt.aggregator.*``; ``model.encoder.*`` / ``model.conv1.*`` of the
adapter and the Wan VAE): those are filled strictly through the converter tables, the unused parts (VGGT heads,
decoders) get zeros (:func:`gen3r_jax.testing.cases.decode_path.load_used`). The transformer is loaded strictly
(the fixture narrows its CLIP projection input to ``img_emb_in_dim``). The text encoder and CLIP are the
fixture's stand-ins, so the case feeds their outputs to the pure helpers the loss uses. Batch size, conditions
and every draw come from the fixture.
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gen3r_jax.convert import load_torch_weights
from gen3r_jax.convert.sources import PrefixedSource
from gen3r_jax.convert.tables import geometry_adapter as adapter_table
from gen3r_jax.convert.tables import vggt as vggt_table
from gen3r_jax.convert.tables import wan_dit as dit_table
from gen3r_jax.convert.tables import wan_vae as wan_table
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
from gen3r_jax.models.vggt import VGGT, VGGTConfig
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import abstract_model as abstract_dit
from gen3r_jax.models.wan_vae.vae import WanVAE, WanVAEConfig
from gen3r_jax.compat import value_of
from gen3r_jax.sampling import conditioning as cond
from gen3r_jax.testing.cases.decode_path import load_used
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check
from gen3r_jax.training import stage2 as S

GRAD_PREFIX = "grad."
ENCODER_PARTS = ("encoder", "conv1")   # what the fixture stores of the adapter and the Wan VAE


def dit_config(cfg: dict, dtype: str) -> WanDiTConfig:
  """The fixture's transformer config; ``img_emb_in_dim`` is the CLIP width of ``img_emb`` (``clip_dim``)."""
  d = dict(cfg)
  clip_dim = d.pop("img_emb_in_dim", None)
  kw = {} if clip_dim is None else {"clip_dim": int(clip_dim)}
  return WanDiTConfig.from_fixture(d, dtype=dtype, **kw)


def build(fx: Fixture, dtype: str = "float32"):
  """``(transformer, frozen)`` from the fixture's config and weights."""
  cfg = fx.config
  src = fx.weights_source()
  vcfg = VGGTConfig.from_fixture(cfg["vggt"], dtype=dtype)
  vggt = load_used(VGGT, vcfg, vggt_table.table(vcfg), PrefixedSource(src, "vggt."), ("aggregator",))
  acfg = GeometryAdapterConfig.from_fixture(cfg["geometry_adapter"]).replace(dtype=dtype)
  adapter = load_used(GeometryAdapter, acfg, adapter_table.table(acfg), PrefixedSource(src, "geo_adapter."),
                      ENCODER_PARTS)
  wcfg = WanVAEConfig.from_fixture(cfg["wan_vae"]).replace(dtype=dtype)
  wan = load_used(WanVAE, wcfg, wan_table.table(wcfg), PrefixedSource(src, "wan_vae."), ENCODER_PARTS)
  tcfg = dit_config(cfg["transformer"], dtype)
  transformer = abstract_dit(tcfg)
  load_torch_weights(transformer, dit_table.table(tcfg), PrefixedSource(src, "transformer."))
  return transformer, S.Stage2Frozen(vggt, adapter, wan)


def loss_config(fx: Fixture) -> S.Stage2Config:
  """The official settings the fixture ran with (one camera draw per batch, as ``train_dit.py``)."""
  sch, args = fx.config["scheduler"], fx.config["train_args"]
  if sch.get("use_dynamic_shifting") or sch.get("class") != "FlowMatchEulerDiscreteScheduler":
    raise NotImplementedError(f"{fx.name}: only FlowMatchEulerDiscreteScheduler without dynamic shifting")
  if not args.get("uniform_sampling", True) or args.get("weighting_scheme", "none") != "none":
    raise NotImplementedError(f"{fx.name}: only uniform timestep sampling with weighting_scheme 'none'")
  return S.Stage2Config(num_train_timesteps=int(sch["num_train_timesteps"]), shift=float(sch["shift"]),
                        camera_drop="batch").validate()


def _up(x: np.ndarray, k: int) -> np.ndarray:
  return np.repeat(np.repeat(x, k, axis=-2), k, axis=-1)


def inputs(fx: Fixture) -> dict[str, np.ndarray]:
  """Channels-last frames, eps, noise, cameras and the stand-in encoder outputs."""
  u8 = fx.tensor("frames_u8_70")                                            # [B, F, 3, 70, 70]
  frames = np.clip(_up(u8, 8).astype(np.float32) / np.float32(255.0), 0.0, 1.0).transpose(0, 1, 3, 4, 2)
  eps = _up(fx.tensor("posterior_eps_14").astype(np.float32), 5)           # [B, 4, 16, f, 70, 70]
  noise = _up(fx.tensor("noise_14").astype(np.float32), 5)                 # [B, 16, f, 70, 140]
  f32 = lambda n: fx.tensor(n).astype(np.float32)  # noqa: E731
  return dict(frames=np.ascontiguousarray(frames), eps=np.ascontiguousarray(eps.transpose(0, 1, 3, 4, 5, 2)),
              noise=np.ascontiguousarray(noise.transpose(0, 2, 3, 4, 1)), c2ws=f32("c2ws"), Ks=f32("Ks"),
              text_hidden=f32("text_hidden"), text_len=fx.tensor("text_len").astype(np.int32),
              empty_text_hidden=f32("empty_text_hidden"), empty_text_len=fx.tensor("empty_text_len").astype(np.int32),
              clip_context=f32("clip_context"), t_index=fx.tensor("timestep_indices").astype(np.int32))


def choices(fx: Fixture, draws: np.ndarray, t_index: np.ndarray, cfg: S.Stage2Config) -> dict:
  """``random_draws`` = [mode per element..., caption drop per element..., one camera draw]."""
  b = t_index.shape[0]
  draws = np.asarray(draws, np.float64)
  if draws.shape != (2 * b + 1,):
    raise ValueError(f"{fx.name}: expected {2 * b + 1} python random draws for batch {b}, got {draws.shape}")
  return S.choices_from_uniforms(draws[:b], draws[b:2 * b], draws[2 * b], t_index, cfg)


def check_conditions(fx: Fixture, ch: dict, num_frames: int) -> None:
  """The first call's choices must be the ones the fixture records (guards the draw mapping)."""
  sel = np.asarray(S.selected_frames(ch["mode"], num_frames))
  for c in fx.config.get("conditions", []):
    b = int(c["element"])
    want = sorted(i % num_frames for i in c["control_frame_indices"])
    if list(np.flatnonzero(sel[b])) != want or bool(ch["text_drop"][b]) != bool(c["prompt_dropped"]):
      raise ValueError(f"{fx.name}: element {b}: draws give frames {list(np.flatnonzero(sel[b]))}, caption drop "
                       f"{bool(ch['text_drop'][b])}; the fixture records {want}, {c['prompt_dropped']}")
  if "plucker_dropped" in fx.config and bool(ch["camera_drop"][0]) != bool(fx.config["plucker_dropped"]):
    raise ValueError(f"{fx.name}: camera drop {bool(ch['camera_drop'][0])} != fixture {fx.config['plucker_dropped']}")


@nnx.jit
def _encode(frozen, frames, mode, eps):
  """The building blocks of ``joint_latents`` / ``control_latents`` (adapter geometry condition), keeping the
  VGGT tokens the fixture stores."""
  wan, geo, tokens = S.posterior_params(frozen, frames, return_tokens=True)
  ctrl = S.control_frames(frames, mode)
  c_wan, c_geo, ctrl_tokens = S.posterior_params(frozen, ctrl, return_tokens=True)
  x0 = S.joint_from_params(wan, geo, eps[:, :2])                             # [B, f, 70, 140, 16]
  y = S.control_from_params(c_wan, c_geo, mode, frames.shape[1], eps[:, 2:])  # [B, f, 70, 140, 20]
  return dict(x0=x0, y=y, tokens=tokens, ctrl_tokens=ctrl_tokens, clip_image=cond.clip_image_input(ctrl[:, 0]))


@nnx.jit(static_argnames=("cfg", "height", "width"))
def _step(transformer, x0, y, context, clip_fea, c2ws, ks, camera_drop, t_index, noise, clip_norm, cfg,
          height, width):
  y_camera = S.camera_map(c2ws, ks, height, width, camera_drop)

  def f(tr):
    return S.flow_matching_loss(tr, x0, y, context, clip_fea, y_camera, t_index, noise, cfg)

  (loss, aux), grads = nnx.value_and_grad(f, has_aux=True)(transformer)
  gnorm = optax.global_norm(grads)
  clipped, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
  aux = dict(aux, y_camera=y_camera, control_adapter_out=transformer.control_adapter(y_camera))
  return loss, aux, grads, gnorm, optax.global_norm(clipped)


def _pt(x) -> np.ndarray:
  """channels-last ``[B, T, H, W, C]`` -> ``[B, C, T, H, W]``."""
  return np.moveaxis(np.asarray(x, np.float32), -1, 1)


def grad_checks(fx: Fixture, grads, table, names, prefix: str) -> Iterator[Check]:
  flat = {tuple(p): v for p, v in nnx.to_flat_state(grads)}
  for name in names:
    key = name[len(prefix + GRAD_PREFIX):]
    rule = table.rule(key)
    if rule is None:
      raise KeyError(f"{fx.name}: no converter rule for gradient {key!r}")
    if rule.transform.name not in ("identity", "flatten") and not rule.transform.name.startswith("squeeze_leading"):
      raise NotImplementedError(f"{fx.name}: gradient {key!r} needs the inverse of {rule.transform.name}")
    g = flat[rule.path]
    g = np.asarray(value_of(g), np.float32)
    g = g if rule.index is None else g[rule.index]
    yield Check(name, g.reshape(fx.tensor(name).shape))


def run_call(fx, call, transformer, frozen, cfg, x, encoded_cache) -> Iterator[Check]:
  prefix = "drop." if any(o.startswith("drop.") for o in call["outputs"]) else ""
  draws_name = next(k for k in call["inputs"] if k.startswith("random_draws"))
  ch = choices(fx, fx.tensor(draws_name), x["t_index"], cfg)
  frames = x["frames"]
  num_frames, height, width = frames.shape[1], frames.shape[2], frames.shape[3]
  if draws_name == "random_draws":
    check_conditions(fx, ch, num_frames)
  mode_key = tuple(np.asarray(ch["mode"]).tolist())
  if mode_key not in encoded_cache:
    encoded_cache[mode_key] = _encode(frozen, jnp.asarray(frames), ch["mode"], jnp.asarray(x["eps"]))
  enc = encoded_cache[mode_key]
  context = S.select_context(S.prompt_context(x["text_hidden"], x["text_len"]),
                             S.prompt_context(x["empty_text_hidden"], x["empty_text_len"])[0], ch["text_drop"])
  args = fx.config["train_args"]
  clip_norm = S.clip_threshold(0, args["max_grad_norm"], args["initial_grad_norm_ratio"],
                               args["abnormal_norm_clip_start"])
  loss, aux, grads, gnorm, gnorm_clipped = _step(
      transformer, enc["x0"], enc["y"], context, jnp.asarray(x["clip_context"]), jnp.asarray(x["c2ws"]),
      jnp.asarray(x["Ks"]), ch["camera_drop"], ch["t_index"], jnp.asarray(x["noise"]), clip_norm, cfg,
      height, width)
  pred = np.asarray(aux["pred"], np.float64)
  s7 = (Ellipsis, slice(None, None, 7), slice(None, None, 7))
  values = {
      "loss": lambda: loss, "grad_norm": lambda: gnorm, "grad_norm_after_clip": lambda: gnorm_clipped,
      "grad_clip_max_norm_step0": lambda: np.float32(clip_norm), "n_masked_out": lambda: aux["n_masked_out"],
      "timesteps": lambda: aux["t"], "sigmas": lambda: aux["sigma"],
      "weighting": lambda: np.ones_like(np.asarray(aux["sigma"])),          # weighting_scheme 'none'
      "prompt_embeds": lambda: context,
      "vggt_latents_sub": lambda: _pt(enc["tokens"])[..., ::20, ::20],
      "control_vggt_latents_sub": lambda: _pt(enc["ctrl_tokens"])[..., ::20, ::20],
      "combined_latents_sub": lambda: _pt(enc["x0"])[s7],
      "control_latents_sub": lambda: _pt(enc["y"])[s7],
      "control_masks": lambda: _pt(enc["y"])[:, 16:][s7],
      "noisy_latents_sub": lambda: _pt(aux["noisy"])[s7],
      "target_sub": lambda: _pt(aux["target"])[s7],
      "noise_pred_sub": lambda: _pt(aux["pred"])[s7],
      "clip_images_sub": lambda: _pt(enc["clip_image"][:, None])[:, :, 0, ::16, ::16],
      "plucker_embeds_sub": lambda: _pt(aux["y_camera"])[..., ::56, ::56],
      "control_adapter_out_sub": lambda: _pt(aux["control_adapter_out"])[..., ::5, ::5],
      "noise_pred_mean": lambda: pred.mean(), "noise_pred_meansq": lambda: np.square(pred).mean(),
  }
  table = dit_table.table(transformer.cfg)
  grad_names = [o for o in call["outputs"] if o.startswith(prefix + GRAD_PREFIX)]
  for name in call["outputs"]:
    base = name[len(prefix):]
    if name in grad_names:
      continue
    if base not in values:
      raise KeyError(f"{fx.name}: output {name!r} has no counterpart in the port")
    yield Check(name, np.asarray(values[base](), np.float32))
  yield from grad_checks(fx, grads, table, grad_names, prefix)


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  transformer, frozen = build(fx, dtype)
  cfg = loss_config(fx)
  x = inputs(fx)
  cache: dict = {}
  with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
    for call in fx.calls:
      yield from run_call(fx, call, transformer, frozen, cfg, x, cache)
