"""Parity case ``clip_vision_tiny``: ``CLIPModel.forward`` (resize, normalise, ViT without its last block)."""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.nn.params import abstract_module

from gen3r_jax.convert import load_torch_weights
from gen3r_jax.convert.tables.clip import table
from gen3r_jax.models.clip.model import CLIPVision, CLIPVisionConfig, _preprocess, encode_videos
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check


def build(fx: Fixture, dtype: str = "float32", **overrides) -> CLIPVision:
  cfg = CLIPVisionConfig.from_fixture(fx.config, dtype=dtype, attention="xla", **overrides)
  # built abstractly (no random init to compile), then every parameter is filled by the strict converter
  model = abstract_module(lambda: CLIPVision(cfg, rngs=nnx.Rngs(0)))
  load_torch_weights(model, table(cfg), fx.weights_source())
  return model


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  model = build(fx, dtype)
  # videos: list of [C, T, H, W] (torch) -> [T, H, W, C]
  names = sorted((n for n in fx.inputs if n.startswith("video")), key=lambda n: int(n[5:]))
  videos = [jnp.asarray(np.transpose(fx.tensor(n), (1, 2, 3, 0))) for n in names]
  yield Check("clip_context", np.asarray(encode_videos(model, videos), np.float32))
  pixels = jnp.concatenate([_preprocess(model, v) for v in videos], axis=0)  # [sumT, S, S, 3]
  yield Check("preprocessed", np.transpose(np.asarray(pixels, np.float32), (0, 3, 1, 2)))

  full = build(fx, dtype, use_31_block=False)
  ref_pixels = jnp.asarray(np.transpose(fx.tensor("preprocessed"), (0, 2, 3, 1)))
  out = nnx.jit(lambda m, x: m.visual(x))(full, ref_pixels)
  yield Check("visual_all_blocks_no_post_norm", np.asarray(out, np.float32))
