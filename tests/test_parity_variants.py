"""The parity cases take every variant a fixture kind may come in (``../shared/fixtures/README*.md``).

Variants are built in a temporary directory from the shipped fixtures (nothing is copied into the project; big
files are symlinked), with goldens that need no new PyTorch run:

* ``vggt_tiny`` with batch 2: the batch is the shipped one twice. VGGT's batch elements are independent (frame
  attention within a frame, global attention within a batch element), so every golden is the shipped one
  repeated along the batch axis, and the unprojection outputs are stored for both elements.
  The per-element unprojection is also checked on a perturbed second element against an independent NumPy
  implementation of the official ``unproject_depth_map_to_point_map``.
* ``pipeline_tiny`` with its cameras from a cameras file (``run.cameras`` not a trajectory name, the cameras in
  ``inputs.safetensors`` as ``c2ws_raw`` / ``Ks``, no VGGT estimate): the shipped zoom_out cameras written out as
  that variant stores them; every other golden is unchanged.
"""

import copy
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from gen3r_jax.testing import parity
from gen3r_jax.testing.cases import pipeline as pipeline_case
from gen3r_jax.testing.cases import vggt as vggt_case
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path


def _write_variant(src: Fixture, dst, meta, inputs, outputs, links=("weights.safetensors",)):
  os.makedirs(dst, exist_ok=True)
  with open(os.path.join(dst, "fixture.json"), "w") as f:
    json.dump(meta, f)
  save_file({k: np.ascontiguousarray(v) for k, v in inputs.items()}, os.path.join(dst, "inputs.safetensors"))
  save_file({k: np.ascontiguousarray(v) for k, v in outputs.items()}, os.path.join(dst, "outputs.safetensors"))
  for name in links:
    os.symlink(os.path.abspath(os.path.join(src.path, name)), os.path.join(dst, name))
  return str(dst)


def _batched(layout: str) -> bool:
  return layout.startswith(("B ", "B' ", "(B*S)"))


def _vggt_batch2(tmp_path) -> str:
  fx = Fixture.open(fixture_path("vggt_tiny"))
  layouts = fx.meta["layouts"]
  assert fx.tensor("images").shape[0] == 1
  dup = lambda d: {k: (np.concatenate([v, v]) if _batched(layouts[k]) else v) for k, v in d.items()}  # noqa: E731
  meta = copy.deepcopy(fx.meta)
  for name in ("unprojected_points", "point_masks", "point_masks_min_max"):
    meta["layouts"][name] = layouts[name].replace("B' = 1: batch element 0 only", "every batch element")
  return _write_variant(fx, tmp_path / "vggt_tiny_b2", meta, dup(fx.inputs), dup(fx.outputs))


def test_vggt_case_takes_batch_2(tmp_path):
  path = _vggt_batch2(tmp_path)
  fx = Fixture.open(path)
  assert fx.tensor("images").shape[0] == 2 and fx.tensor("unprojected_points").shape[0] == 2
  results = parity.run_fixture(path, verbose=False)
  names = {r.name for r in results}
  assert {"unprojected_points", "point_masks", "point_masks_min_max", "depth", "pose_enc_iter3"} <= names
  failed = [r.line() for r in results if not r.passed]
  assert not failed, "\n".join(failed)


def _unproject_reference(depth, extrinsic, intrinsic):
  """The official ``unproject_depth_map_to_point_map`` (numpy, per frame; fixture notes): u = column, v = row,
  cam = ((u - cx) d / fx, (v - cy) d / fy, d) in float32, world = R^T (cam - t) in float64; masks d > 1e-8, and
  with the min/max mask max(1e-8, p0.1) < d < min(p98, 50)."""
  pts, m, mm = [], [], []
  for d, e, k in zip(depth[..., 0], extrinsic, intrinsic):
    v, u = np.indices(d.shape)
    cam = np.stack([(u - k[0, 2]) * d / k[0, 0], (v - k[1, 2]) * d / k[1, 1], d], -1).astype(np.float32)
    r, t = e[:3, :3].astype(np.float64), e[:3, 3].astype(np.float64)
    pts.append((cam.astype(np.float64) - t) @ r)
    m.append(d > 1e-8)
    lo, hi = max(1e-8, np.percentile(d, 0.1)), min(np.percentile(d, 98), 50.0)
    mm.append((d > lo) & (d < hi))
  return np.stack(pts), np.stack(m), np.stack(mm)


def test_vggt_unprojection_is_per_batch_element():
  """Element 0 against the shipped PyTorch goldens, a different element 1 against the NumPy reference: the case
  unprojects each element with its own depth and cameras."""
  fx = Fixture.open(fixture_path("vggt_tiny"))
  depth, e, k = fx.tensor("depth"), fx.tensor("extrinsic"), fx.tensor("intrinsic")
  e1 = e.copy()
  e1[0, :, :3, 3] += np.array([0.3, -0.2, 0.1], np.float32)
  k1 = k * np.array([1.1, 0.9, 1.0], np.float32)[:, None]
  stored = {"depth": np.concatenate([depth, 1.5 * depth + 0.25]), "extrinsic": np.concatenate([e, e1]),
            "intrinsic": np.concatenate([k, k1])}
  ref0 = _unproject_reference(depth[0], e[0], k[0])  # the reference reproduces the PyTorch-side goldens
  np.testing.assert_allclose(ref0[0], fx.tensor("unprojected_points")[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ref0[2], fx.tensor("point_masks_min_max")[0])
  ref = _unproject_reference(stored["depth"][1], stored["extrinsic"][1], stored["intrinsic"][1])
  stored.update(unprojected_points=np.concatenate([fx.tensor("unprojected_points"), ref[0][None]]))
  for name, r in (("point_masks", ref[1]), ("point_masks_min_max", ref[2])):
    stored[name] = np.concatenate([fx.tensor(name), r[None].astype(np.uint8)])
  variant = Fixture(fx.path, fx.meta)
  variant.__dict__["outputs"] = stored  # the cached property, replaced
  checks = list(vggt_case.unprojection_checks(variant))
  assert [c.ours.shape[0] for c in checks] == [2, 2, 2]
  for c in checks:
    r = parity.compare(variant, c)
    assert r.passed, r.line()
  # The shipped layout (element 0 only) still compares element 0.
  variant.__dict__["outputs"] = {**stored, **{n: fx.tensor(n) for n in ("unprojected_points", "point_masks")}}
  assert [c.ours.shape[0] for c in vggt_case.unprojection_checks(variant)][:2] == [1, 1]


def _pipeline_cameras_file(tmp_path) -> str:
  fx = Fixture.open(fixture_path("pipeline_tiny"))
  meta = copy.deepcopy(fx.meta)
  run = meta["config"]["run"]
  run["cameras"] = "cameras.json"
  run["camera_source"] = ("cameras file (infer.py --cameras cameras.json): the zoom_out cameras of the shipped "
                          "fixture, frames 0..F-1")
  meta["calls"] = [c for c in meta["calls"] if c["name"] != "camera_estimation"]
  dropped = {"vggt_est_pose_enc", "vggt_est_intrinsics", "vggt_est_depth_sub4", "scene_scale",
             "c2ws_trajectory_raw"}
  inputs = {k: v for k, v in fx.inputs.items() if k not in dropped}
  outputs = {k: v for k, v in fx.outputs.items() if k not in dropped}
  inputs["c2ws_raw"] = np.asarray(fx.tensor("c2ws_trajectory_raw"), np.float32)
  inputs["Ks"] = np.asarray(fx.tensor("Ks"), np.float32)
  outputs.pop("Ks", None)
  meta["layouts"]["c2ws_raw"] = "F 4 4 (inverse of the file's extrinsics at the frames used, before preprocess_poses)"
  return _write_variant(fx, tmp_path / "pipeline_tiny_cameras_file", meta, inputs, outputs, links=("checkpoint",))


def test_pipeline_cameras_file_variant_is_written_as_a_users_file(tmp_path):
  path = _pipeline_cameras_file(tmp_path)
  fx = Fixture.open(path)
  assert pipeline_case.uses_cameras_file(fx) and not fx.has("scene_scale")
  assert not pipeline_case.uses_cameras_file(Fixture.open(fixture_path("pipeline_tiny")))
  cams = json.load(open(pipeline_case.write_cameras_file(fx, str(tmp_path / "cams.json"))))
  assert sorted(cams) == ["extrinsics", "intrinsics"]
  np.testing.assert_allclose(np.linalg.inv(cams["extrinsics"]), fx.tensor("c2ws_raw"), atol=1e-6)
  from gen3r_jax.sampling.stages import trajectory
  _, c2ws, ks = trajectory(str(tmp_path / "cams.json"), int(fx.config["run"]["num_frames"]), None)
  np.testing.assert_allclose(c2ws[None], fx.tensor("c2ws"), atol=1e-6)
  np.testing.assert_allclose(ks[None], fx.tensor("Ks"), atol=1e-6)
  bad = Fixture(fx.path, copy.deepcopy(fx.meta))
  bad.__dict__["inputs"] = {k: v for k, v in fx.inputs.items() if k != "c2ws_raw"}
  with pytest.raises(KeyError, match="c2ws_raw"):
    pipeline_case.write_cameras_file(bad, str(tmp_path / "x.json"))


@pytest.mark.slow
def test_pipeline_case_takes_a_cameras_file(tmp_path):
  """The whole pipeline case on the cameras-file variant (as long as the shipped pipeline_tiny case)."""
  results = parity.run_fixture(_pipeline_cameras_file(tmp_path), verbose=False)
  names = {r.name for r in results}
  assert {"c2ws", "Ks", "plucker_embeddings_sub8", "final_latents", "pcds_sub4"} <= names
  assert not names & {"scene_scale", "vggt_est_pose_enc", "c2ws_trajectory_raw"}
  failed = [r.line() for r in results if not r.passed]
  assert not failed, "\n".join(failed)
