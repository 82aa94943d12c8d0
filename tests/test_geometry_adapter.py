"""Geometry adapter: chunked (scan) path == whole-clip path, hard-wired grids, bad inputs, table, round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.nn.params import abstract_module

from gen3r_jax.convert.core import convert, param_targets
from gen3r_jax.convert.sources import DictSource
from gen3r_jax.convert.tables.geometry_adapter import table
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
from gen3r_jax.models.wan_vae.vae import host_init
from gen3r_jax.nn.resample import nearest_exact_indices
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path

SMALL = GeometryAdapterConfig(hidden_dim=4, z_dim=4, input_dim=20, output_dim=20, resample_scale=10,
                              num_res_blocks=1, latent_mean=(0.1, -0.2, 0.3, 0.0),
                              latent_std=(0.5, 0.7, 0.9, 1.1))


@pytest.fixture(scope="module")
def small():
  return host_init(GeometryAdapter, SMALL, seed=2)


def test_chunked_scan_equals_whole_clip(small):
  tokens = jax.random.normal(jax.random.key(0), (2, 5, 40, 40, 20))
  post = small.encode(tokens)
  assert post.parameters.shape == (2, 2, 70, 70, 8)
  np.testing.assert_allclose(post.parameters, small.encode(tokens, chunked=False).parameters,
                             rtol=1e-5, atol=1e-5)
  z = jax.random.normal(jax.random.key(1), (2, 2, 70, 70, 4))
  dec = small.decode(z)
  assert dec.shape == (2, 5, 40, 40, 20)
  np.testing.assert_allclose(dec, small.decode(z, chunked=False), rtol=1e-5, atol=1e-5)


def test_hard_wired_nearest_tables():
  """40 -> 70 with scale_factor 1.75 and 70 -> 80 by size, as the fixture notes give them."""
  i = np.arange(70)
  np.testing.assert_array_equal(nearest_exact_indices(40, 70, 1.75), (2 * i + 1) * 40 // 140)
  j = np.arange(80)
  np.testing.assert_array_equal(nearest_exact_indices(70, 80), (2 * j + 1) * 70 // 160)


@pytest.mark.parametrize("shape,dtype,msg", [
    ((1, 5, 40, 40, 16), jnp.float32, "expected 20 channels last"),
    ((1, 5, 32, 32, 20), jnp.float32, "only accepts a 40x40 token grid"),
    ((1, 4, 40, 40, 20), jnp.float32, r"must be 1 \+ 4k"),
    ((5, 40, 40, 20), jnp.float32, "expected a rank-5 array"),
    ((1, 5, 40, 40, 20), jnp.int32, "expected a floating-point array"),
])
def test_encode_bad_input(small, shape, dtype, msg):
  with pytest.raises(Gen3RInputError, match=msg):
    small.encode(jnp.zeros(shape, dtype))


@pytest.mark.parametrize("shape,dtype,msg", [
    ((1, 2, 70, 70, 16), jnp.float32, "expected 4 latent channels last"),
    ((1, 2, 60, 60, 4), jnp.float32, "only decodes 70x70 latents"),
    ((2, 70, 70, 4), jnp.float32, "expected a rank-5 array"),
    ((1, 2, 70, 70, 4), jnp.int32, "expected a floating-point array"),
])
def test_decode_bad_input(small, shape, dtype, msg):
  with pytest.raises(Gen3RInputError, match=msg):
    small.decode(jnp.zeros(shape, dtype))


def test_checkpoint_round_trip(small, tmp_path):
  small.save_checkpoint(str(tmp_path / "ckpt"))
  restored = GeometryAdapter.from_checkpoint(str(tmp_path / "ckpt"))
  assert restored.cfg == SMALL
  a, b = nnx.state(small, nnx.Param), nnx.state(restored, nnx.Param)
  for (pa, va), (pb, vb) in zip(nnx.to_flat_state(a), nnx.to_flat_state(b)):
    assert pa == pb
    np.testing.assert_array_equal(va[...], vb[...])


def test_table_key_forms_and_ignored_mean_std():
  """``state_dict()`` keys (``model.``) and a ``save_pretrained_safetensors`` file (no prefix + mean/std)."""
  fx = Fixture.open(fixture_path("geometry_adapter_tiny"))
  cfg = GeometryAdapterConfig.from_fixture(fx.config)
  assert cfg == GeometryAdapterConfig.tiny()
  src = fx.weights_source()
  targets = param_targets(abstract_module(lambda: GeometryAdapter(cfg, rngs=nnx.Rngs(0))))
  keys = {k: np.zeros(src.shape(k), np.float32) for k in src.keys()}
  _, report = convert(table(cfg), DictSource(keys), targets, shapes_only=True)
  assert report.ok and report.counts()["mapped"] == 202
  saved = {k[len("model."):]: v for k, v in keys.items()}
  saved.update(mean=np.zeros(16, np.float32), std=np.ones(16, np.float32))
  _, report = convert(table(cfg), DictSource(saved), targets, shapes_only=True)
  assert report.ok and report.counts()["ignored"] == 2
  assert report.keys["mean"] == {"fate": "ignored", "reason": "hard-coded constants are used"}
