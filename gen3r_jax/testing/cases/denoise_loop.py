"""Parity case ``denoise_loop_tiny``: the pipeline's CFG + UniPC loop (4 steps, guidance 5, shift 5) with the tiny
DiT, run through :func:`gen3r_jax.sampling.denoise.denoise` (the compiled step the pipeline uses)."""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp
import numpy as np

from gen3r_jax.convert.core import load_torch_weights
from gen3r_jax.convert.tables.wan_dit import table
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import abstract_model
from gen3r_jax.sampling.denoise import cfg_context, denoise
from gen3r_jax.sampling.schedulers import scheduler_from_config
from gen3r_jax.testing.parity import Check


def cl(a) -> jnp.ndarray:
  """PyTorch ``B C F H W`` -> channels-last ``B F H W C``."""
  return jnp.asarray(np.moveaxis(np.asarray(a, np.float32), 1, -1))


def pt(a) -> np.ndarray:
  """Channels-last ``... B F H W C`` -> PyTorch ``... B C F H W``."""
  return np.moveaxis(np.asarray(a), -1, -4)


def scheduler_of(cfg: dict):
  """The fixture's ``config.scheduler`` (``cls`` = the diffusers class name) -> our scheduler."""
  return scheduler_from_config({"_class_name": cfg["cls"], **{k: v for k, v in cfg.items() if k != "cls"}})


def run(fx, dtype: str) -> Iterator[Check]:
  c = fx.config
  cfg = WanDiTConfig.from_fixture(c["transformer"], dtype=dtype)
  model = abstract_model(cfg)
  load_torch_weights(model, table(cfg), fx.weights_source())
  sched = scheduler_of(c["scheduler"])
  schedule = sched.set_timesteps(int(c["num_inference_steps"]), float(c["shift"]))
  yield Check("timesteps", schedule.timesteps, kind="exact")
  yield Check("sigmas", schedule.sigmas)
  ctx = cfg_context([fx.tensor("pos_context0")], [fx.tensor("neg_context0")], cfg)
  out = denoise(model, sched, schedule, cl(fx.tensor("latents_init")), context=ctx,
                clip_fea=jnp.asarray(fx.tensor("clip_context")), y=cl(fx.tensor("control_latents")),
                y_camera=cl(fx.tensor("camera_latents")), guidance_scale=float(c["guidance_scale"]),
                record=True, progress=False)
  yield Check("latents_per_step", pt(out.history))
  yield Check("guided_noise_pred_per_step", pt(out.guided))
