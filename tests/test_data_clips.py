"""Clip sampling, resize + crop, intrinsics and relative poses against the official rules (§1.4–1.6)."""

import numpy as np
import pytest

from gen3r_jax.data import clips as C
from gen3r_jax.errors import Gen3RInputError


def _draws(cfg, length, n=400, seed=0):
  rng = np.random.default_rng(seed)
  return [C.sample_indices(rng, length, cfg) for _ in range(n)]


def test_official_table():
  s1, s1v = C.official_clip_config(1, "train"), C.official_clip_config(1, "val")
  s2, s2v = C.official_clip_config(2, "train"), C.official_clip_config(2, "val")
  assert (s1.strides, s1.start, s1.order) == ((1, 2), None, "images")
  assert (s1v.strides, s1v.start) == ((2,), 0)
  assert (s2.strides, s2.start, s2.order) == ((1,), None, "cameras")
  assert (s2v.strides, s2v.start) == ((1,), 0)
  assert s1.num_frames == s2.num_frames == 49 and s1.height == s1.width == 560
  with pytest.raises(Gen3RInputError, match="pad must be one of"):
    C.ClipConfig(pad="wrap").validate()


def test_stage1_stride_and_start_range():
  cfg = C.ClipConfig(num_frames=5, strides=(1, 2))
  draws = _draws(cfg, 20)
  strides = {int(d[1] - d[0]) for d in draws}
  assert strides == {1, 2}  # randint(1, 2) inclusive
  for d in draws:
    s = d[1] - d[0]
    np.testing.assert_array_equal(d, d[0] + s * np.arange(5))
    assert 0 <= d[0] <= 20 - 4 * s - 1  # start uniform over [0, L - (n-1)·stride - 1]
  starts = {int(d[0]) for d in draws if d[1] - d[0] == 2}
  assert starts == set(range(0, 12))  # every allowed start occurs


def test_stride_falls_back_to_one_and_pads_first_last():
  cfg = C.ClipConfig(num_frames=5, strides=(2,))
  for d in _draws(cfg, 9, n=50):  # 9 < 5 * 2: stride 1
    assert np.all(np.diff(d) == 1)
  short = _draws(C.ClipConfig(num_frames=6, strides=(1,)), 3, n=300)
  firsts = set()
  for d in short:  # [0]*k + [0, 1, 2] + [2]*(3-k)
    k = int(np.sum(d == 0)) - 1
    firsts.add(k)
    np.testing.assert_array_equal(d, np.r_[np.zeros(k, int), [0, 1, 2], np.full(3 - k, 2)])
  assert firsts == {0, 1, 2, 3}
  last_only = C.sample_indices(np.random.default_rng(0), 3, C.ClipConfig(num_frames=5, pad="last"))
  np.testing.assert_array_equal(last_only, [0, 1, 2, 2, 2])


def test_too_short_is_an_error_when_asked():
  with pytest.raises(Gen3RInputError, match="has 3 frames but a clip needs 5"):
    C.sample_indices(np.random.default_rng(0), 3, C.ClipConfig(num_frames=5, pad="error"), "scene x")


def test_fixed_start():
  d = C.sample_indices(np.random.default_rng(0), 30, C.ClipConfig(num_frames=4, strides=(2,), start=0))
  np.testing.assert_array_equal(d, [0, 2, 4, 6])
  with pytest.raises(Gen3RInputError, match="start 25"):
    C.sample_indices(np.random.default_rng(0), 30, C.ClipConfig(num_frames=4, strides=(2,), start=25))


@pytest.mark.parametrize("hw,out", [((37, 55), (32, 32)), ((24, 40), (32, 48)), ((50, 30), (20, 16))])
def test_resize_crop_matches_torch(hw, out):
  import torch
  import torch.nn.functional as F

  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
  ours = C.resize_crop(frames, *out)
  r, nh, nw = C.resize_shape(*hw, *out)
  x = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
  y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
  top, left = (nh - out[0]) // 2, (nw - out[1]) // 2
  ref = (y[:, :, top:top + out[0], left:left + out[1]] / 255.0).clamp(0, 1).permute(0, 2, 3, 1).numpy()
  assert ours.shape == (2, *out, 3) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_intrinsics_int_truncation_quirk():
  # h=37, w=55 -> r = 32/37; w·r = 47.57: the image is resized to 48 wide (round, crop 8), but get_K uses
  # int() -> 47 (crop 7). Reproduced by default, fixable with exact_crop_offsets.
  intr = np.array([[55, 37, 40.0, 41.0, 27.5, 18.5]])
  r = 32 / 37
  K = C.intrinsics_matrix(intr, 32, 32)
  np.testing.assert_allclose(K[0], [[40 * r, 0, 27.5 * r - 7], [0, 41 * r, 18.5 * r - 0], [0, 0, 1]], rtol=1e-6)
  Kx = C.intrinsics_matrix(intr, 32, 32, exact_crop_offsets=True)
  assert np.isclose(K[0, 0, 2] - Kx[0, 0, 2], 1.0)
  assert K.dtype == np.float32


def _rigid(rng):
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  q *= np.sign(np.linalg.det(q))
  m = np.eye(4)
  m[:3, :3], m[:3, 3] = q, rng.normal(size=3)
  return m


def test_relative_poses():
  rng = np.random.default_rng(0)
  c2w = np.stack([_rigid(rng) for _ in range(4)])
  rel = C.relative_poses(c2w)
  np.testing.assert_array_equal(rel[0], np.eye(4, dtype=np.float32))
  np.testing.assert_allclose(rel[2], np.linalg.inv(c2w[0]) @ c2w[2], atol=1e-6)
  world = _rigid(rng)  # a change of world frame leaves relative poses unchanged
  np.testing.assert_allclose(C.relative_poses(world[None] @ c2w), rel, atol=1e-5)
