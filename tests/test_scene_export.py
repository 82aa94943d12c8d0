"""Exports read back by independent readers: pycolmap reads the COLMAP model, plyfile the splat PLY, our own data
reader (and the evaluation's) the nerfstudio scene, each checked against its format's definition written out
here; bad input is a one-line exit-2 error; reconstruction outputs export too; a folder holding anything but one
export of ours is never replaced or removed."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import plyfile
import pycolmap
import pytest

from gen3r_jax import camera_axes as ca
from gen3r_jax.apps import export as scene_export
from gen3r_jax.apps.export import MARKER, export_output_dir, parse_formats
from gen3r_jax.apps.outputs import load_output_dir
from gen3r_jax.apps.reconstruct import reconstruct
from gen3r_jax.data import layout
from gen3r_jax.data.splat import SH_C0
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.eval import io as eio
from gen3r_jax.eval import scene as eval_scene
from gen3r_jax.sampling import export as ex
from tests.test_export import _sample
from tests.test_reconstruct import checkpoint, write_images  # noqa: F401  (module fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# rotations by 180 degrees about x, y and z: each makes a different diagonal entry the largest, so together with a
# general rotation every branch of the matrix -> quaternion routine (Shepperd's method) runs; the rotations by 170
# degrees about axes near x, y, z run the same branches with non-zero off-diagonal entries
R180 = {"x": np.diag([1.0, -1.0, -1.0]), "y": np.diag([-1.0, 1.0, -1.0]), "z": np.diag([-1.0, -1.0, 1.0])}


def axis_angle(axis, degrees):
  """Rodrigues' formula."""
  k = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  a = np.radians(degrees)
  return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


def quaternion_to_matrix(q):
  """The rotation of a unit quaternion ``(w, x, y, z)``, by the textbook formula (COLMAP's convention)."""
  w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                   [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                   [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
  """A sample output directory whose cameras rotate (a general rotation, 180 degrees about x, y, z, 170 degrees
  about axes near x, y, z, another general one) and translate, so the pose checks mean something."""
  s = _sample(f=8)
  rot = ca.qvec_to_rotmat(np.array([[0.9, 0.1 * i, -0.2, 0.05 * i] for i in range(len(s["c2w"]))]))
  rot[1:4] = [R180["x"], R180["y"], R180["z"]]
  rot[4:7] = [axis_angle(a, 170) for a in ([1, 0.3, -0.2], [0.25, 1, 0.3], [-0.3, 0.2, 1])]
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
  # images.txt itself: IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, the world-to-camera pose (COLMAP's format)
  lines = [ln for ln in (tmp_path / "colmap" / "sparse" / "0" / "images.txt").read_text().splitlines()
           if not ln.startswith("#")]
  for i in range(len(s["c2w"])):
    f = lines[2 * i].split()
    assert int(f[0]) == i + 1 and f[9] == f"frame{i:05d}.png" and int(f[8]) == 1
    q, t = np.array(f[1:5], float), np.array(f[5:8], float)
    assert abs(np.linalg.norm(q) - 1) < 1e-12 and q[0] >= 0
    w2c = np.linalg.inv(s["c2w"][i])
    np.testing.assert_allclose(quaternion_to_matrix(q), w2c[:3, :3], atol=1e-12)
    np.testing.assert_allclose(t, w2c[:3, 3], atol=1e-12)
  for i, axis in zip((1, 2, 3), "xyz"):                # 180 degrees about an axis: q = (0, that unit axis)
    q = np.array(lines[2 * i].split()[1:5], float)
    np.testing.assert_allclose(np.abs(q), np.r_[0.0, np.eye(3)["xyz".index(axis)]], atol=1e-12)
  valid = s["masks"] & np.isfinite(s["points"]).all(-1)
  assert rec.num_points3D() == min(200, int(valid.sum()))
  frames = load_output_dir(out).rgb                    # the colours: the frames as decoded from rgb.mp4
  source = {s["points"][f, v, u].tobytes(): (f, v, u) for f, v, u in zip(*np.nonzero(valid))}
  assert len(source) == int(valid.sum())               # every valid point distinct: its pixel is known from it
  for pid, p in rec.points3D.items():                  # each point seen once: by its source frame, at its pixel
    (el,) = p.track.elements
    f, v, u = source[np.asarray(p.xyz, np.float32).tobytes()]
    assert el.image_id == f + 1 and rec.images[el.image_id].name == f"frame{f:05d}.png"
    p2d = rec.images[el.image_id].points2D[el.point2D_idx]
    assert p2d.point3D_id == pid
    np.testing.assert_allclose(p2d.xy, [u, v], atol=1e-3)     # unprojected at integer pixel coordinates
    np.testing.assert_array_equal(p.color, frames[f, v, u])
  frame0 = np.asarray(Image.open(tmp_path / "colmap" / "images" / "frame00000.png"))
  assert frame0.shape == s["rgb"].shape[1:] and frame0.dtype == np.uint8


def test_splat_ply_reads_back_in_plyfile(sample_dir, tmp_path):
  out, s = sample_dir
  export_output_dir(out, "splat", str(tmp_path / "splat"), max_points=0, log=lambda *_: None)
  ply = plyfile.PlyData.read(str(tmp_path / "splat" / "splat.ply"))
  v = ply["vertex"]
  head = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
  tail = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
  assert [p.name for p in v.properties] == head + tail        # the reference save_ply's order, degree 0
  assert {p.val_dtype for p in v.properties} == {"f4"} and ply.text is False and ply.byte_order == "<"
  scene = load_output_dir(out)
  keep = scene.valid()
  assert v.count == int(keep.sum())
  np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], -1), scene.points[keep], atol=1e-6)
  rgb = np.stack([v["f_dc_0"], v["f_dc_1"], v["f_dc_2"]], -1) * SH_C0 + 0.5
  np.testing.assert_allclose(rgb * 255, scene.rgb[keep], atol=1e-3)
  np.testing.assert_allclose(1 / (1 + np.exp(-v["opacity"])), 0.1, atol=1e-6)
  # scale: log of the RMS distance to the 3 nearest other points (squared floored at 1e-7), isotropic; brute force
  xyz = scene.points[keep].astype(np.float64)
  d2 = np.sort(((xyz[:, None] - xyz[None]) ** 2).sum(-1), axis=1)[:, 1:4]     # column 0: the point itself
  want = 0.5 * np.log(np.maximum(d2.mean(1), 1e-7))
  for i in range(3):
    np.testing.assert_allclose(v[f"scale_{i}"], want, atol=1e-5)
  np.testing.assert_array_equal(np.stack([v[f"rot_{i}"] for i in range(4)], -1), [[1, 0, 0, 0]] * v.count)
  export_output_dir(out, "splat", str(tmp_path / "splat3"), sh_degree=3, log=lambda *_: None)
  names = [p.name for p in plyfile.PlyData.read(str(tmp_path / "splat3" / "splat.ply"))["vertex"].properties]
  assert names == head + [f"f_rest_{i}" for i in range(45)] + tail    # 3 * ((3 + 1)^2 - 1) higher SH bands


def test_nerfstudio_scene_feeds_our_data_reader(sample_dir, tmp_path):
  out, s = sample_dir
  dest = tmp_path / "ns"
  export_output_dir(out, "nerfstudio", str(dest), log=lambda *_: None)
  meta = json.loads((dest / "transforms.json").read_text())
  assert meta["camera_axes"] == "opengl" and len(meta["frames"]) == len(s["c2w"])
  # nerfstudio's convention (OpenGL camera axes): x right, y up, the camera looks down -z; so from the OpenCV
  # camera-to-world [R | t]: x = R[:, 0], y = -R[:, 1], z = -R[:, 2], position t, bottom row 0 0 0 1
  for i, fr in enumerate(meta["frames"]):
    gl, R, t = np.asarray(fr["transform_matrix"]), s["c2w"][i][:3, :3], s["c2w"][i][:3, 3]
    np.testing.assert_allclose(gl[:3, 0], R[:, 0], atol=1e-12)
    np.testing.assert_allclose(gl[:3, 1], -R[:, 1], atol=1e-12)
    np.testing.assert_allclose(gl[:3, 2], -R[:, 2], atol=1e-12)
    np.testing.assert_allclose(gl[:3, 3], t, atol=1e-12)
    np.testing.assert_array_equal(gl[3], [0, 0, 0, 1])
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
  for i in range(len(s["c2w"])):                       # z-depth where the run's mask keeps the pixel, 0 elsewhere
    depth = np.load(dest / "depths" / f"frame{i:05d}.npy")
    assert depth.dtype == np.float32 and 0 < (~s["masks"][i]).sum() < s["masks"][i].size
    np.testing.assert_array_equal(depth[s["masks"][i]], s["depth"][i][s["masks"][i]])
    np.testing.assert_array_equal(depth[~s["masks"][i]], 0.0)
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


def _tree(path):
  """``{relative path: bytes}`` of every file under ``path``."""
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      full = os.path.join(root, f)
      out[os.path.relpath(full, path)] = open(full, "rb").read()
  return out


def test_export_folder_with_other_files_is_never_replaced(sample_dir, tmp_path):
  """Export colmap, run 'COLMAP' inside it (a dense/ folder, a database), export again: refused, nothing lost."""
  out, _ = sample_dir
  dest = tmp_path / "colmap"
  quiet = dict(log=lambda *_: None)
  export_output_dir(out, "colmap", str(dest), max_points=50, **quiet)
  marker = json.loads((dest / MARKER).read_text())
  written = {os.path.relpath(os.path.join(r, f), dest).replace(os.sep, "/") for r, _, fs in os.walk(dest)
             for f in fs} - {MARKER}
  assert set(marker["files"]) == written and "sparse/0/points3D.txt" in written     # every file listed, with size
  assert all(marker["files"][n] == os.path.getsize(dest / n) for n in written)
  export_output_dir(out, "colmap", str(dest), max_points=60, **quiet)               # exactly ours: replaced
  assert json.loads((dest / MARKER).read_text())["counts"]["points"] == 60
  (dest / "dense").mkdir()
  (dest / "dense" / "fused.ply").write_bytes(b"user's dense cloud")
  (dest / "database.db").write_bytes(b"user's database")
  before = _tree(dest)
  with pytest.raises(Gen3RInputError, match=r"not part of the gen3r_jax export there \(database.db, "
                                            r"dense/fused.ply\).*move them out of it, or export to another folder"):
    export_output_dir(out, "colmap", str(dest), **quiet)
  r = _cli(out, "--format=colmap", f"--out={dest}")
  assert r.returncode == 2 and r.stderr.count("\n") == 1 and "database.db" in r.stderr, r.stderr
  assert _tree(dest) == before                                                       # untouched
  # a file of ours changed since (e.g. a model refined in place) is not ours any more either
  shutil.rmtree(dest / "dense")
  os.remove(dest / "database.db")
  with open(dest / "sparse" / "0" / "points3D.txt", "a") as f:
    f.write("# edited\n")
  with pytest.raises(Gen3RInputError, match=r"\(sparse/0/points3D.txt\)"):
    export_output_dir(out, "colmap", str(dest), **quiet)
  # an empty folder the user made counts too
  other = tmp_path / "splat"
  export_output_dir(out, "splat", str(other), **quiet)
  (other / "notes").mkdir()
  with pytest.raises(Gen3RInputError, match=r"\(notes/\)"):
    export_output_dir(out, "splat", str(other), **quiet)
  # a folder without our marker: never ours
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "a.txt").write_text("x")
  with pytest.raises(Gen3RInputError, match=f"not a gen3r_jax export \\(no {MARKER}\\)"):
    export_output_dir(out, "splat", str(mine), **quiet)
  assert os.listdir(mine) == ["a.txt"]


def test_old_marker_without_file_list_is_judged_by_the_format_names(sample_dir, tmp_path):
  out, s = sample_dir
  dest = tmp_path / "ns"
  export_output_dir(out, "nerfstudio", str(dest), log=lambda *_: None)
  old = json.loads((dest / MARKER).read_text())
  del old["files"]                                        # as written before markers listed their files
  (dest / MARKER).write_text(json.dumps(old))
  assert scene_export.foreign_files(str(dest)) == []
  (dest / "images" / f"frame{len(s['c2w']):05d}.png").write_bytes(b"one frame more than the export had")
  (dest / "my_notes.txt").write_text("mine")
  assert scene_export.foreign_files(str(dest)) == [f"images/frame{len(s['c2w']):05d}.png", "my_notes.txt"]
  with pytest.raises(Gen3RInputError, match="my_notes.txt"):
    export_output_dir(out, "nerfstudio", str(dest), log=lambda *_: None)
  old["format"] = "splat"                                 # a splat folder holds splat.ply only
  (dest / MARKER).write_text(json.dumps(old))
  assert "transforms.json" in scene_export.foreign_files(str(dest))


def test_stale_exports_with_other_files_stay_and_a_failed_export_leaves_no_stale_folder(sample_dir, tmp_path,
                                                                                         monkeypatch):
  out, _ = sample_dir
  run = tmp_path / "run"
  shutil.copytree(out, run)
  quiet = dict(log=lambda *_: None)
  export_output_dir(str(run), "colmap,splat,nerfstudio", **quiet)
  (run / "nerfstudio" / "ns-train.log").write_text("the user's training log")
  warnings = []
  removed = scene_export.remove_stale_exports(str(run), keep=("colmap",), warn=warnings.append)
  assert removed == [str(run / "splat")] and os.path.isdir(run / "colmap")
  assert len(warnings) == 1 and "nerfstudio" in warnings[0] and "ns-train.log" in warnings[0]
  assert (run / "nerfstudio" / "ns-train.log").read_text() == "the user's training log"
  # the end of a sampling / reconstruction run: the previous run's exports go before the new ones are written, so a
  # failing export leaves none of them looking current; the outputs stay and the log says how to export again
  export_output_dir(str(run), "splat", **quiet)
  scene = load_output_dir(str(run))

  def broken(*a, **k):
    raise OSError("disk full")
  monkeypatch.setattr(scene_export, "write_colmap_text", broken)
  lines, warnings = [], []
  with pytest.raises(OSError, match="disk full"):
    scene_export.replace_exports(scene, "colmap", log=lines.append, warn=warnings.append)
  assert not os.path.exists(run / "colmap") and not os.path.exists(run / "splat")
  assert os.path.isfile(run / "nerfstudio" / "ns-train.log") and len(warnings) == 1
  assert f"python launch/export.py {run} --format colmap" in lines[-1]
  assert all(os.path.isfile(run / n) for n in ("rgb.mp4", "cameras.json", "depth.npz", "points.npz"))
  monkeypatch.undo()
  assert scene_export.replace_exports(scene, "colmap", **quiet, warn=warnings.append) == {"colmap": str(run / "colmap")}


def test_reconstruction_refuses_an_export_folder_with_other_files_before_any_work(tmp_path):
  out = tmp_path / "out"
  (out / "splat").mkdir(parents=True)
  (out / "splat" / "mine.ply").write_text("mine")
  with pytest.raises(Gen3RInputError, match=r"splat holds files that are not a gen3r_jax export"):
    reconstruct(str(tmp_path / "no-images"), str(tmp_path / "no-checkpoint"), str(out), export_formats="splat",
                log=lambda *_: None)
  assert sorted(os.listdir(out)) == ["splat"] and os.listdir(out / "splat") == ["mine.ply"]
