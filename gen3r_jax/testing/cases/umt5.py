"""Parity case ``umt5_tiny``: ``WanT5EncoderModel.forward`` and its relative-position buckets / bias."""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.nn.params import abstract_module

from gen3r_jax.convert import load_torch_weights
from gen3r_jax.convert.tables.umt5 import table
from gen3r_jax.models.umt5.t5 import UMT5Config, UMT5Encoder, relative_position_buckets
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check


def build(fx: Fixture, dtype: str = "float32") -> UMT5Encoder:
  cfg = UMT5Config.from_fixture(fx.config, dtype=dtype, attention="xla")
  # built abstractly (no random init to compile), then every parameter is filled by the strict converter
  model = abstract_module(lambda: UMT5Encoder(cfg, rngs=nnx.Rngs(0)))
  load_torch_weights(model, table(cfg), fx.weights_source())
  return model


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  model = build(fx, dtype)
  cfg = model.cfg
  ids = jnp.asarray(fx.tensor("input_ids"))
  mask = jnp.asarray(fx.tensor("attention_mask"))
  hidden = nnx.jit(lambda m, i, a: m(i, a))(model, ids, mask)  # [B, L, D]
  yield Check("hidden_states", np.asarray(hidden, np.float32))

  for name in ("rel_buckets_LxL", "rel_buckets_160x160"):
    lq, lk = fx.tensor(name).shape
    yield Check(name, relative_position_buckets(lq, lk, cfg.num_buckets, cfg.max_distance).astype(np.int64),
                kind="exact")
  length = fx.tensor("block0_pos_bias").shape[-1]
  yield Check("block0_pos_bias", np.asarray(model.layer_position_bias(0, length), np.float32))
