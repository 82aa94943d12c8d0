"""VGGT geometry helpers: token lists from decoded geometry latents, scene scale, pose decoding, unprojection,
and the PyTorch-exact pieces the DPT heads rely on (bilinear align_corners resize, float32 linspace)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.vggt.dpt_head import _linspace_f32
from gen3r_jax.models.vggt.geometry import (convert_to_token_list, pose_encoding_to_extri_intri, scene_scale,
                                            unproject_depth_map_to_point_map)
from gen3r_jax.nn.resample import resize
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path


def test_convert_to_token_list_layout():
  b, f, h, w, d = 2, 3, 4, 5, 6
  x = np.random.default_rng(0).standard_normal((b, f, h, w, 5 * d)).astype(np.float32)
  tokens, image_hw = convert_to_token_list(jnp.asarray(x), patch_size=14)
  tokens = np.asarray(tokens)
  assert tokens.shape == (4, b, f, 5 + h * w, d) and image_hw == (56, 70)
  special = x[..., 4 * d:].mean(axis=(2, 3))                                # [B, F, D]
  for i in range(4):
    np.testing.assert_allclose(tokens[i, :, :, :5], np.broadcast_to(special[:, :, None], (b, f, 5, d)),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(tokens[i, :, :, 5:], x[..., i * d:(i + 1) * d].reshape(b, f, h * w, d))


def test_convert_to_token_list_matches_decode_path_fixture():
  fx = Fixture.open(fixture_path("decode_path_tiny"))
  frame0 = fx.tensor("vggt_tokens_frame0").astype(np.float32)              # [B, 5D, h, w] (float16-stored)
  ref = fx.tensor("token_list_0_special")                                  # [B, F, 5, D]
  tokens, image_hw = convert_to_token_list(jnp.asarray(np.transpose(frame0, (0, 2, 3, 1))[:, None]))
  assert image_hw == tuple(fx.config["image_size_hw"])
  atol, rtol = fx.float16_tolerance()
  np.testing.assert_allclose(np.asarray(tokens[0, :, 0, :5]), ref[:, 0].astype(np.float32), atol=atol, rtol=rtol)


def test_convert_to_token_list_errors():
  with pytest.raises(Gen3RInputError, match="must be 5 \\* D"):
    convert_to_token_list(jnp.zeros((1, 1, 2, 2, 12)))
  with pytest.raises(Gen3RInputError, match="rank-5"):
    convert_to_token_list(jnp.zeros((1, 2, 2, 10)))


@pytest.mark.parametrize("n", [1, 2, 7, 10, 11])
def test_scene_scale_uses_torch_lower_median(n):
  depth = np.random.default_rng(n).uniform(0.5, 3.0, (1, n)).astype(np.float32)
  ref = 0.8 * torch.median(torch.from_numpy(depth))
  np.testing.assert_allclose(float(jax.jit(scene_scale)(jnp.asarray(depth))), float(ref), rtol=0, atol=0)


def test_pose_encoding_identity_camera_and_principal_point():
  enc = np.zeros((1, 2, 9), np.float32)
  enc[..., 6] = 2.0                                                        # unnormalised identity quaternion
  enc[..., :3] = [1.0, 2.0, 3.0]
  enc[..., 7], enc[..., 8] = 2 * np.arctan(0.5), 2 * np.arctan(0.25)
  ext, intr = jax.jit(pose_encoding_to_extri_intri, static_argnums=1)(jnp.asarray(enc), (40, 60))
  np.testing.assert_allclose(np.asarray(ext)[0, 0], np.concatenate([np.eye(3), [[1], [2], [3]]], 1), atol=1e-6)
  k = np.asarray(intr)[0, 1]
  assert intr.dtype == jnp.float32
  np.testing.assert_allclose(k, [[30 / 0.25, 0, 30], [0, 20 / 0.5, 20], [0, 0, 1]], rtol=1e-6)


def test_unprojection_has_no_half_pixel_offset_and_masks():
  depth = np.full((1, 3, 4), 2.0, np.float32)
  depth[0, 0, 0] = 0.0
  ext = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)[None].astype(np.float32)
  intr = np.array([[[2.0, 0, 2.0], [0, 2.0, 1.0], [0, 0, 1]]], np.float32)
  pts, masks = unproject_depth_map_to_point_map(depth[..., None], ext, intr)
  assert pts.dtype == np.float64 and pts.shape == (1, 3, 4, 3)
  np.testing.assert_allclose(pts[0, 1, 2], [0.0, 0.0, 2.0])                # pixel (u=2, v=1) = principal point
  np.testing.assert_allclose(pts[0, 2, 3], [1.0, 1.0, 2.0])
  assert not masks[0, 0, 0] and masks.sum() == 11
  _, mm = unproject_depth_map_to_point_map(depth, ext, intr, min_max_depth_mask=True)
  assert not mm.any()                                                      # all valid depths equal the 98th pct
  with pytest.raises(Gen3RInputError, match="zero skew"):
    unproject_depth_map_to_point_map(depth, ext, intr + np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32))
  with pytest.raises(Gen3RInputError, match=r"\[S, 3, 4\]"):
    unproject_depth_map_to_point_map(depth, ext[:, :, :3], intr)


@pytest.mark.parametrize("src,dst", [((5, 5), (10, 10)), ((20, 13), (40, 26)), ((7, 9), (3, 4)),
                                     ((1, 3), (4, 6)), ((40, 40), (560, 560))])
def test_bilinear_align_corners_matches_torch(src, dst):
  x = np.random.default_rng(0).standard_normal((2, 3, *src)).astype(np.float32)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode="bilinear", align_corners=True)
  ours = resize(jnp.asarray(np.transpose(x, (0, 2, 3, 1))), dst, "bilinear", align_corners=True)
  np.testing.assert_allclose(np.transpose(np.asarray(ours), (0, 3, 1, 2)), ref.numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("start,end,steps", [(-0.7, 0.7, 5), (-0.6123, 0.6123, 40), (-0.9, 0.9, 560), (0.0, 1.0, 1)])
def test_linspace_matches_torch_float32(start, end, steps):
  # torch's vectorised CPU kernel groups the float32 products per SIMD block: equal to ~1 ulp of |end|
  ref = torch.linspace(start, end, steps, dtype=torch.float32).numpy()
  np.testing.assert_allclose(_linspace_f32(start, end, steps), ref, rtol=0, atol=1.2e-7)
