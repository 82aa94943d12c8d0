"""VGGT model: shapes on batch 2 / non-square inputs, frame chunking, remat, input errors, converter table."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.convert import convert, param_targets
from gen3r_jax.convert.check_manifest import check
from gen3r_jax.convert.sources import ShapeSource
from gen3r_jax.convert.tables.vggt import table
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.vggt import VGGT, VGGTConfig, abstract_model, validate_images
from gen3r_jax.testing.fixture import Fixture, fixtures_root
from tests.conftest import fixture_path

CFG = VGGTConfig.tiny(depth=4, intermediate_layer_idx=(0, 1, 2, 3), camera_trunk_depth=1, camera_iterations=2)


def host_random(cfg: VGGTConfig, seed: int = 0) -> VGGT:
  """A random model filled from numpy on the host (compiling the vmapped threefry init costs minutes on CPU)."""
  model = abstract_model(cfg)
  rng = np.random.default_rng(seed)
  flat = {}
  for path, sds in param_targets(model).items():
    if path[-1] == "scale":
      v = 1.0 + 0.1 * rng.standard_normal(sds.shape)
    elif path[-1] == "gamma":
      v = np.full(sds.shape, 0.1)
    else:
      v = 0.05 * rng.standard_normal(sds.shape)
    flat[path] = jnp.asarray(v, sds.dtype)
  nnx.update(model, nnx.State.from_flat_path(list(flat.items())))
  return model


@pytest.fixture(scope="module")
def tiny() -> VGGT:
  return host_random(CFG, seed=1)


def test_batch2_nonsquare_shapes_and_frame_chunking(tiny):
  b, s, h, w = 2, 3, 28, 42                       # 2x3 patch grid vs the stored 2x2 grid: pos-embed interpolated
  x = jax.random.uniform(jax.random.key(0), (b, s, h, w, 3))
  out = tiny(x, frames_chunk_size=2)              # 3 frames in chunks of 2: padded lax.map path
  assert out["pose_enc"].shape == (b, s, 9)
  assert out["pose_enc_list"].shape == (CFG.camera_iterations, b, s, 9)
  assert out["depth"].shape == (b, s, h, w, 1)
  assert out["depth_conf"].shape == (b, s, h, w)
  assert out["world_points"].shape == (b, s, h, w, 3)
  assert out["world_points_conf"].shape == (b, s, h, w)
  for v in out.values():
    assert np.all(np.isfinite(np.asarray(v)))
  assert np.all(np.asarray(out["depth"]) > 0) and np.all(np.asarray(out["depth_conf"]) > 1)
  # frames are independent in the heads: the unchunked depth head gives the same maps
  tokens = nnx.jit(lambda m, x: m.aggregator(x))(tiny, x)
  assert tokens.shape == (4, b, s, CFG.patch_start_idx + 6, 2 * CFG.embed_dim)
  depth, conf = nnx.jit(lambda m, t: m.depth_head(t, (h, w), 0))(tiny, tokens)
  np.testing.assert_allclose(np.asarray(depth), np.asarray(out["depth"]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(conf), np.asarray(out["depth_conf"]), rtol=1e-5, atol=1e-6)
  # the first frame uses the first camera/register tokens, the others the second ones
  special = np.asarray(tiny.aggregator.special_tokens(b, s, jnp.float32))
  np.testing.assert_array_equal(special[:, 0, 0], np.broadcast_to(np.asarray(tiny.aggregator.camera_token[...])[0, 0],
                                                                  (b, CFG.embed_dim)))
  np.testing.assert_array_equal(special[:, 1], special[:, 2])


def test_remat_policies_do_not_change_the_blocks(tiny):
  from gen3r_jax.models.vggt.aggregator import token_positions
  from gen3r_jax.models.vggt.layers import rope_tables
  p = CFG.patch_start_idx + 4
  tokens = jax.random.normal(jax.random.key(1), (1, 2, p, CFG.embed_dim))
  cos, sin = rope_tables(token_positions(2, 2, CFG.patch_start_idx), CFG.embed_dim // CFG.num_heads, 100.0)
  rf = (jnp.asarray(cos), jnp.asarray(sin))
  rg = (jnp.asarray(np.tile(cos, (2, 1))), jnp.asarray(np.tile(sin, (2, 1))))
  run = nnx.jit(lambda m, t: m.aggregator.run_blocks(t, (3, 1), rf, rg))
  ref = np.asarray(run(tiny, tokens))
  assert ref.shape == (2, 1, 2, p, 2 * CFG.embed_dim)
  state = nnx.state(tiny)
  for policy in ("full", "dots"):
    other = nnx.merge(nnx.graphdef(abstract_model(CFG.replace(remat=policy))), state)
    np.testing.assert_allclose(np.asarray(run(other, tokens)), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,value,message", [
    ((1, 2, 30, 28, 3), 0.5, "multiples of the patch size 14, got 30x28"),
    ((1, 2, 28, 28, 4), 0.5, "expected 3 RGB channels"),
    ((1, 2, 3, 28, 28), 0.5, "channels-last"),
    ((1, 2, 28, 28, 3), 1.5, "values must lie in [0, 1], got range [1.5, 1.5]"),
    ((1, 2, 28, 28, 3), -0.1, "pass x / 255"),
    ((1, 0, 28, 28, 3), 0.5, "at least one batch element and one frame"),
    ((2, 28, 28), 0.5, "expected a rank-5 array"),
])
def test_bad_images_are_refused_before_jit(shape, value, message):
  model = abstract_model(CFG)  # no weights: the check must fire before any computation
  with pytest.raises(Gen3RInputError, match=None) as e:
    model(jnp.full(shape, value, jnp.float32))
  assert message in str(e.value)


def test_integer_images_are_refused():
  with pytest.raises(Gen3RInputError, match="floating-point"):
    validate_images(np.zeros((1, 1, 14, 14, 3), np.uint8))


def test_rank4_images_get_a_batch_axis():
  assert validate_images(np.zeros((2, 14, 28, 3), np.float32)).shape == (1, 2, 14, 28, 3)


def test_from_fixture_reads_every_size():
  fx = Fixture.open(fixture_path("vggt_tiny"))
  cfg = VGGTConfig.from_fixture(fx.config)
  assert (cfg.embed_dim, cfg.depth, cfg.pe_depth, cfg.pos_grid, cfg.num_register_tokens) == (32, 24, 2, 2, 4)
  assert (cfg.dpt_features, cfg.dpt_out_channels, cfg.camera_num_heads) == (16, (8, 16, 32, 32), 2)
  with pytest.raises(ValueError, match="aa_order"):
    VGGTConfig.from_fixture({**fx.config, "aggregator": {**fx.config["aggregator"], "aa_block_size": 2}})
  with pytest.raises(ValueError, match="remat"):
    VGGTConfig.tiny(remat="sometimes")


def test_table_ignores_track_head_and_mask_token():
  cfg = VGGTConfig.from_fixture(Fixture.open(fixture_path("vggt_tiny")).config)
  fx = Fixture.open(fixture_path("vggt_tiny"))
  src = fx.weights_source()
  keys = {k: {"shape": list(src.shape(k))} for k in src.keys()}
  keys["track_head.feature_extractor.norm.weight"] = {"shape": [128]}
  _, report = convert(table(cfg), ShapeSource(keys), param_targets(abstract_model(cfg)), shapes_only=True)
  assert report.ok
  assert "track head" in report.keys["track_head.feature_extractor.norm.weight"]["reason"]
  assert report.keys["aggregator.patch_embed.mask_token"]["fate"] == "ignored"
  assert report.keys["aggregator.frame_blocks.23.attn.q_norm.weight"]["index"] == 23


def test_vggt_1b_manifest_is_covered():
  path = os.path.join(os.path.dirname(fixtures_root()), "manifests", "vggt_1b.json")
  ok, text = check(path)
  assert ok, text


def test_every_parameter_has_logical_axes():
  from gen3r_jax.nn.params import logical_axes
  model = abstract_model(CFG)
  stacks = ("blocks", "frame_blocks", "global_blocks", "trunk")
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    axes = logical_axes(var)
    assert axes is not None and len(axes) == var.get_value().ndim, path
    if any(p in stacks for p in path):
      assert axes[0] == "layers", (path, axes)
