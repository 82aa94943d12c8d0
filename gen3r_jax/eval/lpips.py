"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, in Flax NNX.

AlexNet is the default of both the ``lpips`` package (``lpips.LPIPS(net='alex')``, v0.1 linear heads) and
torchmetrics' ``LearnedPerceptualImagePatchSimilarity``, which Gen3R's requirements pin. The network:

  inputs in [-1, 1] -> (x - shift) / scale with shift (-.030, -.088, -.188), scale (.458, .448, .450)
  AlexNet features: conv11/4 (64) relu | pool3/2 conv5 (192) relu | pool3/2 conv3 (384) relu | conv3 (256) relu
  | conv3 (256) relu; the five relu outputs are unit-normalised over channels (eps 1e-10), squared differences
  are weighted by a 1x1 conv without bias ("lin" heads), averaged over space and summed over the five layers.

Weights are user-provided (they are not redistributed here) and converted through the mapping table
``gen3r_jax/convert/tables/lpips.py``. Accepted files (``.pth``/``.pt``/``.bin``/``.safetensors``):
  * a full LPIPS state dict: ``torch.save(lpips.LPIPS(net='alex').state_dict(), 'lpips_alex.pth')``, or
    torchmetrics' ``LearnedPerceptualImagePatchSimilarity(net_type='alex').state_dict()``;
  * or two files, comma separated: the torchvision AlexNet weights (``alexnet-owt-7be5be79.pth``, keys
    ``features.N.*``) and the lpips package's linear heads (``lpips/weights/v0.1/alex.pth``, keys ``linK.*``).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.nn.params import abstract_module

from gen3r_jax.convert.sources import TensorSource, open_source
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.models.config import ModelConfig
from gen3r_jax.nn.linear import Conv, Dense

CHANNELS = (64, 192, 384, 256, 256)
# (out channels, kernel, stride, padding) of AlexNet's five convolutions.
CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision ``features`` index of each conv, as kept in lpips' slices (slice k holds conv k).
TORCHVISION_CONV_INDEX = (0, 3, 6, 8, 10)

MISSING_WEIGHTS = (
    "LPIPS needs the network weights, which are not bundled: pass --lpips_weights=<file> with a full LPIPS "
    "AlexNet state dict (python -c \"import lpips, torch; torch.save(lpips.LPIPS(net='alex').state_dict(), "
    "'lpips_alex.pth')\") or '<torchvision alexnet .pth>,<lpips weights/v0.1/alex.pth>'. Without it, LPIPS is "
    "skipped.")


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


class _MergedSource(TensorSource):
  """Several checkpoint files seen as one LPIPS state dict (torchvision AlexNet keys renamed)."""

  def __init__(self, sources: list[TensorSource]):
    self._map: dict[str, tuple[TensorSource, str]] = {}
    slot = {j: k + 1 for k, j in enumerate(TORCHVISION_CONV_INDEX)}  # features.j -> net.slice{k}.j
    for src in sources:
      for key in src.keys():
        new = key
        parts = key.split(".")
        if parts[0] == "classifier":
          continue  # AlexNet's classifier: not part of LPIPS
        if parts[0] == "features" and len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in slot:
          new = f"net.slice{slot[int(parts[1])]}.{parts[1]}.{parts[2]}"
        self._map[new] = (src, key)
    self.description = " + ".join(s.description for s in sources)

  def keys(self):
    return list(self._map)

  def shape(self, key):
    src, k = self._map[key]
    return src.shape(k)

  def dtype(self, key):
    src, k = self._map[key]
    return src.dtype(k)

  def get(self, key):
    src, k = self._map[key]
    return src.get(k)


def load_lpips(weights: str | None) -> LPIPS:
  """Build LPIPS and convert the user's weights file(s) into it (comma-separated paths allowed)."""
  from gen3r_jax.convert.core import convert, param_targets, update_model
  from gen3r_jax.convert.tables import lpips as lpips_table

  if not weights:
    raise Gen3RInputError(MISSING_WEIGHTS)
  paths = [p.strip() for p in str(weights).split(",") if p.strip()]
  missing = [p for p in paths if not os.path.exists(p)]
  require(not missing, f"LPIPS weights file(s) not found: {', '.join(missing)}. " + MISSING_WEIGHTS)
  source = _MergedSource([open_source(p) for p in paths])
  cfg = LPIPSConfig()
  model = abstract_module(lambda: LPIPS(cfg, rngs=nnx.Rngs(0)))  # abstract: no random init
  params, _ = convert(lpips_table.table(cfg), source, param_targets(model))
  update_model(model, {k: jnp.asarray(v) for k, v in params.items()})
  return model


@nnx.jit
def _lpips_batch(model: LPIPS, x0, x1):
  return model(x0 * 2.0 - 1.0, x1 * 2.0 - 1.0)


def lpips_distance(model: LPIPS, pred, gt, *, batch: int = 8) -> np.ndarray:
  """Per-frame LPIPS ``[F]`` of frames ``[F, H, W, 3]`` in [0, 1] (mapped to [-1, 1], torchmetrics'
  ``normalize=True``), evaluated ``batch`` frames at a time."""
  from gen3r_jax.eval.image import check_frames
  check_frames(pred, gt, "lpips")
  require(pred.shape[-1] == 3, f"lpips: frames must be RGB, got {pred.shape[-1]} channels.")
  require(min(pred.shape[1:3]) >= 32, f"lpips: frames of {pred.shape[1]}x{pred.shape[2]} are too small "
          "for AlexNet (at least 32 pixels a side).")
  out = []
  for i in range(0, pred.shape[0], batch):
    out.append(np.asarray(_lpips_batch(model, jnp.asarray(pred[i:i + batch], jnp.float32),
                                       jnp.asarray(gt[i:i + batch], jnp.float32))))
  return np.concatenate(out)
