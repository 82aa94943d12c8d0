"""Sample export: every file opens (mp4, npz, PLY, JSON, PNG), the evaluation reader reads it back, bad input
raises clear errors before anything is written."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys

import imageio.v2 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from gen3r_jax.apps.outputs import load_output_dir
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax import ply
from gen3r_jax.eval import io as eio
from gen3r_jax.sampling import cameras as cams
from gen3r_jax.sampling import export as ex
from gen3r_jax.sampling import visualize as vis

F, H, W = 5, 16, 24


def _sample(f=F, h=H, w=W):
  """A small smooth scene: gradient colours, a tilted plane, cameras sliding along x."""
  v, u = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
  rgb = np.stack([np.stack([u, v, np.full_like(u, 0.2 + 0.1 * i)], -1) for i in range(f)]).astype(np.float32)
  depth = np.stack([1.0 + u + 0.5 * v + 0.1 * i for i in range(f)]).astype(np.float32)
  c2w = np.tile(np.eye(4), (f, 1, 1))
  c2w[:, 0, 3] = np.linspace(0.0, 0.4, f)
  K = np.tile(np.array([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]]), (f, 1, 1))
  points = eio.unproject(depth, K, c2w)
  masks = depth < 2.0
  return dict(rgb=rgb, depth=depth, points=points, masks=masks, c2w=c2w, K=K)


def parse_ply(path, comments=None):
  """Independent binary PLY reader: header fields (``comment`` lines, which the format allows anywhere in the
  header, collected into ``comments``), then '<fffBBB' records."""
  with open(path, "rb") as f:
    data = f.read()
  end = data.index(b"end_header\n") + len(b"end_header\n")
  lines = data[:end].decode("ascii").strip().split("\n")
  if comments is not None:
    comments.extend(ln[len("comment "):] for ln in lines if ln.startswith("comment "))
  lines = [ln for ln in lines if not ln.startswith("comment ")]
  assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
  n = int(lines[2].split()[2])
  assert lines[2].startswith("element vertex")
  assert lines[3:9] == ["property float x", "property float y", "property float z",
                        "property uchar red", "property uchar green", "property uchar blue"]
  body = data[end:]
  assert len(body) == n * 15
  rec = [struct.unpack_from("<fffBBB", body, 15 * i) for i in range(n)]
  xyz = np.array([r[:3] for r in rec], np.float32).reshape(n, 3)
  col = np.array([r[3:] for r in rec], np.uint8).reshape(n, 3)
  return xyz, col


def test_export_all_files_open_and_eval_reads_back(tmp_path):
  s = _sample()
  out = ex.export_all(str(tmp_path), **s, fps=8, max_points=50, seed=3, prompt="a red chair",
                      meta={"steps": np.int64(4), "cfg": 5.0}, source_indices=[10, 11, 12, 13, 14])
  names = {"rgb.mp4", "depth.npz", "depth.mp4", "points.npz", "points.ply", "cameras.json", "preview.png",
           "prompt.txt"}
  assert set(out) == names and set(os.listdir(tmp_path)) == names

  # videos: H.264 yuv420p, F frames of H x W, colours close to the input (smooth content)
  for name in ("rgb.mp4", "depth.mp4"):
    gen = imageio_ffmpeg.read_frames(out[name])
    meta = next(gen)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["size"] == (W, H)
  frames = np.stack(iio.mimread(out["rgb.mp4"]))
  assert frames.shape == (F, H, W, 3) and frames.dtype == np.uint8
  assert np.abs(frames / 255.0 - s["rgb"]).mean() < 0.03
  dframes = np.stack(iio.mimread(out["depth.mp4"]))
  assert dframes.shape == (F, H, W, 3)
  ref = vis.colorize_depth(s["depth"], s["masks"])
  err = np.abs(dframes.astype(int) - ref)
  assert np.median(err) <= 4 and err.mean() < 10  # up to compression and chroma subsampling at mask edges
  assert np.median(dframes[~s["masks"]]) < 10  # masked pixels are black

  # the evaluation reader
  pred = eio.read_prediction(str(tmp_path))
  assert pred.num_frames == F and pred.size == (H, W) and pred.source_indices == [10, 11, 12, 13, 14]
  np.testing.assert_array_equal(pred.depth, s["depth"])
  np.testing.assert_array_equal(pred.points, s["points"])
  np.testing.assert_array_equal(pred.masks, s["masks"])
  np.testing.assert_allclose(pred.c2w, s["c2w"])
  np.testing.assert_allclose(pred.K, s["K"])
  pts, valid = pred.world_points()
  np.testing.assert_array_equal(valid, s["masks"])

  # PLY: 50 of the masked points, with their own colours; the eval reader agrees with ours
  xyz, col = parse_ply(out["points.ply"])
  assert xyz.shape == (50, 3) and s["masks"].sum() > 50
  all_pts = s["points"][s["masks"]]
  all_col = np.round(s["rgb"][s["masks"]] * 255).astype(np.uint8)
  idx = [int(np.flatnonzero((all_pts == p).all(1))[0]) for p in xyz]
  assert idx == sorted(set(idx))  # distinct, kept in pixel order
  np.testing.assert_array_equal(col, all_col[idx])
  xyz2, col2 = eio.read_ply(out["points.ply"])
  np.testing.assert_array_equal(xyz2, xyz)
  np.testing.assert_array_equal(col2, col)

  # cameras.json: one camera per frame; official-layout keys readable by the sampling camera loader
  with open(out["cameras.json"]) as f:
    cj = json.load(f)
  assert len(cj["frames"]) == F and cj["width"] == W and cj["height"] == H
  assert all(fr["width"] == W and fr["height"] == H for fr in cj["frames"])
  assert cj["prompt"] == "a red chair" and cj["meta"] == {"steps": 4, "cfg": 5.0} and "OpenCV" in cj["convention"]
  np.testing.assert_allclose(np.asarray(cj["extrinsics"]) @ s["c2w"], np.tile(np.eye(4), (F, 1, 1)), atol=1e-12)
  c2w_back, k_back = cams.load_cameras_json(out["cameras.json"], F)
  np.testing.assert_allclose(c2w_back, s["c2w"], atol=1e-12)
  np.testing.assert_allclose(k_back, s["K"])

  # preview: 3 rows (rgb, depth, top view) of 5 frames (F = 5 < 6), frames not scaled (W < 256)
  img = Image.open(out["preview.png"])
  assert img.format == "PNG" and img.mode == "RGB"
  assert img.size == (5 * W + 6 * 4, 3 * H + 4 * 4)
  sheet = np.asarray(img)
  np.testing.assert_array_equal(sheet[4:4 + H, 4:4 + W], np.round(s["rgb"][0] * 255).astype(np.uint8))
  with open(out["prompt.txt"]) as f:
    assert f.read() == "a red chair\n"

  # one run id in every file of the set, each read by an independent reader of its format
  rid = cj["run_id"]
  assert len(rid) == 32 and int(rid, 16) >= 0
  for name in ("depth.npz", "points.npz"):
    with np.load(out[name]) as z:
      assert str(z["run_id"]) == rid
  comments = []
  parse_ply(out["points.ply"], comments)
  assert comments == [f"gen3r_jax run {rid}"]
  for name in ("rgb.mp4", "depth.mp4"):
    meta = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", out[name], "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, check=True).stdout
    assert f"comment=gen3r_jax run {rid}" in meta.splitlines()
  with Image.open(out["preview.png"]) as im:
    assert im.text["gen3r_jax run"] == rid


def test_preview_scales_and_picks_even_frames(tmp_path):
  np.testing.assert_array_equal(ex.preview_indices(49, 6), [0, 10, 19, 29, 38, 48])
  np.testing.assert_array_equal(ex.preview_indices(3, 6), [0, 1, 2])
  assert ex.preview_tile_size(560, 560, 256) == (256, 256)
  assert ex.preview_tile_size(40, 64, 32) == (20, 32)
  s = _sample(f=9, h=40, w=64)
  path = ex.write_preview(str(tmp_path / "p.png"), s["rgb"], s["depth"], num_frames=4, tile_width=32, gap=2)
  assert Image.open(path).size == (4 * 32 + 5 * 2, 2 * 20 + 3 * 2)  # no points: rgb + depth rows


def test_ply_masks_nan_and_deterministic_subsampling(tmp_path):
  s = _sample()
  p = s["points"].copy()
  p[0, 0, 0] = np.nan  # a masked-in but non-finite point is dropped
  n_all = ex.write_ply(str(tmp_path / "all.ply"), p, s["rgb"], masks=s["masks"])
  assert n_all == s["masks"].sum() - 1
  xyz, col = parse_ply(str(tmp_path / "all.ply"))
  keep = s["masks"] & np.isfinite(p).all(-1)
  np.testing.assert_array_equal(xyz, p[keep])
  np.testing.assert_array_equal(col, np.round(s["rgb"][keep] * 255).astype(np.uint8))
  paths = [str(tmp_path / f"{k}.ply") for k in ("a", "b", "c")]
  for path, seed in zip(paths, (7, 7, 8)):
    assert ex.write_ply(path, p, s["rgb"], masks=s["masks"], max_points=20, seed=seed) == 20
  a, b, c = (parse_ply(path)[0] for path in paths)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert ex.write_ply(str(tmp_path / "big.ply"), p, s["rgb"], masks=s["masks"], max_points=10**6) == n_all
  assert ex.write_ply(str(tmp_path / "none.ply"), p, masks=np.zeros(p.shape[:3], bool)) == 0
  assert parse_ply(str(tmp_path / "none.ply"))[0].shape == (0, 3)
  with pytest.raises(Gen3RInputError, match="max_points must be a positive integer"):
    ex.write_ply(str(tmp_path / "x.ply"), p, max_points=0)


def test_video_odd_size_errors_or_pads(tmp_path):
  x = np.zeros((2, 15, 20, 3), np.uint8)
  with pytest.raises(Gen3RInputError, match=r"even frame size, got 15 x 20.*pad_odd=True"):
    ex.write_video(str(tmp_path / "odd.mp4"), x)
  assert not os.path.exists(tmp_path / "odd.mp4")
  path = ex.write_video(str(tmp_path / "pad.mp4"), x, pad_odd=True)
  assert np.stack(iio.mimread(path)).shape == (2, 16, 20, 3)


def test_missing_ffmpeg_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-such-ffmpeg"))
  with pytest.raises(RuntimeError, match="no ffmpeg available.*IMAGEIO_FFMPEG_EXE"):
    ex.write_video(str(tmp_path / "v.mp4"), np.zeros((1, 4, 4, 3), np.uint8))
  out = tmp_path / "sample"
  with pytest.raises(RuntimeError, match="no ffmpeg available"):
    ex.export_all(str(out), **_sample())
  assert not out.exists()


@pytest.mark.parametrize("change, message", [
    (dict(depth=np.ones((F - 1, H, W), np.float32)), r"mismatched frame counts: rgb 5, depth 4"),
    (dict(c2w=np.tile(np.eye(4), (F + 1, 1, 1))), r"c2w has 6 cameras but K has 5"),
    (dict(depth=np.ones((H, W), np.float32)), r"depth: expected a rank-3 array \[F, H, W\]"),
    (dict(points=np.ones((F, H, W, 2), np.float32)), r"points: axis 3 .* must be 3"),
    (dict(rgb=np.ones((F, H, W), np.float32)), r"rgb: expected a rank-4 array"),
    (dict(points=np.ones((F, H, W + 2, 3), np.float32)), r"mismatched frame sizes"),
    (dict(masks=np.ones((F, H, W), np.uint8)), r"masks: expected a bool array"),
    (dict(rgb=np.full((F, H, W, 3), -1.0, np.float32)), r"\(x \+ 1\) / 2"),
    (dict(K=np.zeros((F, 3, 3))), r"non-positive focal length"),
    (dict(meta={"bad": object()}), r"meta: not JSON serialisable"),
    (dict(source_indices=[1, 2]), r"source_indices: 2 given for 5 frames"),
    (dict(max_points=0), r"max_points must be a positive integer or None, got 0"),
    (dict(fps=0), r"fps must be a positive number, got 0"),
])
def test_bad_input_raises_before_writing(tmp_path, change, message):
  out = tmp_path / "sample"
  with pytest.raises(Gen3RInputError, match=message):
    ex.export_all(str(out), **{**_sample(), **change})
  assert not out.exists()


def test_export_all_rejects_odd_sizes(tmp_path):
  s = _sample(h=15)
  with pytest.raises(Gen3RInputError, match=r"frames are 15 x 24: rgb.mp4 .* even"):
    ex.export_all(str(tmp_path / "s"), **s)


def test_write_cameras_3x4_and_depth_writer(tmp_path):
  s = _sample()
  path = ex.write_cameras(str(tmp_path / "c.json"), s["c2w"][:, :3], s["K"], width=W, height=H)
  c2w, K, src = eio.read_cameras_json(path)
  np.testing.assert_allclose(c2w, s["c2w"])
  assert src is None and K.shape == (F, 3, 3)
  paths = ex.write_depth(str(tmp_path / "d.npz"), s["depth"][..., None], video_path=str(tmp_path / "d.mp4"))
  assert paths == [str(tmp_path / "d.npz"), str(tmp_path / "d.mp4")]
  with np.load(paths[0]) as z:
    np.testing.assert_array_equal(z["depth"], s["depth"])


def test_depth_colours():
  lo, mid, hi = vis.turbo([vis.TURBO_LO, 0.5, vis.TURBO_HI])
  assert lo[2] > 2 * lo[0] and hi[0] > 0.5 > hi[2] and mid[1] > 0.9  # blue -> green -> red
  assert vis.turbo(np.zeros((2, 3))).shape == (2, 3, 3) and 0 <= vis.turbo(np.linspace(-1, 2, 50)).min()
  d = np.array([[[1.0, 2.0, 4.0, 0.0, np.nan, 3.0]]])
  c = vis.colorize_depth(d, valid=np.array([[[1, 1, 1, 1, 1, 0]]], bool), lo=0, hi=100).astype(int)[0, 0]
  assert c[0, 0] > 100 > c[0, 2] and c[2, 2] > 100 > c[2, 0]  # near red, far blue
  np.testing.assert_array_equal(c[3:6], 0)  # invalid depth (0, NaN, masked out) is black
  ramp = np.linspace(1.0, 4.0, 200)[None, None]
  with_outlier = np.concatenate([ramp, [[[1e6]]]], -1)  # one far outlier (sky) barely moves the colours
  diff = vis.colorize_depth(with_outlier)[..., :200, :].astype(int) - vis.colorize_depth(ramp)
  assert np.abs(diff).max() <= 8
  same = vis.colorize_depth(np.full((1, 2, 2), 3.0))
  np.testing.assert_array_equal(same[0, 0, 0], np.round(vis.turbo(0.5) * 255).astype(np.uint8))


def test_export_is_atomic_and_replaces_a_previous_run_as_a_whole(tmp_path, monkeypatch):
  out = tmp_path / "sample"
  first = ex.export_all(str(out), **_sample(), prompt="first", extra_npz={"latents.npz": {"latents": np.zeros(3)}})
  before = {n: open(p, "rb").read() for n, p in first.items()}
  assert set(before) == {"rgb.mp4", "depth.npz", "depth.mp4", "points.npz", "points.ply", "cameras.json",
                         "preview.png", "prompt.txt", "latents.npz"}

  def broken(*a, **k):
    raise RuntimeError("disk full")
  monkeypatch.setattr(ex, "write_preview", broken)      # fails after five files of the new run are written
  s = _sample()
  with pytest.raises(RuntimeError, match="disk full"):
    ex.export_all(str(out), **{**s, "depth": s["depth"] + 1.0})
  assert sorted(os.listdir(out)) == sorted(before)        # no staging folder, no partial file
  assert {n: open(out / n, "rb").read() for n in before} == before   # the previous run, byte for byte
  monkeypatch.undo()
  second = ex.export_all(str(out), **{**s, "depth": s["depth"] + 1.0})   # no prompt, no latents this time
  assert sorted(os.listdir(out)) == sorted(second) and "prompt.txt" not in second
  np.testing.assert_array_equal(np.load(second["depth.npz"])["depth"], s["depth"] + 1.0)
  # one writer alone: a failure leaves neither the target nor a temporary file
  with pytest.raises(RuntimeError, match="disk full"):
    with ex.atomic_path(str(tmp_path / "x.npz")) as tmp:
      np.savez(tmp, a=np.zeros(2))
      broken()
  assert not [n for n in os.listdir(tmp_path) if n.startswith((".x", "x"))]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_MID_MOVE = """
import os, signal, sys
from gen3r_jax.sampling import export as ex
from tests.test_export import _sample
out, real, placed = os.path.abspath(sys.argv[1]), os.replace, []
def replace(src, dst):
  if os.path.dirname(os.path.abspath(dst)) == out:     # a file of the new set put in place
    placed.append(dst)
    if len(placed) == 3:
      os.kill(os.getpid(), signal.SIGKILL)
  return real(src, dst)
os.replace = replace
s = _sample()
ex.export_all(out, **{**s, "depth": s["depth"] + 1.0})
"""


def _files(path):
  return {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)
          if os.path.isfile(os.path.join(path, n))}


def test_a_kill_while_moving_in_is_refused_by_the_reader_and_keeps_the_previous_run(tmp_path):
  out = tmp_path / "sample"
  ex.export_all(str(out), **_sample())
  before = _files(out)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", KILL_MID_MOVE, str(out)], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
  with pytest.raises(Gen3RInputError, match=r"mixes files of different runs .*re-run the sampler") as e:
    load_output_dir(str(out))
  assert "\n" not in str(e.value)
  (stage,) = [n for n in os.listdir(out) if n.startswith(ex.STAGING_PREFIX)]
  assert f"{stage}/previous" in str(e.value)
  # every file of the previous run still exists, byte for byte: in place, or moved aside into the stage
  prev = _files(out / stage / "previous")
  assert set(prev) == {"rgb.mp4", "depth.npz", "depth.mp4"}
  now = _files(out)
  assert all(prev.get(n, now.get(n)) == data for n, data in before.items())
  warnings = []
  ex.prepare_output_dir(str(out), warn=warnings.append)
  assert any(f"mix two runs, and {stage}/previous/ holds the previous run's depth.mp4, depth.npz, rgb.mp4" in w
             for w in warnings)
  # moving those back recovers the previous run exactly: what the warning and the error tell the user to do
  for n in prev:
    os.replace(out / stage / "previous" / n, out / n)
  shutil.rmtree(out / stage)
  assert _files(out) == before
  load_output_dir(str(out))


def test_a_failure_while_moving_in_puts_the_previous_run_back(tmp_path, monkeypatch):
  out = tmp_path / "sample"
  ex.export_all(str(out), **_sample(), prompt="first")
  before = _files(out)
  real, placed = os.replace, []

  def replace(src, dst, fail_restore=False):
    if os.path.dirname(os.path.abspath(dst)) == str(out):
      placed.append(dst)
      if len(placed) == 3 or (fail_restore and len(placed) > 3):
        raise OSError(28, "No space left on device")
    return real(src, dst)
  monkeypatch.setattr(os, "replace", replace)
  s = _sample()
  with pytest.raises(OSError, match="No space left"):
    ex.export_all(str(out), **{**s, "depth": s["depth"] + 1.0})
  assert set(os.listdir(out)) == set(before) and _files(out) == before      # the previous run, as it was
  load_output_dir(str(out))
  # and if even putting back fails, the previous run's files are kept in the stage and the error says where
  placed.clear()
  monkeypatch.setattr(os, "replace", lambda src, dst: replace(src, dst, fail_restore=True))
  with pytest.raises(RuntimeError, match=r"could not be put back: they are in .*previous; move them back by hand"):
    ex.export_all(str(out), **{**s, "depth": s["depth"] + 1.0})
  monkeypatch.undo()
  (stage,) = [n for n in os.listdir(out) if n.startswith(ex.STAGING_PREFIX)]
  prev = _files(out / stage / "previous")
  assert prev and all(before[n] == data for n, data in prev.items())
  assert all(prev.get(n, _files(out).get(n)) == data for n, data in before.items())


def test_files_of_two_runs_are_refused(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  s = _sample()
  ex.export_all(str(a), **s)
  ex.export_all(str(b), **{**s, "depth": s["depth"] + 1.0})
  load_output_dir(str(a))
  shutil.copy(b / "points.npz", a / "points.npz")          # same shapes, another run
  with pytest.raises(Gen3RInputError, match=r"mixes files of different runs \(.*points.npz of run"):
    load_output_dir(str(a))
  # a directory written before run ids (the evaluation's reference writer) loads; one such file in a set does not
  legacy = tmp_path / "legacy"
  eio.write_prediction(str(legacy), rgb=s["rgb"], depth=s["depth"], points=s["points"], masks=s["masks"],
                       c2w=s["c2w"], K=s["K"])
  load_output_dir(str(legacy))
  shutil.copy(legacy / "points.npz", b / "points.npz")
  with pytest.raises(Gen3RInputError, match=r"points.npz without a run id"):
    load_output_dir(str(b))
  # a video re-encoded by another tool loses its tag: no evidence of a mix, accepted
  c = tmp_path / "c"
  ex.export_all(str(c), **s)
  ex.write_video(str(c / "rgb.mp4"), s["rgb"])
  assert ex.read_run_id(str(c / "rgb.mp4")) is None
  load_output_dir(str(c))


def test_cameras_json_frame_size_must_be_the_video_size(tmp_path):
  out = tmp_path / "sample"
  s = _sample()
  ex.export_all(str(out), **s)
  ex.write_video(str(out / "rgb.mp4"), np.repeat(np.repeat(s["rgb"], 2, 1), 2, 2))   # re-encoded at 2x
  with pytest.raises(Gen3RInputError, match=rf"cameras.json describes {W}x{H} frames \(K is in their pixels\) "
                                            rf"but rgb.mp4 is {2 * W}x{2 * H}") as e:
    load_output_dir(str(out))
  assert "\n" not in str(e.value)
  ex.export_all(str(out), **s)
  cams_path = out / "cameras.json"
  cj = json.loads(cams_path.read_text())
  for item in [cj] + cj["frames"]:
    item["width"], item["height"] = 2 * W, 2 * H          # the cameras of a larger rendering of the scene
  cams_path.write_text(json.dumps(cj))
  with pytest.raises(Gen3RInputError, match=rf"describes {2 * W}x{2 * H} frames .* rgb.mp4 is {W}x{H}"):
    load_output_dir(str(out))
  cj["frames"][1]["width"] = W
  cams_path.write_text(json.dumps(cj))
  with pytest.raises(Gen3RInputError, match="the frames give different sizes"):
    eio.read_cameras_json(str(cams_path))


def test_ply_float_colours_property_types_and_truncation(tmp_path):
  pts = np.arange(12, dtype=np.float32).reshape(4, 3)
  col = np.array([[0.0, 0.5, 1.0], [1.0, 0.0, 0.25], [0.2, 0.4, 0.6], [1.0, 1.0, 1.0]], np.float32)
  path = str(tmp_path / "f.ply")
  assert ply.write_ply(path, pts, col) == 4
  xyz, rgb = parse_ply(path)                                # [0, 1] floats scaled to 0..255, rounded
  np.testing.assert_array_equal(xyz, pts)
  np.testing.assert_array_equal(rgb, [[0, 128, 255], [255, 0, 64], [51, 102, 153], [255, 255, 255]])
  with pytest.raises(Gen3RInputError, match=r"PLY colours: float values must lie in \[0, 1\]"):
    ply.write_ply(path, pts, col * 255)
  with pytest.raises(Gen3RInputError, match="expected uint8 or float in"):
    ply.write_ply(path, pts, (col * 255).astype(np.int64))
  u8 = str(tmp_path / "u8.ply")
  ply.write_ply(u8, pts, rgb)
  np.testing.assert_array_equal(ply.read_ply(u8)[1], rgb)
  data = open(u8, "rb").read()
  # the property types are checked, not only the names
  bad = tmp_path / "double.ply"
  bad.write_bytes(data.replace(b"property float x", b"property double x"))
  with pytest.raises(Gen3RInputError, match="expected property types float x y z and uchar red green blue"):
    ply.read_ply(str(bad))
  bad.write_bytes(data.replace(b"property uchar red", b"property float red"))
  with pytest.raises(Gen3RInputError, match="got float x, float y, float z, float red"):
    ply.read_ply(str(bad))
  # the other spellings of the format's types, and comments anywhere in the header, are read
  alias = tmp_path / "alias.ply"
  alias.write_bytes(data.replace(b"property float x", b"comment hi\nproperty float32 x")
                    .replace(b"uchar", b"uint8"))
  np.testing.assert_array_equal(ply.read_ply(str(alias))[0], pts)
  # a file cut short: one line, no raw ValueError
  cut = tmp_path / "cut.ply"
  cut.write_bytes(data[:-7])
  with pytest.raises(Gen3RInputError, match=r"truncated PLY: the header declares 4 vertices \(60 bytes\) but 53 "
                                            r"bytes follow") as e:
    ply.read_ply(str(cut))
  assert "\n" not in str(e.value)
  cut.write_bytes(data[:20])
  with pytest.raises(Gen3RInputError, match="not a PLY file"):
    ply.read_ply(str(cut))
  cut.write_bytes(data.replace(b"element vertex 4", b"element vertex four"))
  with pytest.raises(Gen3RInputError, match="malformed PLY header line 'element vertex four'"):
    ply.read_ply(str(cut))
