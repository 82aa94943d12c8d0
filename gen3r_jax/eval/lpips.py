"""LPIPS (Zhang et al. 2018, AlexNet backbone) as a metric: per-frame distances with the network of
:mod:`gen3r_jax.models.lpips` and weights converted by :func:`gen3r_jax.convert.lpips.load_lpips`."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.errors import require
from gen3r_jax.eval.image import check_frames
from gen3r_jax.models.lpips import LPIPS


@nnx.jit
def _lpips_batch(model: LPIPS, x0, x1):
  return model(x0 * 2.0 - 1.0, x1 * 2.0 - 1.0)


def lpips_distance(model: LPIPS, pred, gt, *, batch: int = 8) -> np.ndarray:
  """Per-frame LPIPS ``[F]`` of frames ``[F, H, W, 3]`` in [0, 1] (mapped to [-1, 1], torchmetrics'
  ``normalize=True``), evaluated ``batch`` frames at a time."""
  check_frames(pred, gt, "lpips")
  require(pred.shape[-1] == 3, f"lpips: frames must be RGB, got {pred.shape[-1]} channels.")
  require(min(pred.shape[1:3]) >= 32, f"lpips: frames of {pred.shape[1]}x{pred.shape[2]} are too small "
          "for AlexNet (at least 32 pixels a side).")
  out = []
  for i in range(0, pred.shape[0], batch):
    out.append(np.asarray(_lpips_batch(model, jnp.asarray(pred[i:i + batch], jnp.float32),
                                       jnp.asarray(gt[i:i + batch], jnp.float32))))
  return np.concatenate(out)
