"""Readers for sample output directories and scene folders: round trips, resizing, frame selection, errors."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.eval import io as eio
from gen3r_jax.eval import scene as sc


def test_ply_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  pts = rng.normal(size=(17, 3)).astype(np.float32)
  col = rng.integers(0, 256, size=(17, 3)).astype(np.uint8)
  path = str(tmp_path / "points.ply")
  eio.write_ply(path, pts, col)
  with open(path, "rb") as f:
    head = f.read(200)
  assert head.startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 17\n")
  p2, c2 = eio.read_ply(path)
  np.testing.assert_array_equal(p2, pts)
  np.testing.assert_array_equal(c2, col)


def test_prediction_round_trip_and_world_points(tmp_path):
  f, h, w = 2, 8, 10
  depth = np.full((f, h, w), 2.0, np.float32)
  depth[1, 0, 0] = 0.0  # invalid pixel
  c2w = np.tile(np.eye(4), (f, 1, 1))
  c2w[1, :3, 3] = [1.0, 0.0, 0.0]
  K = np.tile(np.array([[4.0, 0, 5.0], [0, 4.0, 4.0], [0, 0, 1]]), (f, 1, 1))
  eio.write_prediction(str(tmp_path), depth=depth, c2w=c2w, K=K, source_indices=[3, 5])
  pred = eio.read_prediction(str(tmp_path))
  assert pred.num_frames == 2 and pred.size == (h, w) and pred.source_indices == [3, 5]
  pts, valid = pred.world_points()
  assert pts.shape == (f, h, w, 3) and valid.sum() == f * h * w - 1
  # Integer pixel coordinates: pixel (u=5, v=4) is the principal point -> straight ahead.
  np.testing.assert_allclose(pts[0, 4, 5], [0.0, 0.0, 2.0])
  np.testing.assert_allclose(pts[1, 4, 7], [1.0 + 2 * 2.0 / 4.0, 0.0, 2.0])
  # points.npz takes precedence over unprojection.
  np.savez(str(tmp_path / "points.npz"), points=pts * 0 + 1, masks=valid)
  pts2, valid2 = eio.read_prediction(str(tmp_path)).world_points()
  assert (pts2 == 1).all() and (valid2 == valid).all()


def test_prediction_bad_inputs(tmp_path):
  with pytest.raises(Gen3RInputError, match="not found"):
    eio.read_prediction(str(tmp_path / "nope"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(Gen3RInputError, match="is this a sample output directory"):
    eio.read_prediction(str(tmp_path / "empty"))
  d = str(tmp_path / "bad")
  K = np.tile(np.eye(3), (3, 1, 1))
  eio.write_prediction(d, depth=np.ones((2, 4, 4)), c2w=np.tile(np.eye(4), (3, 1, 1)), K=K)
  with pytest.raises(Gen3RInputError, match="disagree on frame count"):
    eio.read_prediction(d)
  with open(os.path.join(d, "cameras.json"), "w") as f:
    json.dump({"frames": [{"c2w": np.eye(4).tolist()}]}, f)
  with pytest.raises(Gen3RInputError, match="'K'"):
    eio.read_prediction(d)
  np.savez(os.path.join(d, "depth.npz"), other=np.ones(3))
  with pytest.raises(Gen3RInputError, match="missing key 'depth'"):
    eio.read_prediction(d)


def test_select_frames_priorities():
  assert sc.select_frames(10, 3, source_indices=[4, 2, 9]) == [4, 2, 9]
  assert sc.select_frames(10, 3, source_indices=[4, 2, 9], start=1, stride=2) == [4, 2, 9]
  assert sc.select_frames(10, 3, start=1, stride=2) == [1, 3, 5]
  assert sc.select_frames(3, 3) == [0, 1, 2]
  with pytest.raises(Gen3RInputError, match="mismatched frame counts"):
    sc.select_frames(10, 3)
  with pytest.raises(Gen3RInputError, match="outside"):
    sc.select_frames(4, 3, stride=2)


def test_scene_resize_crop_and_intrinsics(tmp_path):
  """A 64x128 scene read at 32x48: short-side resize to 32x64, centre crop 8 pixels off each side."""
  root = tmp_path / "scene"
  os.makedirs(root / "images")
  os.makedirs(root / "depths")
  rng = np.random.default_rng(1)
  img = rng.integers(0, 256, size=(64, 128, 3)).astype(np.uint8)
  Image.fromarray(img).save(root / "images" / "frame00000.png")
  depth_mm = np.arange(64 * 128, dtype=np.uint16).reshape(64, 128) + 1
  Image.fromarray(depth_mm).save(root / "depths" / "frame00000.png")
  fr = {"file_path": "images/frame00000.png", "w": 128, "h": 64, "fl_x": 100.0, "fl_y": 90.0, "cx": 64.0,
        "cy": 32.0, "transform_matrix": np.eye(4).tolist()}
  with open(root / "transforms.json", "w") as f:
    json.dump({"frames": [fr]}, f)
  s = sc.read_scene(str(root), [0], (32, 48))
  assert s.images.shape == (1, 32, 48, 3) and s.depth.shape == (1, 32, 48)
  ref = np.asarray(Image.fromarray(img).resize((64, 32), Image.BILINEAR))[:, 8:56] / 255.0
  np.testing.assert_allclose(s.images[0], ref, atol=1e-6)
  np.testing.assert_allclose(s.K[0], [[50.0, 0, 24.0], [0, 45.0, 16.0], [0, 0, 1]])
  # Nearest resize of the 16-bit depth (millimetres -> metres): output pixel (v, u) of the resized map samples
  # the source pixel whose area holds its centre, (2v + 1, 2u + 1); the crop shifts u by 8.
  v, u = 5, 7
  assert s.depth[0, v, u] == pytest.approx(depth_mm[2 * v + 1, 2 * (u + 8) + 1] / 1000.0)
  # Missing image and missing depth.
  os.remove(root / "depths" / "frame00000.png")
  assert sc.read_scene(str(root), [0], (32, 48)).depth is None
  os.remove(root / "images" / "frame00000.png")
  with pytest.raises(Gen3RInputError, match="image images/frame00000.png not found"):
    sc.read_scene(str(root), [0], (32, 48))
