"""Point-cloud metrics: closed-form cases and brute-force NumPy references for every primitive."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.eval import pcd_ops
from gen3r_jax.eval import pointcloud as pc


def _surface(rng, f=2, h=20, w=24):
  """A wavy height field seen as an [F, H, W, 3] point map."""
  u, v = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
  maps = []
  for k in range(f):
    z = 0.3 * np.sin(2 * u + k) * np.cos(3 * v) + 0.05 * rng.normal(size=u.shape)
    maps.append(np.stack([u + 0.1 * k, v, z], -1))
  return np.stack(maps).astype(np.float32)


def _sim3(points, s, r, t):
  return (s * points.reshape(-1, 3) @ r.T + t).reshape(points.shape).astype(np.float32)


def test_umeyama_recovers_known_similarity():
  rng = np.random.default_rng(0)
  p = rng.normal(size=(500, 3)).astype(np.float32)
  r_true = Rotation.random(random_state=3).as_matrix()
  s_true, t_true = 1.7, np.array([0.3, -2.0, 0.5])
  g = _sim3(p, s_true, r_true, t_true)
  for scale in ("umeyama", "spread"):  # noise-free: both scales are exact
    r, t, s = pc.similarity_align(p, g, scale=scale)
    np.testing.assert_allclose(r, r_true, atol=1e-5)
    np.testing.assert_allclose(s, s_true, rtol=1e-5)
    np.testing.assert_allclose(t, t_true, atol=1e-5)
    np.testing.assert_allclose(pc.apply_sim3(p, r, t, s), g, atol=1e-5)


def test_umeyama_handles_reflection_and_masks():
  rng = np.random.default_rng(1)
  p = rng.normal(size=(200, 3)).astype(np.float32)
  g = p * np.array([1, 1, -1], np.float32)  # a mirror: the best proper rotation has det +1
  r, _, _ = pc.similarity_align(p, g)
  assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
  # Masked-out correspondences are ignored entirely.
  r_true = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
  g = _sim3(p, 2.0, r_true, np.zeros(3))
  g_bad = g.copy()
  g_bad[:50] += 100.0
  mask = np.arange(200) >= 50
  r, t, s = pc.similarity_align(p, g_bad, mask)
  np.testing.assert_allclose(r, r_true, atol=1e-5)
  assert s == pytest.approx(2.0, rel=1e-5)
  # Fewer than 3 valid points: identity, as the repository.
  r, t, s = pc.similarity_align(p, g, np.arange(200) < 2)
  np.testing.assert_allclose(r, np.eye(3))
  assert s == 1.0 and not t.any()


def test_spread_scale_differs_from_least_squares_under_noise():
  rng = np.random.default_rng(2)
  p = rng.normal(size=(2000, 3)).astype(np.float32)
  g = (p + 0.5 * rng.normal(size=p.shape)).astype(np.float32)  # noise inflates G's spread
  _, _, s_ls = pc.similarity_align(p, g, scale="umeyama")
  _, _, s_sp = pc.similarity_align(p, g, scale="spread")
  pc_, gc = p - p.mean(0), g - g.mean(0)
  assert s_sp == pytest.approx(np.sqrt((gc ** 2).sum() / (pc_ ** 2).sum()), rel=1e-4)
  assert s_sp > s_ls * 1.05  # the ratio of spreads over-estimates the scale


def test_identical_clouds_score_zero_for_both_protocols():
  p = _surface(np.random.default_rng(3))
  for protocol in pc.PROTOCOLS:
    res = pc.chamfer_metrics(p, p, protocol=protocol, num_points=300)
    assert res.chamfer < 1e-5 and res.accuracy < 1e-5 and res.completeness < 1e-5
    assert res.scale == pytest.approx(1.0, abs=1e-5)


def test_similarity_transformed_prediction_scores_zero():
  g = _surface(np.random.default_rng(4))
  r = Rotation.random(random_state=5).as_matrix()
  p = _sim3(g, 0.37, r, np.array([1.0, 2.0, -3.0]))  # prediction in another frame and scale
  mask = np.ones(g.shape[:3], bool)
  mask[0, :3] = False
  for protocol in pc.PROTOCOLS:
    res = pc.chamfer_metrics(p, g, mask, protocol=protocol, num_points=400)
    assert res.chamfer < 1e-4, protocol
    assert res.scale == pytest.approx(1 / 0.37, rel=1e-4)


def test_shifted_cloud_chamfer_is_the_shift():
  # A unit grid shifted by 0.1 along z: every nearest neighbour is exactly 0.1 away.
  g = np.stack(np.meshgrid(np.arange(10.0), np.arange(12.0), np.arange(3.0), indexing="ij"), -1).reshape(-1, 3)
  p = g + np.array([0.0, 0.0, 0.1])
  acc, comp = pc.chamfer_distance(p, g, chunk=64)
  assert acc == pytest.approx(0.1, abs=1e-6) and comp == pytest.approx(0.1, abs=1e-6)


def test_nearest_neighbours_match_brute_force_with_chunking():
  rng = np.random.default_rng(6)
  q = rng.uniform(-1, 1, size=(1500, 3)).astype(np.float32)
  r = rng.uniform(-1, 1, size=(1100, 3)).astype(np.float32)
  ref = ((q[:, None].astype(np.float64) - r[None]) ** 2).sum(-1).min(1)
  ours = pcd_ops.nearest_sq_dists(q, r, chunk=128)  # 1500 is not a multiple of 128: padding exercised
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_voxel_downsample_matches_reference_grouping():
  rng = np.random.default_rng(7)
  pts = rng.uniform(0, 1, size=(3000, 3))
  v = 0.2
  vox = pcd_ops.voxel_downsample(pts, v)
  keys = np.floor((pts - (pts.min(0) - v / 2)) / v).astype(int)
  groups = {}
  for i, k in enumerate(map(tuple, keys)):
    groups.setdefault(k, []).append(i)
  assert vox.centroids.shape[0] == len(groups)
  ref = {k: pts[idx].mean(0) for k, idx in groups.items()}
  for vid, k in enumerate(sorted(groups)):  # voxels come in grid-key order
    np.testing.assert_allclose(vox.centroids[vid], ref[k], atol=1e-12)
    members = vox.members[vox.starts[vid]:vox.starts[vid] + len(groups[k])]
    assert list(members) == groups[k]  # the trace: member ids in point order


def test_farthest_point_sampling_matches_reference():
  rng = np.random.default_rng(8)
  pts = rng.normal(size=(700, 3)).astype(np.float32)
  k = 50
  ref, mind = [0], np.full(700, np.inf)
  for _ in range(k - 1):
    mind = np.minimum(mind, ((pts - pts[ref[-1]]) ** 2).sum(1))
    ref.append(int(np.argmax(mind)))
  np.testing.assert_array_equal(pcd_ops.farthest_point_sample(pts, k), ref)
  # Fewer points than k: all of them, then -1 padding when asked (pytorch3d's behaviour).
  few = pcd_ops.farthest_point_sample(pts[:5], 8, pad=True)
  assert sorted(few[:5]) == [0, 1, 2, 3, 4] and list(few[5:]) == [-1, -1, -1]
  assert len(pcd_ops.farthest_point_sample(pts[:5], 8)) == 5


def test_official_protocol_pads_small_clouds_with_the_origin():
  rng = np.random.default_rng(9)
  g = _surface(rng, f=1, h=10, w=10) + 5.0  # all coordinates > 0, far from the origin
  p = (g + 0.02 * rng.normal(size=g.shape)).astype(np.float32)
  off = pc.chamfer_metrics(p, g, protocol="official", num_points=150)
  cor = pc.chamfer_metrics(p, g, protocol="corrected", num_points=150)
  assert off.num_pred == off.num_gt == 150 and cor.num_pred == cor.num_gt == 100
  gf = g.reshape(-1, 3)
  # Corrected: bounding box of the reference points. Official: the origin padding joins the box.
  ext = np.linalg.norm(gf.max(0) - gf.min(0))
  ext_padded = np.linalg.norm(gf.max(0))
  assert cor.relative_percent == pytest.approx(100 * cor.chamfer / ext, rel=1e-5)
  assert off.relative_percent == pytest.approx(100 * off.chamfer / ext_padded, rel=1e-5)
  # The 50 padded points sit on top of each other in both clouds: they add zeros to the means.
  assert off.chamfer == pytest.approx(cor.chamfer * 100 / 150, rel=0.2)


def test_pointcloud_bad_inputs():
  p = _surface(np.random.default_rng(10))
  with pytest.raises(Gen3RInputError, match="same"):
    pc.chamfer_metrics(p, p[:1])
  with pytest.raises(Gen3RInputError, match="empty"):
    pc.chamfer_metrics(p, p, np.zeros(p.shape[:3], bool))
  with pytest.raises(Gen3RInputError, match="empty"):
    pc.chamfer_metrics(np.zeros((0, 3)), np.zeros((0, 3)))
  bad = p.copy()
  bad[0, 0, 0] = np.nan
  with pytest.raises(Gen3RInputError, match="NaN"):
    pc.chamfer_metrics(bad, p)
  with pytest.raises(Gen3RInputError, match="protocol"):
    pc.chamfer_metrics(p, p, protocol="paper")
  with pytest.raises(Gen3RInputError, match="empty"):
    pcd_ops.nearest_sq_dists(np.zeros((0, 3)), p.reshape(-1, 3))


def test_alignment_subset_official_bug_versus_corrected():
  """Two tight clusters of 50 points (one voxel each). The repository indexes the concatenated member list with
  voxel ids (and -1 padding), so it picks members 0 and 1 of the first voxel and the last listed point; the
  corrected subset takes the first member of each voxel."""
  rng = np.random.default_rng(11)
  a = rng.uniform(0, 1e-4, size=(50, 3))
  b = rng.uniform(0, 1e-4, size=(50, 3)) + 1.0025  # mid-voxel: no split across a voxel boundary
  pts = np.concatenate([b, a]).astype(np.float32)  # ids 0-49: cluster b (second voxel), 50-99: cluster a
  off = pc._alignment_mask(pts, pts, "official")
  cor = pc._alignment_mask(pts, pts, "corrected")
  assert sorted(np.flatnonzero(off)) == [49, 50, 51]  # a[0], a[1] (voxel 0's members) and the last of voxel 1
  assert sorted(np.flatnonzero(cor)) == [0, 50]  # first member of each voxel


@pytest.mark.parametrize("with_mask", [True, False])
def test_missing_predicted_pixels_score_as_misses(with_mask):
  """``pred_missing``: those pixels leave the predicted cloud and the alignment but keep their ground-truth points,
  so completeness is the mean over all ground-truth points of the distance to the nearest *present* predicted
  point (brute force here); their predicted values (NaN) are never read."""
  rng = np.random.default_rng(12)
  g = _surface(rng)
  p = _sim3(g, 2.0, Rotation.from_euler("z", 30, degrees=True).as_matrix(), np.array([1.0, 0.0, 0.5]))
  missing = np.zeros(g.shape[:3], bool)
  missing[:, :, :8] = True  # a band of the surface has no prediction
  p[missing] = np.nan
  mask = np.ones(g.shape[:3], bool) if with_mask else None
  res = pc.chamfer_metrics(p, g, mask, protocol="corrected", downsample=False, pred_missing=missing)
  present = g[~missing].reshape(-1, 3).astype(np.float64)
  d = np.sqrt(((g.reshape(-1, 1, 3) - present[None]) ** 2).sum(-1)).min(1)
  assert res.accuracy == pytest.approx(0.0, abs=1e-5)
  assert res.completeness == pytest.approx(d.mean(), rel=1e-4, abs=1e-6)
  assert res.completeness > 0.05 and res.num_pred == present.shape[0] and res.num_gt == g[..., 0].size
  assert res.scale == pytest.approx(0.5, rel=1e-4)  # aligned on the present pixels only
