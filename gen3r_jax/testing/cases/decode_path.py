"""Parity case ``decode_path_tiny``: the geometry half of ``Gen3RPipeline.decode_latents``.

Runs :func:`gen3r_jax.sampling.geometry_decode.decode_geometry` (the production path, unchanged) on the stored
geometry latents and compares every stage the fixture stores: adapter decode (frame 0), the special tokens of
``convert_to_token_list``, the 4 camera-head iterations, cameras, the DPT point/depth maps, and the unprojected
point clouds with their percentile masks (``kind="mask"``: at most 0.01 % of pixels may flip at a threshold).

The fixture's weights file holds only what the path uses, under fixture-local prefixes: ``geo_adapter.`` (the
decode side: ``model.conv2.*``, ``model.decoder.*``) and ``vggt.`` (the three heads). Those parameters are filled
strictly by the converter (every mapped key present, shapes checked, no unknown key); the unused parts (adapter
encoder / ``conv1``, VGGT aggregator) get zeros so the models are complete.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.convert.core import convert, param_targets, update_model
from gen3r_jax.convert.sources import PrefixedSource
from gen3r_jax.convert.tables import geometry_adapter as adapter_table
from gen3r_jax.convert.tables import vggt as vggt_table
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
from gen3r_jax.models.vggt import VGGT, VGGTConfig
from gen3r_jax.sampling.geometry_decode import decode_geometry
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check

ADAPTER_USED = ("conv2", "decoder")
VGGT_USED = ("camera_head", "point_head", "depth_head")


def vggt_config(cfg: dict[str, Any], **kw) -> VGGTConfig:
  """A heads-only fixture config (``camera_head`` / ``point_head`` / ``depth_head`` with ``dim_in``) as a full
  :class:`VGGTConfig` (``embed_dim = dim_in / 2``; the unused aggregator gets the camera head's head count)."""
  cam, pt, dh = cfg["camera_head"], cfg["point_head"], cfg["depth_head"]
  common = ("dim_in", "patch_size", "features", "out_channels", "intermediate_layer_idx", "pos_embed",
            "feature_only", "down_ratio")
  for k in common:
    if pt.get(k) != dh.get(k):
      raise ValueError(f"point_head.{k} {pt.get(k)!r} != depth_head.{k} {dh.get(k)!r}: one DPT config is shared")
  full = dict(embed_dim=cam["dim_in"] // 2, patch_size=cfg.get("patch_size", 14), camera_head=cam,
              aggregator={"num_heads": cam.get("num_heads", 16),
                          "depth": max(pt.get("intermediate_layer_idx", (23,))) + 1},
              dpt_common={k: pt[k] for k in common if k in pt},
              point_head={k: pt[k] for k in ("output_dim", "activation", "conf_activation") if k in pt},
              depth_head={k: dh[k] for k in ("output_dim", "activation", "conf_activation") if k in dh})
  return VGGTConfig.from_fixture(full, **kw)


def load_used(model_cls, cfg, table, source, used: tuple[str, ...]):
  """Build ``model_cls(cfg)`` abstractly, fill the parameters under ``used`` strictly from ``source`` and the
  rest with zeros (parts the decode path never runs)."""
  model = nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(0)))
  targets = param_targets(model)
  wanted = {p: t for p, t in targets.items() if str(p[0]) in used}
  params, _ = convert(table, source, wanted, strict=True)
  values = {p: jnp.asarray(params[p]) if p in params else jnp.zeros(t.shape, t.dtype) for p, t in targets.items()}
  update_model(model, values)
  return model


def build(fx: Fixture, dtype: str = "float32") -> tuple[GeometryAdapter, VGGT]:
  src = fx.weights_source()
  acfg = GeometryAdapterConfig.from_fixture(fx.config["geo_adapter"]).replace(dtype=dtype)
  adapter = load_used(GeometryAdapter, acfg, adapter_table.table(acfg), PrefixedSource(src, "geo_adapter."),
                      ADAPTER_USED)
  vcfg = vggt_config(fx.config["vggt"], dtype=dtype)
  vggt = load_used(VGGT, vcfg, vggt_table.table(vcfg), PrefixedSource(src, "vggt."), VGGT_USED)
  return adapter, vggt


def stored_frames(fx: Fixture, name: str, num_frames: int) -> list[int]:
  """Frame indices a partially stored tensor keeps (``"... (F' = frames [0, 4])"`` in its layout)."""
  m = re.search(r"frames \[([\d,\s]+)\]", fx.meta.get("layouts", {}).get(name, ""))
  if m:
    return [int(v) for v in m.group(1).split(",")]
  n = fx.tensor(name).shape[1]
  return list(range(num_frames)) if n == num_frames else [0, num_frames - 1][:n]


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  adapter, vggt = build(fx, dtype)
  calls = {c["name"]: c for c in fx.calls}
  z = np.ascontiguousarray(np.transpose(fx.tensor("geo_latents"), (0, 2, 3, 4, 1)))  # [B, t, 70, 70, 16]
  hw = tuple(fx.config.get("image_size_hw", (560, 560)))
  out = decode_geometry(adapter, vggt, z, image_hw=hw, min_max_depth_mask=fx.config.get("min_max_depth_mask", True),
                        return_tokens=True)
  tokens = np.asarray(out["tokens"])                                        # [B, F, 40, 40, 5D]
  yield Check("vggt_tokens_frame0", np.transpose(tokens[:, 0], (0, 3, 1, 2)))
  yield Check("token_list_0_special", np.asarray(out["special"]))
  poses = np.asarray(out["pose_enc_list"])                                  # [iters, B, F, 9]
  for name in calls["camera_head"]["outputs"]:
    if name.startswith("pose_enc_iter"):
      yield Check(name, poses[int(name.removeprefix("pose_enc_iter"))])
  yield Check("extrinsic", np.asarray(out["extrinsics"]))
  yield Check("intrinsic", np.asarray(out["intrinsics"]))
  f = tokens.shape[1]
  yield Check("point_maps", np.asarray(out["points"])[:, stored_frames(fx, "point_maps", f)])
  yield Check("depth_maps", np.asarray(out["depth"]))
  yield Check("pcds", out["pcds"])
  yield Check("point_masks", out["masks"].astype(np.uint8), kind="mask")
