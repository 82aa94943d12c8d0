"""Parity case ``wan_vae_tiny``: ``AutoencoderKLWan.encode`` / ``decode`` on T = 1, 5, 9 frame videos.

Each call's inputs are read in PyTorch layout (``B C T H W``), moved to channels-last, run through
:class:`WanVAE` (jitted once per shape) and moved back for comparison.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from flax import nnx

from gen3r_jax.nn.params import abstract_module

import jax.numpy as jnp

from gen3r_jax.convert.core import convert, param_targets, update_model
from gen3r_jax.convert.tables.wan_vae import table
from gen3r_jax.models.wan_vae.vae import WanVAE, WanVAEConfig
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check


def to_jax(x: np.ndarray) -> np.ndarray:
  """``[B, C, T, H, W] -> [B, T, H, W, C]``."""
  return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 4, 1)))


def to_torch(x) -> np.ndarray:
  """``[B, T, H, W, C] -> [B, C, T, H, W]``."""
  return np.ascontiguousarray(np.transpose(np.asarray(x, np.float32), (0, 4, 1, 2, 3)))


def run_autoencoder_calls(fx: Fixture, model) -> Iterator[Check]:
  """Shared by the VAE and adapter cases: ``encode*`` / ``decode*`` calls as the fixture lists them."""
  for call in fx.calls:
    (inp,) = call["inputs"]
    x = to_jax(fx.tensor(inp))
    outs = call["outputs"]
    if call["name"].startswith("encode"):
      post = model.encode(x)
      vals = {"parameters": post.parameters, "logvar": post.logvar, "mode": post.mode()}
      for name in outs:
        suffix = name.rsplit("posterior_", 1)[1]
        yield Check(name, to_torch(vals[suffix]))
    elif call["name"].startswith("decode"):
      for name in outs:
        clamp = not name.endswith("_unclamped")
        y = model.decode(x, clamp=clamp) if isinstance(model, WanVAE) else model.decode(x)
        yield Check(name, to_torch(y))
    else:
      raise ValueError(f"{fx.name}: unknown call {call['name']!r}")


def load_abstract(model_cls, cfg, tab, source):
  """Build ``model_cls(cfg)`` abstractly (no random init to compile) and fill every parameter strictly."""
  model = abstract_module(lambda: model_cls(cfg, rngs=nnx.Rngs(0)))
  params, _ = convert(tab, source, param_targets(model), strict=True)
  update_model(model, {k: jnp.asarray(v) for k, v in params.items()})
  return model


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  cfg = WanVAEConfig.from_fixture(fx.config).replace(dtype=dtype)
  model = load_abstract(WanVAE, cfg, table(cfg), fx.weights_source())
  yield from run_autoencoder_calls(fx, model)
