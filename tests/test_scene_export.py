"""Exports read back by independent readers: pycolmap reads the COLMAP model, plyfile the splat PLY, our own data
reader (and the evaluation's) the nerfstudio scene; bad input is a one-line exit-2 error; reconstruction outputs
export too."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import plyfile
import pycolmap
import pytest

from gen3r_jax import camera_axes as ca
from gen3r_jax.apps.export import export_output_dir, parse_formats
from gen3r_jax.apps.outputs import load_output_dir
from gen3r_jax.apps.reconstruct import reconstruct
from gen3r_jax.data import layout
from gen3r_jax.data.splat import SH_C0, attribute_names
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.eval import io as eio
from gen3r_jax.eval import scene as eval_scene
from gen3r_jax.sampling import export as ex
from tests.test_export import _sample
from tests.test_reconstruct import checkpoint, write_images  # noqa: F401  (module fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
  """A sample output directory whose cameras rotate and translate (so the pose check means something)."""
  s = _sample()
  rot = ca.qvec_to_rotmat(np.array([[0.9, 0.1 * i, -0.2, 0.05 * i] for i in range(len(s["c2w"]))]))
  s["c2w"][:, :3, :3] = rot
  s["points"] = eio.unproject(s["depth"], s["K"], s["c2w"])
  out = str(tmp_path_factory.mktemp("sample") / "out")
  ex.export_all(out, **s, fps=8, prompt="a tilted plane", meta={"source": "test"})
  return out, s


def _cli(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "export.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_colmap_model_reads_back_in_pycolmap(sample_dir, tmp_path):
  out, s = sample_dir
  r = _cli(out, "--format=colmap", f"--out={tmp_path / 'colmap'}", "--max_points=200")
  assert r.returncode == 0, r.stderr[-2000:]
  rec = pycolmap.Reconstruction()
  rec.read_text(str(tmp_path / "colmap" / "sparse" / "0"))
  assert rec.num_cameras() == 1 and rec.num_images() == len(s["c2w"])    # one K shared by every frame
  cam = rec.cameras[1]
  assert (cam.width, cam.height) == (s["rgb"].shape[2], s["rgb"].shape[1]) and cam.model.name == "PINHOLE"
  np.testing.assert_allclose(cam.calibration_matrix(), s["K"][0], atol=1e-9)
  for i in range(len(s["c2w"])):
    img = rec.images[i + 1]
    assert img.name == f"frame{i:05d}.png"
    assert os.path.isfile(tmp_path / "colmap" / "images" / img.name)
    w2c = np.linalg.inv(s["c2w"][i])[:3]
    pose = img.cam_from_world() if callable(img.cam_from_world) else img.cam_from_world
    np.testing.assert_allclose(pose.matrix(), w2c, atol=1e-6)
  valid = int((s["masks"] & np.isfinite(s["points"]).all(-1)).sum())
  assert rec.num_points3D() == min(200, valid)
  for pid, p in rec.points3D.items():                  # each point seen once, where its pixel projects
    (el,) = p.track.elements
    img = rec.images[el.image_id]
    p2d = img.points2D[el.point2D_idx]
    assert p2d.point3D_id == pid
    cam_xyz = (np.linalg.inv(s["c2w"][el.image_id - 1]) @ np.append(p.xyz, 1.0))[:3]
    np.testing.assert_allclose(p2d.xy, (s["K"][0] @ cam_xyz)[:2] / cam_xyz[2], atol=1e-3)
  frame0 = np.asarray(Image.open(tmp_path / "colmap" / "images" / "frame00000.png"))
  assert frame0.shape == s["rgb"].shape[1:] and frame0.dtype == np.uint8


def test_splat_ply_reads_back_in_plyfile(sample_dir, tmp_path):
  out, s = sample_dir
  export_output_dir(out, "splat", str(tmp_path / "splat"), max_points=0, log=lambda *_: None)
  ply = plyfile.PlyData.read(str(tmp_path / "splat" / "splat.ply"))
  v = ply["vertex"]
  assert [p.name for p in v.properties] == attribute_names(0)
  assert {"x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0",
          "rot_1", "rot_2", "rot_3"} <= {p.name for p in v.properties}
  scene = load_output_dir(out)
  keep = scene.valid()
  assert v.count == int(keep.sum())
  np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], -1), scene.points[keep], atol=1e-6)
  rgb = np.stack([v["f_dc_0"], v["f_dc_1"], v["f_dc_2"]], -1) * SH_C0 + 0.5
  np.testing.assert_allclose(rgb * 255, scene.rgb[keep], atol=1e-3)
  np.testing.assert_allclose(1 / (1 + np.exp(-v["opacity"])), 0.1, atol=1e-6)
  assert np.isfinite(v["scale_0"]).all() and np.all(v["scale_0"] == v["scale_2"])
  assert np.all(np.exp(v["scale_0"]) < 1.0)            # local spacing of a ~0.1-wide pixel grid, not the scene size
  np.testing.assert_array_equal(np.stack([v[f"rot_{i}"] for i in range(4)], -1), [[1, 0, 0, 0]] * v.count)
  export_output_dir(out, "splat", str(tmp_path / "splat3"), sh_degree=3, log=lambda *_: None)
  names = [p.name for p in plyfile.PlyData.read(str(tmp_path / "splat3" / "splat.ply"))["vertex"].properties]
  assert sum(n.startswith("f_rest_") for n in names) == 45


def test_nerfstudio_scene_feeds_our_data_reader(sample_dir, tmp_path):
  out, s = sample_dir
  dest = tmp_path / "ns"
  export_output_dir(out, "nerfstudio", str(dest), log=lambda *_: None)
  meta = json.loads((dest / "transforms.json").read_text())
  assert meta["camera_axes"] == "opengl" and len(meta["frames"]) == len(s["c2w"])
  # nerfstudio's convention: the camera looks down -z, y up (OpenCV pose times diag(1, -1, -1, 1))
  gl = np.asarray(meta["frames"][1]["transform_matrix"])
  np.testing.assert_allclose(gl[:3, 2], -s["c2w"][1][:3, 2], atol=1e-12)
  # our training-data reader: the folder is a one-scene dataset folder with the same cameras and frames
  (ref,) = layout.read_split_lists(dest, "train", "generated")
  rec = layout.load_scene(ref)
  np.testing.assert_allclose(rec["c2w"], s["c2w"], atol=1e-12)
  np.testing.assert_allclose(rec["intrinsics"][:, 2:], np.stack([s["K"][:, 0, 0], s["K"][:, 1, 1], s["K"][:, 0, 2],
                                                                 s["K"][:, 1, 2]], -1))
  np.testing.assert_array_equal(rec["intrinsics"][:, :2], [[s["rgb"].shape[2], s["rgb"].shape[1]]] * len(s["c2w"]))
  scene = load_output_dir(out)
  frames = np.stack([layout.decode_image(rec["images"][i]) for i in rec["frame_index"]])
  np.testing.assert_array_equal(frames, scene.rgb)     # lossless PNGs of the frames
  assert [c.strip() for c in rec["captions"]] == ["a tilted plane"]
  depth = np.load(dest / "depths" / "frame00002.npy")
  np.testing.assert_array_equal(depth, s["depth"][2])
  # the evaluation's ground-truth reader converts the axes too
  gt = eval_scene.read_scene(str(dest), [0, 1, 2], s["rgb"].shape[1:3], images=False, depth=True)
  np.testing.assert_allclose(gt.c2w, s["c2w"][:3], atol=1e-12)
  assert os.path.isfile(dest / meta["ply_file_path"])


def test_reconstruction_outputs_export_and_viewer_reader(tmp_path, checkpoint):  # noqa: F811
  write_images(tmp_path / "imgs")
  out = str(tmp_path / "recon")
  reconstruct(str(tmp_path / "imgs"), checkpoint, out, size=28, frames_chunk_size=2, log=lambda *_: None,
              export_formats="colmap,splat")
  scene = load_output_dir(out)
  assert scene.kind == "reconstruction" and scene.confidence.shape == (3, 28, 28)
  rec = pycolmap.Reconstruction()
  rec.read_text(os.path.join(out, "colmap", "sparse", "0"))
  assert rec.num_images() == 3 and rec.num_points3D() == int(scene.valid().sum())
  assert plyfile.PlyData.read(os.path.join(out, "splat", "splat.ply"))["vertex"].count == int(scene.valid().sum())
  # a re-run without exports removes the now stale export folders (one run per output directory)
  reconstruct(str(tmp_path / "imgs"), checkpoint, out, size=28, frames_chunk_size=2, log=lambda *_: None,
              warn=lambda *_: None)
  assert not os.path.exists(os.path.join(out, "colmap")) and not os.path.exists(os.path.join(out, "splat"))


def test_bad_input_one_line_exit_2(sample_dir, tmp_path):
  out, _ = sample_dir
  r = _cli(out, "--format=ply")
  assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown export format 'ply'" in r.stderr
  assert "colmap, nerfstudio, splat" in r.stderr
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "cameras.json").write_text("{}")
  r = _cli(str(broken), "--format=colmap")
  assert r.returncode == 2 and r.stderr.count("\n") == 1
  assert "rgb.mp4, depth.npz, points.npz missing" in r.stderr
  r = _cli(str(tmp_path / "nowhere"), "--format=splat")
  assert r.returncode == 2 and "not found" in r.stderr and r.stderr.count("\n") == 1
  r = _cli(out)
  assert r.returncode == 2 and "no export format given" in r.stderr
  with pytest.raises(Gen3RInputError, match="unknown export format"):
    parse_formats("colmap,gltf")
  assert parse_formats(" Colmap, splat,colmap") == ("colmap", "splat")
  assert not os.path.exists(os.path.join(out, "colmap"))      # nothing was written by the failures
