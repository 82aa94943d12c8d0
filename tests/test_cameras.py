"""Camera trajectories, camera files and the conditioning layouts: behaviour and every bad-input rule.

Numerical parity with the official code is checked by the ``conditioning_prep`` fixture (tests/test_parity.py).
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling import cameras as cam
from gen3r_jax.sampling import conditioning as cond

K0 = np.array([[30.0, 0, 16.0], [0, 28.0, 15.5], [0, 0, 1]], np.float32)


def _w2c(n=5, seed=0):
  rng = np.random.default_rng(seed)
  mats = []
  for _ in range(n):
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = q, rng.standard_normal(3)
    mats.append(m)
  return np.stack(mats)


def _write(tmp_path, obj, raw=None):
  p = tmp_path / "cams.json"
  p.write_text(raw if raw is not None else json.dumps(obj))
  return str(p)


def _valid(n=5):
  return {"extrinsics": _w2c(n).tolist(), "intrinsics": np.repeat(K0[None], n, 0).tolist()}


def test_bad_trajectory_name():
  with pytest.raises(Gen3RInputError, match="unknown camera trajectory 'orbit'.*zoom_in"):
    cam.get_poses("orbit", 5)
  with pytest.raises(Gen3RInputError, match="unknown camera trajectory 'spiral'"):
    cam.resolve_cameras("spiral", 5, intrinsics=K0, scene_scale=1.0)


def test_builtin_trajectory_needs_vggt_estimate():
  with pytest.raises(Gen3RInputError, match="needs the first frame's intrinsics and a scene scale"):
    cam.resolve_cameras("zoom_in", 5)
  c2ws, ks = cam.resolve_cameras("arc_left", 9, intrinsics=K0, scene_scale=1.0)
  assert c2ws.shape == (9, 4, 4) and ks.shape == (9, 3, 3)
  np.testing.assert_array_equal(c2ws[0], np.eye(4))
  assert c2ws[-1, 0, 2] < 0  # arc_left: negative angle about y


def test_num_frames_must_be_1_plus_4k():
  for bad in (0, 4, 8, 50, 2.0):
    with pytest.raises(Gen3RInputError, match=r"num_frames must be 1 \+ 4k"):
      cam.check_num_frames(bad)
  with pytest.raises(Gen3RInputError, match=r"1 \+ 4k"):
    cam.resolve_cameras("zoom_in", 48, intrinsics=K0, scene_scale=1.0)
  with pytest.raises(Gen3RInputError, match=r"1 \+ 4k"):
    cond.camera_latents(np.zeros((1, 8, 2, 2, 6), np.float32))
  with pytest.raises(Gen3RInputError, match=r"1 \+ 4k"):
    cond.control_masks(1, 10, (2, 2))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("intrinsics"), "missing 'intrinsics'"),
    (lambda d: d.pop("extrinsics"), "exactly one of 'extrinsics'"),
    (lambda d: d.update(c2w=d["extrinsics"]), "exactly one of 'extrinsics'"),
    (lambda d: d.update(extrinsics=[[1, 2], [3]]), "ragged or non-numeric"),
    (lambda d: d.update(extrinsics=np.zeros((5, 2, 4)).tolist()), r"must have shape \[F, 4, 4 or 3, 4\]"),
    (lambda d: d.update(intrinsics=np.zeros((5, 4, 4)).tolist()), r"'intrinsics' must have shape \[F, 3, 3\]"),
    (lambda d: d.update(intrinsics=d["intrinsics"][:4]), "5 'extrinsics' matrices but 4 'intrinsics'"),
    (lambda d: d["extrinsics"][1][3].__setitem__(0, 2.0), r"bottom row .* must be \[0, 0, 0, 1\]"),
    (lambda d: d["extrinsics"][2].__setitem__(0, [0.0, 0.0, 0.0, 1.0]), "singular"),
    (lambda d: d["intrinsics"][0][0].__setitem__(0, -3.0), "non-positive focal length"),
    (lambda d: d["extrinsics"][0][0].__setitem__(0, float("nan")), "NaN or infinite"),
])
def test_malformed_cameras_json(tmp_path, mutate, message):
  data = _valid()
  mutate(data)
  with pytest.raises(Gen3RInputError, match=message):
    cam.load_cameras_json(_write(tmp_path, data), 5)


def _scaled(d, i=3, s=1.01):
  d["extrinsics"][i] = (np.asarray(d["extrinsics"][i]) @ np.diag([s, s, s, 1.0])).tolist()


def _sheared(d, i=3):
  d["extrinsics"][i] = (np.asarray(d["extrinsics"][i]) @ np.array(
      [[1, 0.01, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])).tolist()


def _mirrored(d, i=3):
  d["extrinsics"][i] = (np.asarray(d["extrinsics"][i]) @ np.diag([-1.0, 1, 1, 1])).tolist()


@pytest.mark.parametrize("mutate, message", [
    (_scaled, r"'extrinsics' frame 3 is not a rotation \+ translation: its 3x3 block is scaled .*det R = 1.0303"),
    (_sheared, r"'extrinsics' frame 3 is not a rotation .* block is sheared .*max \|R\^T R - I\| = 0.01"),
    (_mirrored, r"'extrinsics' frame 3 .* is a mirror \(det < 0\)"),
    (lambda d: [_scaled(d, i, 0.9) for i in (1, 2, 4)], r"frame 1 .* scaled .*, and so are 2 more frames"),
])
def test_cameras_json_rotations_must_be_orthonormal(tmp_path, mutate, message):
  data = _valid()
  mutate(data)
  with pytest.raises(Gen3RInputError, match=message) as e:
    cam.load_cameras_json(_write(tmp_path, data), 5)
  assert "\n" not in str(e.value)


def test_cameras_json_rotation_tolerance(tmp_path):
  data = _valid(9)
  noisy = np.asarray(data["extrinsics"])
  noisy[:, :3, :3] += 1e-5 * np.random.default_rng(1).standard_normal((9, 3, 3))   # float32 / JSON rounding: fine
  data["extrinsics"] = noisy.tolist()
  _scaled(data, 7)                                                                  # frame 7 is not used (F = 5)
  c2ws, _ = cam.load_cameras_json(_write(tmp_path, data), 5)
  assert c2ws.shape == (5, 4, 4)
  with pytest.raises(Gen3RInputError, match="frame 7 is not a rotation"):
    cam.load_cameras_json(_write(tmp_path, data), 9)


def test_malformed_cameras_file(tmp_path):
  with pytest.raises(Gen3RInputError, match="not valid JSON: .* line 1"):
    cam.load_cameras_json(_write(tmp_path, None, raw='{"extrinsics": [1, 2'), 5)
  with pytest.raises(Gen3RInputError, match="top level must be an object"):
    cam.load_cameras_json(_write(tmp_path, [1, 2]), 5)
  with pytest.raises(Gen3RInputError, match="not found"):
    cam.resolve_cameras(str(tmp_path / "missing.json"), 5)
  with pytest.raises(Gen3RInputError, match="5 cameras, but num_frames=9 needs at least 9"):
    cam.load_cameras_json(_write(tmp_path, _valid(5)), 9)


def test_cameras_json_round_trip(tmp_path):
  data = _valid(9)
  c2ws, ks = cam.load_cameras_json(_write(tmp_path, data), 5)           # first 5 of 9, as infer.py does
  np.testing.assert_allclose(c2ws, np.linalg.inv(_w2c(9))[:5], atol=1e-12)
  assert ks.shape == (5, 3, 3)
  # the same cameras given as camera-to-world, with 3x4 matrices
  alt = {"c2w": np.linalg.inv(_w2c(9))[:, :3].tolist(), "intrinsics": data["intrinsics"]}
  rel, _ = cam.resolve_cameras(_write(tmp_path, alt), 5)
  rel2, _ = cam.resolve_cameras(data, 5)
  np.testing.assert_allclose(rel, rel2, atol=1e-9)
  np.testing.assert_array_equal(rel[0], np.eye(4))
  np.testing.assert_allclose(rel[3], np.linalg.inv(c2ws[0]) @ c2ws[3], atol=1e-12)


def test_linspace_matches_torch():
  import torch  # dev dependency (pyproject [dev]); the port itself never imports torch
  for steps in (1, 2, 5, 9, 13, 49, 81, 121):
    for start, end in ((0.0, 1.7), (0.0, -0.8123), (0.0, np.radians(15.0)), (0.0, -np.radians(15.0)),
                       (0.5, 2.0), (-1.25, 0.3)):
      ref = torch.linspace(start, end, steps=steps, dtype=torch.float32).numpy()
      np.testing.assert_array_equal(cam.torch_linspace_f32(start, end, steps), ref, err_msg=f"{steps} {end}")


def test_scene_scale_is_lower_median():
  assert cam.scene_scale_from_depth(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(0.8 * 2.0)
  assert cam.scene_scale_from_depth(np.array([[5.0, 1.0, 3.0]])) == pytest.approx(0.8 * 3.0)


def test_rays_identity_camera():
  o, d = cond.compute_rays(np.eye(4, dtype=np.float32)[None], np.array([[[2.0, 0, 2.0], [0, 2.0, 2.0], [0, 0, 1]]]),
                           4, 4)
  assert o.shape == d.shape == (1, 4, 4, 3)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(d), axis=-1), 1.0, atol=1e-6)
  # pixel (row 1, col 3): ((3.5 - 2) / 2, (1.5 - 2) / 2, 1) normalised
  v = np.array([0.75, -0.25, 1.0])
  np.testing.assert_allclose(np.asarray(d)[0, 1, 3], v / np.linalg.norm(v), atol=1e-6)
  p = cond.plucker(np.eye(4, dtype=np.float32)[None], np.eye(3, dtype=np.float32)[None], 2, 2)
  np.testing.assert_array_equal(np.asarray(p)[..., :3], 0.0)               # origin at 0 -> moment 0


def test_camera_latent_layout():
  f, h, w = 9, 2, 3
  frame = np.arange(f, dtype=np.float32)[None, :, None, None, None]
  chan = np.arange(6, dtype=np.float32)[None, None, None, None, :]
  x = np.broadcast_to(frame * 10 + chan, (1, f, h, w, 6))
  lat = np.asarray(cond.camera_latents(x))
  assert lat.shape == (1, 3, h, 2 * w, 24)
  for j in range(3):
    for c in range(6):
      for k in range(4):
        assert lat[0, j, 0, 0, c * 4 + k] == max(4 * j + k - 3, 0) * 10 + c
  np.testing.assert_array_equal(lat[:, :, :, :w], lat[:, :, :, w:])


def test_masks_and_control_video():
  m = np.asarray(cond.control_masks(2, 9, (2, 3)))                      # [1, 3, 2, 6, 4]
  assert m.shape == (1, 3, 2, 6, 4)
  np.testing.assert_array_equal(m[0, 0, :, :3, :], 1.0)                 # frame 0 repeated 4x, left half
  np.testing.assert_array_equal(m[..., 3:, :], 0.0)                      # geometry half never marked
  np.testing.assert_array_equal(m[0, 2, :, :3, 3], 1.0)                  # last frame (8 -> padded 11)
  np.testing.assert_array_equal(m[0, 1], 0.0)
  imgs = np.random.default_rng(0).random((1, 2, 4, 4, 3)).astype(np.float32)
  v = np.asarray(cond.control_video(imgs, 9))
  np.testing.assert_array_equal(v[0, 0], imgs[0, 0])
  np.testing.assert_array_equal(v[0, 8], imgs[0, 1])
  np.testing.assert_array_equal(v[0, 1:8], 0.0)
  with pytest.raises(Gen3RInputError, match="got 3 conditioning images for num_frames=9"):
    cond.control_video(np.zeros((1, 3, 4, 4, 3), np.float32), 9)
  with pytest.raises(Gen3RInputError, match=r"expected a rank-5 array \[B, n, H, W, 3\]"):
    cond.control_video(np.zeros((3, 4, 4, 3), np.float32), 9)


def test_task_plucker_zeroed_for_free_and_allview():
  c2ws = cam.get_poses("zoom_in", 5, 1.0)
  ks = cam.trajectory_intrinsics(K0, 5)
  assert np.abs(np.asarray(cond.task_plucker(c2ws, ks, 4, 4, cameras="zoom_in", task="1view"))).max() > 0
  for cams, task in (("free", "1view"), ("zoom_in", "allview")):
    np.testing.assert_array_equal(cond.task_plucker(c2ws, ks, 4, 4, cameras=cams, task=task), 0.0)
  with pytest.raises(Gen3RInputError, match="unknown task '3view'"):
    cond.task_plucker(c2ws, ks, 4, 4, cameras="zoom_in", task="3view")


def test_clip_input_truncates():
  x = np.array([[[[0.0, 1.0, 0.9999]]]], np.float32)                    # 0.9999 * 255 = 254.97 -> 254
  out = np.asarray(cond.clip_image_input(x))
  np.testing.assert_allclose(out[0, 0, 0], [-1.0, 1.0, 254 / 255 * 2 - 1], atol=1e-6)
  # bfloat16 input (the released infer.py): every bfloat16 value in [0, 1] truncates as in float32
  v = jnp.linspace(0.0, 1.0, 97).astype(jnp.bfloat16).reshape(1, 1, 97, 1)
  np.testing.assert_array_equal(np.asarray(cond.clip_image_input(jnp.repeat(v, 3, -1))),
                                np.asarray(cond.clip_image_input(jnp.repeat(v.astype(jnp.float32), 3, -1))))
  with pytest.raises(Gen3RInputError, match="floating-point"):
    cond.clip_image_input(np.zeros((1, 2, 2, 3), np.uint8))
