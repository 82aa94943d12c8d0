"""VGGT reconstruction (``launch/reconstruct.py``): a tiny converted checkpoint on 3 tiny images, every output file
read back, preprocessing as VGGT's ``load_and_preprocess_images``, and each bad-input rule."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from gen3r_jax.apps.reconstruct import find_images, load_and_preprocess_images, reconstruct
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling.export import PLY_DTYPE
from gen3r_jax.testing.cases.vggt import build
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [(30, 40), (44, 26), (33, 33)]  # (H, W): landscape, portrait, square


def write_images(folder, sizes=SIZES, rgba_index=1) -> list[str]:
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  paths = []
  for i, (h, w) in enumerate(sizes):
    a = rng.integers(0, 256, (h, w, 4 if i == rgba_index else 3), dtype=np.uint8)
    paths.append(os.path.join(folder, f"frame_{i}.png"))
    Image.fromarray(a).save(paths[-1])
  return paths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
  """The vggt_tiny fixture weights through the strict converter, saved as an Orbax checkpoint."""
  path = str(tmp_path_factory.mktemp("vggt_tiny_ckpt"))
  build(Fixture.open(fixture_path("vggt_tiny"))).save_checkpoint(path, overwrite=True)
  return path


def read_ply(path):
  with open(path, "rb") as f:
    data = f.read()
  head, body = data.split(b"end_header\n", 1)
  lines = head.decode("ascii").splitlines()
  assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
  n = int(next(line for line in lines if line.startswith("element vertex")).split()[-1])
  assert len(body) == n * PLY_DTYPE.itemsize
  return np.frombuffer(body, PLY_DTYPE)


def test_reconstruct_writes_every_output(tmp_path, checkpoint):
  write_images(tmp_path / "imgs")
  out = str(tmp_path / "out")
  files = reconstruct(str(tmp_path / "imgs"), checkpoint, out, size=28, frames_chunk_size=2, log=lambda *_: None)
  for name in ("depth.npz", "depth.mp4", "points.npz", "points.ply", "cameras.json", "preview.png", "rgb.mp4",
               "vggt_predictions.npz"):
    assert os.path.isfile(os.path.join(out, name)) and files[name] == os.path.join(out, name)
  depth = np.load(os.path.join(out, "depth.npz"))["depth"]
  assert depth.shape == (3, 28, 28) and depth.dtype == np.float32 and np.all(depth > 0)
  pts = np.load(os.path.join(out, "points.npz"))
  assert pts["points"].shape == (3, 28, 28, 3) and pts["masks"].shape == (3, 28, 28)
  keep = pts["masks"] & np.isfinite(pts["points"]).all(-1)
  assert 0 < keep.sum() < keep.size                        # the percentile mask drops some pixels per frame
  ply = read_ply(os.path.join(out, "points.ply"))
  assert len(ply) == keep.sum()
  np.testing.assert_array_equal(np.stack([ply["x"], ply["y"], ply["z"]], -1), pts["points"][keep])
  cams = json.load(open(os.path.join(out, "cameras.json")))
  assert len(cams["frames"]) == 3 and len(cams["extrinsics"]) == 3 and len(cams["intrinsics"]) == 3
  assert (cams["width"], cams["height"]) == (28, 28)
  assert [f["source_index"] for f in cams["frames"]] == [0, 1, 2]
  np.testing.assert_allclose(np.asarray(cams["intrinsics"])[:, :2, 2], 14.0)
  assert len(cams["meta"]["images"]) == 3
  pred = np.load(os.path.join(out, "vggt_predictions.npz"))
  assert pred["pose_enc"].shape == (3, 9) and pred["world_points"].shape == (3, 28, 28, 3)
  w2c = np.asarray(cams["extrinsics"])[:, :3]
  np.testing.assert_allclose(w2c, pred["extrinsics"], atol=1e-5)
  assert np.stack(list(iio.imiter(os.path.join(out, "depth.mp4")))).shape[:3] == (3, 28, 28)
  with Image.open(os.path.join(out, "preview.png")) as im:
    assert im.size[0] > 28 * 3 and im.size[1] > 28 * 2


def test_preprocessing_square_for_mixed_sizes_and_white_padding(tmp_path):
  paths = write_images(tmp_path, SIZES + [(14, 30)])
  crop = load_and_preprocess_images(paths, 28, "crop")
  pad = load_and_preprocess_images(paths, 28, "pad")
  assert crop.shape == pad.shape == (4, 28, 28, 3) and crop.dtype == np.float32
  assert 0.0 <= crop.min() and crop.max() <= 1.0
  # pad: the 44x26 portrait is resized to 28 x round(26 * 28 / 44 / 14) * 14 = 14 columns, padded white 7 + 7
  np.testing.assert_array_equal(pad[1, :, :7], 1.0)
  np.testing.assert_array_equal(pad[1, :, -7:], 1.0)
  assert np.any(pad[1, :, 7:21] < 1.0)
  # crop: the 14x30 landscape is resized to 56 x 28 (round(30 * 2 / 14) * 14) and centre-cropped to 28 x 28
  img = Image.open(paths[3]).convert("RGB").resize((56, 28), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(crop[3], np.asarray(img, np.float32)[:, 14:42] / 255.0)


def test_bad_inputs(tmp_path, checkpoint):
  out = str(tmp_path / "out")
  os.makedirs(tmp_path / "empty")
  with pytest.raises(Gen3RInputError, match="no images found in folder"):
    reconstruct(str(tmp_path / "empty"), checkpoint, out, size=28)
  with pytest.raises(Gen3RInputError, match="image file\\(s\\) not found: .*nope.png"):
    reconstruct(str(tmp_path / "nope.png"), checkpoint, out, size=28)
  bad = tmp_path / "broken.png"
  bad.write_bytes(b"not a png at all")
  with pytest.raises(Gen3RInputError, match="cannot read image .*broken.png"):
    reconstruct(str(bad), checkpoint, out, size=28)
  good = write_images(tmp_path / "imgs", SIZES[:1])
  with pytest.raises(Gen3RInputError, match="checkpoint folder .* not found"):
    reconstruct(good[0], str(tmp_path / "no_ckpt"), out, size=28)
  with pytest.raises(Gen3RInputError, match="not a converted gen3r_jax checkpoint"):
    reconstruct(good[0], str(tmp_path / "empty"), out, size=28)
  with pytest.raises(Gen3RInputError, match="positive multiple of the patch size 14"):
    reconstruct(good[0], checkpoint, out, size=500)
  with pytest.raises(Gen3RInputError, match="mode must be one of"):
    reconstruct(good[0], checkpoint, out, size=28, mode="stretch")
  with pytest.raises(Gen3RInputError, match="too thin"):
    load_and_preprocess_images(write_images(tmp_path / "thin", [(2, 60)]), 28, "pad")
  assert not os.path.exists(out)                           # nothing is written before every check passed
  assert find_images(",".join(good + good)) == good + good


def test_cli_one_line_error(tmp_path):
  os.makedirs(tmp_path / "empty")
  res = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "reconstruct.py"), "--images",
                        str(tmp_path / "empty"), "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert res.returncode == 2, res.stderr
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: no images found in folder"), res.stderr
