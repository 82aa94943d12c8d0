"""Parity case ``vggt_tiny``: aggregator (all layers), DINOv2 debug intermediates, camera head, full forward,
pose decoding and depth unprojection, against the official VGGT as vendored in Gen3R.

Everything model-side runs in one ``nnx.jit`` (compiling is what costs time on CPU): the aggregator returns every
layer the fixture stores and the heads read the kept ones, exactly as ``VGGT.forward`` does. The camera-head
iterations are therefore compared on our own aggregator tokens (a stricter check than on the stored ones).
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.convert import load_torch_weights
from gen3r_jax.convert.tables.vggt import table
from gen3r_jax.models.vggt import VGGT, VGGTConfig, abstract_model
from gen3r_jax.models.vggt.aggregator import normalize_images
from gen3r_jax.models.vggt.geometry import pose_encoding_to_extri_intri, unproject_depth_map_to_point_map
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check


def build(fx: Fixture, dtype: str = "float32") -> VGGT:
  cfg = VGGTConfig.from_fixture(fx.config, dtype=dtype)
  model = abstract_model(cfg)  # no random init: the strict converter fills every parameter
  load_torch_weights(model, table(cfg), fx.weights_source())
  return model


@functools.partial(nnx.jit, static_argnames=("layers",))
def forward_all(model: VGGT, x, layers):
  """``VGGT.forward`` keeping every layer in ``layers`` plus the debug intermediates."""
  cfg = model.cfg
  b, s, hh, ww, _ = x.shape
  normed = normalize_images(x)
  pe = model.aggregator.patch_embed
  tokens = model.aggregator(x, layers=layers)                              # [K, B, S, P, 2C]
  kept = tokens[np.asarray([layers.index(i) for i in cfg.intermediate_layer_idx])]
  out = model.heads(kept, (hh, ww))
  out.update(tokens=tokens, normed=normed, patch=pe(normed.reshape(b * s, hh, ww, 3)),
             pos=pe.interpolate_pos_encoding(hh // cfg.patch_size, ww // cfg.patch_size))
  return out


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  model = build(fx, dtype)
  cfg = model.cfg
  calls = {c["name"]: c for c in fx.calls}
  images = np.transpose(fx.tensor("images"), (0, 1, 3, 4, 2))             # [B, S, H, W, 3]
  hh, ww = images.shape[2:4]

  agg_names = [n for n in calls["aggregator"]["outputs"] if n.startswith("aggregated_tokens_")]
  layers = tuple(int(n.rsplit("_", 1)[1]) for n in agg_names)
  out = forward_all(model, jnp.asarray(images), layers)
  tokens = np.asarray(out["tokens"])
  for k, name in enumerate(agg_names):
    yield Check(name, tokens[k])
  yield Check("patch_start_idx", np.array([cfg.patch_start_idx], np.int64), kind="exact")
  yield Check("images_normalized", np.transpose(np.asarray(out["normed"]), (0, 1, 4, 2, 3)))
  yield Check("patch_embed_x_norm_patchtokens", np.asarray(out["patch"]))
  yield Check("patch_embed_pos_embed_interpolated", np.asarray(out["pos"])[None])
  poses = np.asarray(out["pose_enc_list"])                                 # [iters, B, S, 9]
  for i, name in enumerate(calls["camera_head"]["outputs"]):
    yield Check(name, poses[i])
  for name in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
    yield Check(name, np.asarray(out[name]))

  # pose decoding and unprojection on the stored tensors
  ext, intr = pose_encoding_to_extri_intri(jnp.asarray(fx.tensor("pose_enc")), (hh, ww))
  yield Check("extrinsic", np.asarray(ext))
  yield Check("intrinsic", np.asarray(intr))
  yield from unprojection_checks(fx)


def unprojection_checks(fx: Fixture) -> Iterator[Check]:
  """``unproject_depth_map_to_point_map`` on the stored depth and cameras, once per batch element.

  The reference runs it per batch element (numpy, one ``[S, H, W, 1]`` depth at a time). The stored outputs hold
  ``B'`` of them (``B' = 1``, element 0 only, as the pipeline does, in the fixture as shipped; a batch variant may
  store every element): we compute all ``B`` and compare the first ``B'``, so a fixture with more stored elements
  than batch elements fails on shape rather than passing on a subset.
  """
  depth, e, k = fx.tensor("depth"), fx.tensor("extrinsic"), fx.tensor("intrinsic")
  pts, masks, masks_mm = [], [], []
  for b in range(depth.shape[0]):
    p, m = unproject_depth_map_to_point_map(depth[b], e[b], k[b], min_max_depth_mask=False)
    _, mm = unproject_depth_map_to_point_map(depth[b], e[b], k[b], min_max_depth_mask=True)
    pts.append(p)
    masks.append(m)
    masks_mm.append(mm)
  for name, ours, kind in (("unprojected_points", np.stack(pts), "allclose"),
                           ("point_masks", np.stack(masks).astype(np.uint8), "mask"),
                           ("point_masks_min_max", np.stack(masks_mm).astype(np.uint8), "mask")):
    stored = fx.tensor(name).shape[0]
    yield Check(name, ours[:stored] if stored <= ours.shape[0] else ours, kind=kind)
