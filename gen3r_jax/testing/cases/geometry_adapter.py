"""Parity case ``geometry_adapter_tiny``: ``GeometryAdapter.encode`` / ``decode`` on a 5-frame 40x40 grid."""

from __future__ import annotations

from typing import Iterator

from gen3r_jax.convert.tables.geometry_adapter import table
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
from gen3r_jax.testing.cases.wan_vae import load_abstract, run_autoencoder_calls
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  cfg = GeometryAdapterConfig.from_fixture(fx.config).replace(dtype=dtype)
  model = load_abstract(GeometryAdapter, cfg, table(cfg), fx.weights_source())
  yield from run_autoencoder_calls(fx, model)
