"""Parity case ``training_stage1_tiny``: one official stage-1 ``training_step`` + backward.

Builds VGGT, the Wan VAE (encoder only stored) and the geometry adapter from the fixture's config and weights
(fixture-local prefixes ``vggt.``, ``wan_vae.``, ``geo_adapter.``), rebuilds the frames (``uint8 70x70`` ->
nearest x8 -> ``/255``) and the posterior noise (nearest x5), runs :func:`stage1_loss` with gradients w.r.t.
the adapter and compares every loss term, the logged statistics, the strided intermediates, the adapter grad
norm and three raw gradients (mapped back to the official keys through the converter table).
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.convert import load_torch_weights
from gen3r_jax.convert.sources import PrefixedSource
from gen3r_jax.convert.tables import geometry_adapter as adapter_table
from gen3r_jax.convert.tables import vggt as vggt_table
from gen3r_jax.convert.tables import wan_vae as wan_table
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
from gen3r_jax.models.vggt import VGGTConfig, abstract_model
from gen3r_jax.models.wan_vae.vae import WanVAE, WanVAEConfig
from gen3r_jax.compat import value_of
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check
from gen3r_jax.training.losses import Stage1LossConfig
from gen3r_jax.training.stage1 import Frozen, stage1_loss

GRAD_PREFIX = "grad."


def build(fx: Fixture, dtype: str = "float32"):
  """(adapter, frozen, loss config) from the fixture."""
  cfg = fx.config
  src = fx.weights_source()
  vcfg = VGGTConfig.from_fixture(cfg["vggt"], dtype=dtype)
  vggt = abstract_model(vcfg)
  load_torch_weights(vggt, vggt_table.table(vcfg), PrefixedSource(src, "vggt."))
  wcfg = WanVAEConfig.from_fixture(cfg["wan_vae"]).replace(dtype=dtype)
  wan = WanVAE(wcfg, rngs=nnx.Rngs(0))
  # only the encoder path (encoder.*, conv1.*) is stored: the decoder keeps its random init and is unused
  report = load_torch_weights(wan, wan_table.table(wcfg), PrefixedSource(src, "wan_vae."), strict=False)
  bad = [k for k in report.missing if not k.startswith(("decoder.", "conv2."))]
  if bad or report.unknown or report.misshaped:
    raise ValueError(f"wan_vae weights do not fit: missing {bad[:5]}, unknown {report.unknown[:5]}, "
                     f"misshaped {report.misshaped[:3]}")
  acfg = GeometryAdapterConfig.from_fixture(cfg["geometry_adapter"]).replace(dtype=dtype)
  adapter = GeometryAdapter(acfg, rngs=nnx.Rngs(0))
  load_torch_weights(adapter, adapter_table.table(acfg), PrefixedSource(src, "geo_adapter."))
  return adapter, Frozen(vggt, wan), Stage1LossConfig.from_fixture(cfg)


def inputs(fx: Fixture) -> tuple[np.ndarray, np.ndarray]:
  """(frames ``[B, F, 560, 560, 3]`` in [0, 1], eps ``[B, f, 70, 70, 16]``) as the fixture describes them."""
  u8 = fx.tensor("frames_u8_70")                                           # [B, F, 3, 70, 70]
  frames = np.repeat(np.repeat(u8, 8, axis=3), 8, axis=4).astype(np.float32) / np.float32(255.0)
  frames = np.clip(frames, 0.0, 1.0).transpose(0, 1, 3, 4, 2)
  e = fx.tensor("posterior_eps_14").astype(np.float32)                     # [B, 16, f, 14, 14]
  eps = np.repeat(np.repeat(e, 5, axis=3), 5, axis=4).transpose(0, 2, 3, 4, 1)
  return np.ascontiguousarray(frames), np.ascontiguousarray(eps)


@nnx.jit(static_argnames=("cfg",))
def _step(adapter, frozen, frames, eps, cfg):
  def f(a):
    loss, metrics, inter = stage1_loss(a, frozen, frames, eps, cfg, with_intermediates=True)
    return loss, (metrics, inter)
  (loss, (metrics, inter)), grads = nnx.value_and_grad(f, has_aux=True)(adapter)
  leaves = jax.tree.leaves(grads)
  gnorm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in leaves))
  return metrics, inter, grads, gnorm


def _torch5(x):
  """channels-last ``[B, T, H, W, C]`` -> ``[B, C, T, H, W]``."""
  return np.transpose(np.asarray(x, np.float32), (0, 4, 1, 2, 3))


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  adapter, frozen, lcfg = build(fx, dtype)
  frames, eps = inputs(fx)
  # the gradients reach the adapter through 560x560 DPT heads: keep float32 dots/convs at full precision
  # (the CLI does not set jax_default_matmul_precision; pytest's conftest does)
  with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
    metrics, inter, grads, gnorm = _step(adapter, frozen, jnp.asarray(frames), jnp.asarray(eps), lcfg)
  (call,) = fx.calls
  outs = list(call["outputs"])
  sub = {
      "target_tokens_sub": lambda: _torch5(inter["target_tokens"])[..., ::8, ::8],
      "reconstructed_tokens_sub": lambda: _torch5(inter["reconstructed_tokens"])[..., ::8, ::8],
      "adapter_posterior_parameters_sub": lambda: _torch5(inter["adapter_posterior_parameters"])[..., ::7, ::7],
      "wan_posterior_parameters_sub": lambda: _torch5(inter["wan_posterior_parameters"])[..., ::7, ::7],
      "z_sub": lambda: _torch5(inter["z"])[..., ::7, ::7],
      "pose_enc_recon": lambda: np.asarray(inter["pose_enc_recon"]),
      "pose_enc_gt": lambda: np.asarray(inter["pose_enc_gt"]),
      "depth_recon_sub": lambda: np.asarray(inter["depth_recon"])[:, :, ::28, ::28, :],
      "depth_gt_sub": lambda: np.asarray(inter["depth_gt"])[:, :, ::28, ::28, :],
      "point_recon_sub": lambda: np.asarray(inter["point_recon"])[:, :, ::28, ::28, :],
      "point_gt_sub": lambda: np.asarray(inter["point_gt"])[:, :, ::28, ::28, :],
      "image_cosine_map_sub": lambda: np.asarray(inter["image_cosine_map"])[..., ::4, ::4],
      "camera_cosine": lambda: np.asarray(inter["camera_cosine"]),
      "grad_norm": lambda: np.asarray(gnorm, np.float32),
  }
  table = adapter_table.table(adapter.cfg)
  flat_grads = {tuple(p): v for p, v in nnx.to_flat_state(grads)}
  for name in outs:
    if name in metrics:
      yield Check(name, np.asarray(metrics[name], np.float32))
    elif name in sub:
      yield Check(name, sub[name]())
    elif name.startswith(GRAD_PREFIX):
      key = name[len(GRAD_PREFIX):]
      rule = table.rule(key[len("model."):] if key.startswith("model.") else key)
      if rule is None:
        raise KeyError(f"{fx.name}: no converter rule for gradient {key!r}")
      g = flat_grads[rule.path]
      g = np.asarray(value_of(g), np.float32)
      if rule.index is not None:
        g = g[rule.index]
      if rule.transform.name not in ("identity", "flatten"):
        raise NotImplementedError(f"{fx.name}: gradient {key!r} needs the inverse of {rule.transform.name}")
      yield Check(name, g.reshape(fx.tensor(name).shape))  # bias as is; RMS gamma [C] -> [C, 1, 1, 1]
    else:
      raise KeyError(f"{fx.name}: output {name!r} has no counterpart in the port")
