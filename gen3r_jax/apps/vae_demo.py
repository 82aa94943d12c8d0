"""Round trip of a synthetic clip through the Wan VAE (library side of ``launch/demo_vae.py``)."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gen3r_jax.data.synthetic import render_clip
from gen3r_jax.eval.image import psnr
from gen3r_jax.models.wan_vae.vae import WanVAE, WanVAEConfig, host_init
from gen3r_jax.sampling.export import write_video


def run(out: str, *, checkpoint: str | None = None, frames: int = 9, size: int = 64, seed: int = 0,
        dtype: str = "float32", log=print) -> dict:


  t0 = time.time()
  if checkpoint:
    vae = WanVAE.from_checkpoint(checkpoint, dtype=dtype)
    log(f"[demo] Wan VAE from {checkpoint} (base width {vae.cfg.dim})")
  else:
    vae = host_init(WanVAE, WanVAEConfig.tiny().replace(dtype=dtype), seed=seed)
    log("[demo] tiny Wan VAE (base width 8) with random weights: expect a noisy reconstruction")
  rgb, _, _, _ = render_clip(seed=seed, frames=frames, hw=(size, size))
  video = jnp.asarray(rgb[None], jnp.float32) / 127.5 - 1.0  # [1, F, H, W, 3] in [-1, 1]
  log(f"[demo] synthetic clip {tuple(video.shape)} on {jax.devices()[0].platform}")
  post = vae.encode(video)
  z = post.mode()
  log(f"[demo] latents {tuple(z.shape)} (mean {float(jnp.mean(z)):+.3f}, std {float(jnp.std(z)):.3f})")
  recon = vae.decode(z)  # [1, F, H, W, 3] in [-1, 1]
  rec01 = np.asarray((recon[0].astype(jnp.float32) + 1.0) / 2.0)
  src01 = rgb.astype(np.float32) / 255.0
  score = float(np.mean(np.asarray(psnr(jnp.asarray(rec01), jnp.asarray(src01)))))
  os.makedirs(out, exist_ok=True)
  write_video(os.path.join(out, "input.mp4"), rgb, fps=8)
  write_video(os.path.join(out, "reconstruction.mp4"), rec01, fps=8)
  log(f"[demo] wrote {out}/input.mp4 and {out}/reconstruction.mp4")
  log(f"[demo] PSNR {score:.2f} dB over {frames} frames ({time.time() - t0:.1f} s)")
  return {"psnr": score, "latent_shape": tuple(z.shape), "out": out}
