"""Sample export: every file opens (mp4, npz, PLY, JSON, PNG), the evaluation reader reads it back, bad input
raises clear errors before anything is written."""

import json
import os
import struct

import imageio.v2 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from gen3r_jax.errors import Gen3RInputError
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


def parse_ply(path):
  """Independent binary PLY reader: header fields, then '<fffBBB' records."""
  with open(path, "rb") as f:
    data = f.read()
  end = data.index(b"end_header\n") + len(b"end_header\n")
  lines = data[:end].decode("ascii").strip().split("\n")
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
