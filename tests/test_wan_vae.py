"""Wan VAE: chunked (scan) path == whole-clip path, bad inputs, checkpoint round trip, program size vs T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.convert.core import convert, param_targets
from gen3r_jax.convert.sources import DictSource
from gen3r_jax.convert.tables.wan_vae import table
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.wan_vae.vae import DiagonalGaussian, WanVAE, WanVAEConfig, host_init
from gen3r_jax.nn.params import abstract_module
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path

# A small model with every block kind (res with/without shortcut, down/up 2d/3d, attention). Not narrower:
# with 2 channels the RMS norms (a projection onto a circle) amplify float32 rounding to ~1e-4.
SMALL = WanVAEConfig(dim=4, z_dim=4, num_res_blocks=1, latent_mean=(0.1, -0.2, 0.3, 0.0),
                     latent_std=(1.5, 0.5, 2.0, 1.0))


@pytest.fixture(scope="module")
def small():
  return host_init(WanVAE, SMALL, seed=1)


def test_chunked_scan_equals_whole_clip(small):
  video = jax.random.uniform(jax.random.key(0), (2, 9, 16, 16, 3), minval=-1, maxval=1)
  chunked = small.encode(video).parameters
  whole = small.encode(video, chunked=False).parameters
  assert chunked.shape == (2, 3, 2, 2, 8)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)
  z = jax.random.normal(jax.random.key(1), (2, 3, 2, 2, 4))
  dec = small.decode(z, clamp=False)
  assert dec.shape == (2, 9, 16, 16, 3)
  np.testing.assert_allclose(dec, small.decode(z, clamp=False, chunked=False), rtol=1e-5, atol=1e-5)
  # clamp is the only difference between the two decode modes
  np.testing.assert_array_equal(small.decode(z), jnp.clip(dec, -1, 1))


def test_program_size_does_not_grow_with_frames(small):
  g, s = nnx.split(small)
  n_eqns = []
  for t in (5, 9, 49):
    x = jax.ShapeDtypeStruct((1, t, 16, 16, 3), jnp.float32)
    n_eqns.append(len(jax.make_jaxpr(lambda s, x: nnx.merge(g, s).encode_params(x))(s, x).eqns))
  assert n_eqns[0] == n_eqns[1] == n_eqns[2]


def test_posterior():
  params = jnp.concatenate([jnp.ones((1, 1, 2, 2, 4)), jnp.full((1, 1, 2, 2, 4), 50.0)], axis=-1)
  post = DiagonalGaussian(params)
  np.testing.assert_array_equal(post.logvar, 20.0)  # clamped to [-30, 20]
  np.testing.assert_array_equal(post.mode(), 1.0)
  s = post.sample(jax.random.key(0))
  assert s.shape == (1, 1, 2, 2, 4) and not np.allclose(s, 1.0)
  np.testing.assert_allclose(post.sample(eps=jnp.full((1, 1, 2, 2, 4), 0.5)), 1.0 + 0.5 * np.exp(10.0),
                             rtol=1e-6)
  np.testing.assert_allclose(post.kl_terms(), 0.5 * (1.0 + np.exp(20.0) - 1.0 - 20.0), rtol=1e-6)


@pytest.mark.parametrize("shape,dtype,msg", [
    ((1, 5, 16, 16, 4), jnp.float32, "expected 3 channels last"),
    ((1, 3, 5, 16, 16), jnp.float32, "expected 3 channels last"),
    ((1, 6, 16, 16, 3), jnp.float32, r"must be 1 \+ 4k"),
    ((1, 5, 12, 16, 3), jnp.float32, "multiples of 8"),
    ((5, 16, 16, 3), jnp.float32, "expected a rank-5 array"),
    ((1, 5, 16, 16, 3), jnp.uint8, "expected a floating-point array"),
])
def test_encode_bad_input(small, shape, dtype, msg):
  with pytest.raises(Gen3RInputError, match=msg):
    small.encode(jnp.zeros(shape, dtype))


@pytest.mark.parametrize("shape,dtype,msg", [
    ((1, 2, 2, 2, 16), jnp.float32, "expected 4 latent channels last"),
    ((2, 2, 2, 4), jnp.float32, "expected a rank-5 array"),
    ((1, 2, 2, 2, 4), jnp.int32, "expected a floating-point array"),
])
def test_decode_bad_input(small, shape, dtype, msg):
  with pytest.raises(Gen3RInputError, match=msg):
    small.decode(jnp.zeros(shape, dtype))


def test_checkpoint_round_trip(small, tmp_path):
  small.save_checkpoint(str(tmp_path / "ckpt"))
  restored = WanVAE.from_checkpoint(str(tmp_path / "ckpt"))
  assert restored.cfg == SMALL
  a, b = nnx.state(small, nnx.Param), nnx.state(restored, nnx.Param)
  for (pa, va), (pb, vb) in zip(nnx.to_flat_state(a), nnx.to_flat_state(b)):
    assert pa == pb
    np.testing.assert_array_equal(va[...], vb[...])


def test_table_accepts_both_key_forms():
  """The original ``Wan2.1_VAE.pth`` names (no prefix) and ``AutoencoderKLWan.state_dict()`` (``model.``)."""
  fx = Fixture.open(fixture_path("wan_vae_tiny"))
  cfg = WanVAEConfig.from_fixture(fx.config)
  assert cfg == WanVAEConfig.tiny()
  src = fx.weights_source()
  targets = param_targets(abstract_module(lambda: WanVAE(cfg, rngs=nnx.Rngs(0))))
  shapes = {k: np.zeros(src.shape(k), np.float32) for k in src.keys()}
  for keys in (shapes, {k[len("model."):]: v for k, v in shapes.items()}):
    _, report = convert(table(cfg), DictSource(keys), targets, shapes_only=True)
    assert report.ok and report.counts()["mapped"] == len(keys) == 194


def test_every_parameter_has_logical_axes():
  from gen3r_jax.nn.params import abstract_module, logical_axes
  abstract = abstract_module(lambda: WanVAE(WanVAEConfig(), rngs=nnx.Rngs(0)))
  for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
    axes = logical_axes(var)
    assert axes is not None and len(axes) == len(var.get_value().shape), path
