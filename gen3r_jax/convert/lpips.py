"""LPIPS-AlexNet weights from the user's PyTorch files into :class:`gen3r_jax.models.lpips.LPIPS`.

Accepted files (``.pth``/``.pt``/``.bin``/``.safetensors``):
  * a full LPIPS state dict: ``torch.save(lpips.LPIPS(net='alex').state_dict(), 'lpips_alex.pth')``, or
    torchmetrics' ``LearnedPerceptualImagePatchSimilarity(net_type='alex').state_dict()``;
  * or two files, comma separated: the torchvision AlexNet weights (``alexnet-owt-7be5be79.pth``, keys
    ``features.N.*``) and the lpips package's linear heads (``lpips/weights/v0.1/alex.pth``, keys ``linK.*``).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
from flax import nnx

from gen3r_jax.convert.core import convert, param_targets, update_model
from gen3r_jax.convert.sources import TensorSource, open_source
from gen3r_jax.convert.tables import lpips as lpips_table
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.models.lpips import LPIPS, TORCHVISION_CONV_INDEX, LPIPSConfig
from gen3r_jax.nn.params import abstract_module

MISSING_WEIGHTS = (
    "LPIPS needs the network weights, which are not bundled: pass --lpips_weights=<file> with a full LPIPS "
    "AlexNet state dict (python -c \"import lpips, torch; torch.save(lpips.LPIPS(net='alex').state_dict(), "
    "'lpips_alex.pth')\") or '<torchvision alexnet .pth>,<lpips weights/v0.1/alex.pth>'. Without it, LPIPS is "
    "skipped.")


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
