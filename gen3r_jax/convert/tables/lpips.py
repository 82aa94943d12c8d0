"""Mapping table: LPIPS (AlexNet, ``lpips`` package v0.1 / torchmetrics) -> :class:`gen3r_jax.models.lpips.LPIPS`.

Not registered in ``convert/registry.py`` (that registry is for the Gen3R manifests); the evaluation loads it
through :func:`gen3r_jax.convert.lpips.load_lpips`. Key layout of ``lpips.LPIPS(net='alex').state_dict()``:
``net.slice{k}.{j}.weight|bias`` (AlexNet conv ``j`` of torchvision's ``features``), ``lin{k}.model.1.weight``
(1x1 conv ``[1, C, 1, 1]`` without bias), the same heads again under ``lins.{k}.`` (a ModuleList alias) and the
input scaling buffers. torchmetrics' wrapper adds a ``net.`` prefix to every key, which is stripped.
"""

from __future__ import annotations

from gen3r_jax.convert import transforms as T
from gen3r_jax.convert.table import MappingTable, TableBuilder
from gen3r_jax.models.lpips import CHANNELS, TORCHVISION_CONV_INDEX


def table(cfg=None) -> MappingTable:
  """The LPIPS-AlexNet table (``cfg`` is an :class:`~gen3r_jax.models.lpips.LPIPSConfig`; only 'alex' exists)."""
  del cfg
  tb = TableBuilder("lpips_alex", strip_prefixes=("net.",))
  for k, j in enumerate(TORCHVISION_CONV_INDEX):
    tb.conv(f"net.slice{k + 1}.{j}", f"convs.{k}", 2)
  for k in range(len(CHANNELS)):
    tb.add(f"lin{k}.model.1.weight", f"lins.{k}.kernel", T.conv1x1_to_linear())
  tb.ignore(r"lins\.\d+\.model\.1\.weight", "alias of lin{k}.model.1.weight (the lpips ModuleList)")
  tb.ignore(r"scaling_layer\.(shift|scale)", "input scaling constants, fixed in gen3r_jax.models.lpips")
  return tb.build()
