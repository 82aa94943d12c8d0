"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, in Flax NNX.

AlexNet is the default of both the ``lpips`` package (``lpips.LPIPS(net='alex')``, v0.1 linear heads) and
torchmetrics' ``LearnedPerceptualImagePatchSimilarity``, which Gen3R's requirements pin. The network:

  inputs in [-1, 1] -> (x - shift) / scale with shift (-.030, -.088, -.188), scale (.458, .448, .450)
  AlexNet features: conv11/4 (64) relu | pool3/2 conv5 (192) relu | pool3/2 conv3 (384) relu | conv3 (256) relu
  | conv3 (256) relu; the five relu outputs are unit-normalised over channels (eps 1e-10), squared differences
  are weighted by a 1x1 conv without bias ("lin" heads), averaged over space and summed over the five layers.

The network only; weights are user-provided (they are not redistributed here) and converted through the
mapping table ``gen3r_jax/convert/tables/lpips.py`` by :func:`gen3r_jax.convert.lpips.load_lpips`; the metric is
:func:`gen3r_jax.eval.lpips.lpips_distance`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.config import ModelConfig
from gen3r_jax.nn.linear import Conv, Dense

CHANNELS = (64, 192, 384, 256, 256)
# (out channels, kernel, stride, padding) of AlexNet's five convolutions.
CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision ``features`` index of each conv, as kept in lpips' slices (slice k holds conv k).
TORCHVISION_CONV_INDEX = (0, 3, 6, 8, 10)

@dataclasses.dataclass(frozen=True)
class LPIPSConfig(ModelConfig):
  net: str = "alex"

  def __post_init__(self):
    if self.net != "alex":
      raise Gen3RInputError(f"LPIPS: only the AlexNet variant ('alex') is implemented, got {self.net!r}.")


def _max_pool(x):  # [N, H, W, C] -> [N, (H-3)//2+1, (W-3)//2+1, C]
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


class LPIPS(nnx.Module):
  """``LPIPS(cfg, rngs=...)(x0, x1)`` with images ``[N, H, W, 3]`` in [-1, 1] -> distances ``[N]``."""

  def __init__(self, cfg: LPIPSConfig = LPIPSConfig(), *, rngs: nnx.Rngs):
    self.cfg = cfg
    convs, cin = [], 3
    for cout, k, s, p in CONVS:
      convs.append(Conv(cin, cout, (k, k), strides=s, padding=p, rngs=rngs))
      cin = cout
    self.convs = nnx.List(convs)
    self.lins = nnx.List([Dense(c, 1, use_bias=False, axes=("embed", None), rngs=rngs) for c in CHANNELS])

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The five relu feature maps ``[N, h_k, w_k, C_k]`` of scaled inputs."""
    feats = []
    for k, conv in enumerate(self.convs):
      if k in (1, 2):
        x = _max_pool(x)
      x = jax.nn.relu(conv(x))
      feats.append(x)
    return feats

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    shift = jnp.asarray(SHIFT, jnp.float32)
    scale = jnp.asarray(SCALE, jnp.float32)
    both = (jnp.concatenate([x0, x1], 0).astype(jnp.float32) - shift) / scale  # [2N, H, W, 3]
    total = 0.0
    for f, lin in zip(self.features(both), self.lins):
      f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)
      f0, f1 = jnp.split(f, 2, axis=0)
      total = total + jnp.mean(lin((f0 - f1) ** 2)[..., 0], axis=(1, 2))  # [N]
    return total
