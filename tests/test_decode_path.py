"""Gen3R geometry decode path: heads on batches / frame chunks, host unprojection, input checks.

The full path at 560x560 against the official outputs runs in ``tests/test_parity.py`` (``decode_path_tiny``);
here the jitted heads run on a small token grid so the test stays fast.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.vggt import VGGT
from gen3r_jax.models.vggt.geometry import unproject_depth_map_to_point_map
from gen3r_jax.sampling.geometry_decode import (decode_geometry, extrinsics_to_c2w, run_heads, split_joint_latents,
                                                unproject_batch)
from gen3r_jax.testing.cases.decode_path import build, stored_frames, vggt_config
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path


@pytest.fixture(scope="module")
def fx() -> Fixture:
  return Fixture.open(fixture_path("decode_path_tiny"))


@pytest.fixture(scope="module")
def models(fx):
  return build(fx)


def test_vggt_config_from_heads_only_fixture(fx):
  cfg = vggt_config(fx.config["vggt"])
  assert cfg.embed_dim == 32 and cfg.camera_num_heads == 2 and cfg.dpt_features == 16
  assert cfg.dpt_out_channels == (8, 16, 32, 32) and cfg.intermediate_layer_idx == (4, 11, 17, 23)
  assert (cfg.point_activation, cfg.depth_activation) == ("inv_log", "exp")
  bad = {**fx.config["vggt"], "depth_head": {**fx.config["vggt"]["depth_head"], "features": 8}}
  with pytest.raises(ValueError, match="one DPT config is shared"):
    vggt_config(bad)
  assert stored_frames(fx, "point_maps", 5) == [0, 4]


def test_heads_batch2_chunked_equal_single_unchunked(models):
  _, vggt = models
  d = 2 * vggt.cfg.embed_dim
  tokens = jax.random.normal(jax.random.key(0), (2, 3, 4, 4, 5 * d))    # [B, F, h, w, 5D]: 56x56 images
  out = run_heads(vggt.camera_head, vggt.depth_head, vggt.point_head, tokens, patch_size=14, frames_chunk_size=2)
  assert out["depth"].shape == (2, 3, 56, 56, 1) and out["points"].shape == (2, 3, 56, 56, 3)
  assert out["pose_enc_list"].shape == (4, 2, 3, 9) and out["extrinsics"].shape == (2, 3, 3, 4)
  # the camera + 4 register slots all hold the spatial mean of the 5th chunk
  mean = np.asarray(tokens[..., 4 * d:]).mean(axis=(2, 3))
  np.testing.assert_allclose(out["special"], np.broadcast_to(mean[:, :, None], (2, 3, 5, d)), atol=1e-6)
  np.testing.assert_allclose(out["intrinsics"][..., :2, 2], 28.0)
  # frames are independent in the DPT heads and batch elements are independent everywhere
  one = run_heads(vggt.camera_head, vggt.depth_head, vggt.point_head, tokens[1:], patch_size=14,
                  frames_chunk_size=0, with_points=False)
  assert "points" not in one
  for k in ("depth", "depth_conf", "pose_enc", "extrinsics", "intrinsics"):
    np.testing.assert_allclose(out[k][1:], one[k], rtol=2e-5, atol=2e-5, err_msg=k)


def test_unproject_batch_and_c2w():
  rng = np.random.default_rng(0)
  depth = rng.uniform(0.5, 3.0, (2, 2, 6, 8, 1)).astype(np.float32)
  q = rng.standard_normal((2, 2, 3, 3))
  rot = np.linalg.qr(q)[0]
  ext = np.concatenate([rot, rng.standard_normal((2, 2, 3, 1))], -1).astype(np.float32)
  k = np.tile(np.array([[5.0, 0, 4], [0, 6.0, 3], [0, 0, 1]], np.float32), (2, 2, 1, 1))
  pcds, masks = unproject_batch(depth, ext, k, min_max_depth_mask=True)
  assert pcds.shape == (2, 2, 6, 8, 3) and pcds.dtype == np.float64 and masks.dtype == np.bool_
  for b in range(2):
    p, m = unproject_depth_map_to_point_map(depth[b], ext[b], k[b], min_max_depth_mask=True)
    np.testing.assert_array_equal(pcds[b], p)
    np.testing.assert_array_equal(masks[b], m)
  assert 0 < masks.sum() < masks.size  # the percentile bounds drop the extremes of each frame
  c2w = extrinsics_to_c2w(ext)
  w2c = np.concatenate([ext, np.tile([[[[0, 0, 0, 1]]]], (2, 2, 1, 1))], -2)
  np.testing.assert_allclose(c2w @ w2c, np.broadcast_to(np.eye(4), (2, 2, 4, 4)), atol=1e-5)
  # the camera centre of frame (0, 0) projects pixel (cx, cy) at depth d to d along its optical axis
  centre = pcds[0, 0, 3, 4] - c2w[0, 0, :3, 3]
  np.testing.assert_allclose(centre, c2w[0, 0, :3, 2] * depth[0, 0, 3, 4, 0], rtol=1e-5)


def test_split_joint_latents():
  z = jnp.arange(2 * 2 * 3 * 8 * 1, dtype=jnp.float32).reshape(2, 2, 3, 8, 1)
  wan, geo = split_joint_latents(z)
  np.testing.assert_array_equal(wan, z[:, :, :, :4])
  np.testing.assert_array_equal(geo, z[:, :, :, 4:])
  with pytest.raises(Gen3RInputError, match="even width"):
    split_joint_latents(z[:, :, :, :7])


@pytest.fixture(scope="module")
def other_models(fx):
  """Shapes only (every check must fire before anything is traced): VGGTs that do not fit the adapter."""
  small = vggt_config(fx.config["vggt"], depth=4, intermediate_layer_idx=(0, 1, 2, 3), pe_depth=1)
  narrow = nnx.eval_shape(lambda: VGGT(small.replace(embed_dim=16, num_heads=1, camera_num_heads=1),
                                       rngs=nnx.Rngs(0)))
  regs = nnx.eval_shape(lambda: VGGT(small.replace(num_register_tokens=2), rngs=nnx.Rngs(0)))
  return narrow, regs


@pytest.mark.parametrize("shape, kw, match", [
    ((1, 16, 2, 70, 70), {}, "looks like PyTorch's"),
    ((1, 2, 70, 140, 16), {}, "joint"),
    ((1, 2, 40, 40, 16), {}, "only decodes 70x70"),
    ((2, 70, 70, 16), {}, "rank-5"),
    ((1, 2, 70, 70, 8), {}, "expected 16 latent channels"),
    ((1, 2, 70, 70, 16), {"image_hw": (518, 518)}, "does not match the decoded token grid"),
    ((1, 2, 70, 70, 16), {"frames_chunk_size": -1}, "frames_chunk_size"),
])
def test_bad_inputs(models, shape, kw, match):
  adapter, vggt = models
  with pytest.raises(Gen3RInputError, match=match):
    decode_geometry(adapter, vggt, np.zeros(shape, np.float32), **kw)


def test_mismatched_models(models, other_models):
  adapter, _ = models
  other, regs = other_models
  z = np.zeros((1, 2, 70, 70, 16), np.float32)
  with pytest.raises(Gen3RInputError, match="output_dim 320 does not match VGGT"):
    decode_geometry(adapter, other, z)
  with pytest.raises(Gen3RInputError, match="2 register tokens"):
    decode_geometry(adapter, regs, z)
