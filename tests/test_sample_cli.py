"""``launch/sample.py`` end to end on the embedded tiny demo config (random weights, procedurally made image):
every output file opens; and each bad input is a one-line error naming the fix, before any model loads."""

import json
import os
import subprocess
import sys

import imageio.v2 as iio
import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (the CLI's flag parser must import)

from configs import demo_tiny, sample as sample_config
from gen3r_jax.apps import demo
from gen3r_jax.apps.sample import sample_from_config
from gen3r_jax.errors import Gen3RInputError
from tests.test_export import parse_ply

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "sample.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("demo_cache"))


def test_demo_cli_writes_every_output(tmp_path, cache):
  out = tmp_path / "out"
  r = _run("--config", os.path.join(ROOT, "configs", "demo_tiny.py"), f"--config.out={out}",
           f"--config.demo.cache_dir={cache}", "--config.num_frames=1", "--config.num_steps=2", "--config.fps=8",
           "--config.export_formats=nerfstudio,splat")
  assert r.returncode == 0, r.stderr[-3000:]
  # a readable console off a terminal: a line per stage and per step, no \r bar, no library chatter
  assert "\r" not in r.stdout + r.stderr
  assert "[denoise] compiling the denoising step" in r.stderr and "[denoise] step 2/2" in r.stderr
  assert "[sample] vae_decode: decoding the video" in r.stdout and "[sample] geometry_decode: done in" in r.stdout
  assert "os.fork()" not in r.stderr and "[export] splat: " in r.stdout
  names = {"rgb.mp4", "depth.npz", "depth.mp4", "points.npz", "points.ply", "cameras.json", "preview.png",
           "prompt.txt", "latents.npz"}
  assert names <= set(os.listdir(out))
  frames = np.stack(iio.mimread(str(out / "rgb.mp4")))
  assert frames.shape == (1, 560, 560, 3)
  assert np.stack(iio.mimread(str(out / "depth.mp4"))).shape == (1, 560, 560, 3)
  cams = json.loads((out / "cameras.json").read_text())
  assert len(cams["extrinsics"]) == 1 and len(cams["intrinsics"]) == 1
  assert np.load(out / "depth.npz")["depth"].shape == (1, 560, 560)
  pts = np.load(out / "points.npz")
  n_valid = int((pts["masks"] & np.isfinite(pts["points"]).all(-1)).sum())
  xyz, col = parse_ply(str(out / "points.ply"))
  assert xyz.shape == (n_valid, 3) and col.shape == (n_valid, 3) and n_valid > 0
  assert np.isfinite(xyz).all()
  assert (out / "prompt.txt").read_text().strip() == demo_tiny.get_config().prompt
  # the sampler option writes the exports beside the outputs (read back in tests/test_scene_export.py)
  assert (out / "splat" / "splat.ply").is_file() and (out / "nerfstudio" / "images" / "frame00000.png").is_file()
  assert json.loads((out / "nerfstudio" / "transforms.json").read_text())["camera_axes"] == "opengl"


def _cfg(tmp_path, **kw):
  c = sample_config.get_config()
  c.out, c.prompt = str(tmp_path / "o"), "a room"
  c.checkpoint = str(tmp_path / "ckpt")
  c.images = kw.pop("images", None) or demo.ensure_example_image(str(tmp_path))
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _fake_checkpoint(path, missing=()):
  from gen3r_jax.apps.bundle import COMPONENTS, COPIED, INDEX_FILE
  os.makedirs(path, exist_ok=True)
  open(os.path.join(path, INDEX_FILE), "w").write("{}")
  for c in (*COMPONENTS, *COPIED):
    if c not in missing:
      os.makedirs(os.path.join(path, c), exist_ok=True)


@pytest.mark.parametrize("change, message", [
    (dict(images="nope.png"), "image 'nope.png' not found"),
    (dict(task="2view"), "task '2view' takes 2 conditioning images"),
    (dict(num_frames=8), "num_frames must be 1 \\+ 4k"),
    (dict(size=480), "size 480 is not supported"),
    (dict(cameras="orbit"), "unknown camera trajectory 'orbit'"),
    (dict(dtype="float16"), "dtype 'float16' is not supported"),
    (dict(prompt=""), "no prompt"),
    (dict(export_formats="colmap,obj"), "unknown export format 'obj'"),
])
def test_bad_config_one_line_errors(tmp_path, change, message):
  _fake_checkpoint(str(tmp_path / "ckpt"))
  with pytest.raises(Gen3RInputError, match=message) as e:
    sample_from_config(_cfg(tmp_path, **change), log=lambda *a: None)
  assert "\n" not in str(e.value)


def test_export_folder_with_other_files_is_refused_before_any_model(tmp_path):
  """--config.export_formats=colmap into an output directory whose colmap/ holds the user's COLMAP run: refused
  with the input checks, not after sampling; nothing there is touched."""
  _fake_checkpoint(str(tmp_path / "ckpt"))
  (tmp_path / "o" / "colmap").mkdir(parents=True)
  (tmp_path / "o" / "colmap" / "database.db").write_bytes(b"the user's COLMAP database")
  with pytest.raises(Gen3RInputError, match=r"colmap holds files that are not a gen3r_jax export") as e:
    sample_from_config(_cfg(tmp_path, export_formats="colmap"), log=lambda *a: None)
  assert "\n" not in str(e.value)
  assert os.listdir(tmp_path / "o") == ["colmap"] and os.listdir(tmp_path / "o" / "colmap") == ["database.db"]


def test_unreadable_image_and_bad_cameras_json(tmp_path):
  _fake_checkpoint(str(tmp_path / "ckpt"))
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"not a png")
  with pytest.raises(Gen3RInputError, match="cannot read image"):
    sample_from_config(_cfg(tmp_path, images=str(junk)), log=lambda *a: None)
  cams = tmp_path / "cams.json"
  cams.write_text("{not json")
  with pytest.raises(Gen3RInputError, match="is not valid JSON"):
    sample_from_config(_cfg(tmp_path, cameras=str(cams)), log=lambda *a: None)


def test_checkpoint_with_a_missing_part(tmp_path):
  _fake_checkpoint(str(tmp_path / "ckpt"), missing=("vggt",))
  with pytest.raises(Gen3RInputError, match="checkpoint is missing vggt"):
    sample_from_config(_cfg(tmp_path), log=lambda *a: None)


def test_cli_exit_code_and_single_line(tmp_path):
  r = _run("--config", os.path.join(ROOT, "configs", "sample.py"), f"--config.out={tmp_path}",
           "--config.prompt=x", f"--config.checkpoint={tmp_path}", "--config.images=missing.png")
  assert r.returncode == 2
  lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
  assert lines == ["error: image 'missing.png' not found; check the path in --config.images."]


def _error_lines(r):
  return [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]


def test_cli_allview_video_too_short_and_unwritable_out(tmp_path, cache):
  from gen3r_jax.sampling.export import write_video
  video = write_video(str(tmp_path / "garden.mp4"), np.zeros((3, 32, 32, 3), np.uint8), fps=8)
  r = _run("--config", os.path.join(ROOT, "configs", "sample.py"), f"--config.out={tmp_path / 'o'}",
           "--config.prompt=x", f"--config.checkpoint={tmp_path}", "--config.task=allview", "--config.num_frames=5",
           f"--config.images={video}")
  assert r.returncode == 2 and _error_lines(r) == [
      f"error: video {video!r} has 3 frames but task allview needs num_frames=5 (one conditioning frame per "
      "generated frame, num_frames = 1 + 4k); pass at least 5 frames or set --config.num_frames=1 (the largest "
      "1 + 4k it fits)."], r.stderr
  assert not (tmp_path / "o").exists()
  # a valid run (the demo bundle) whose output path lies under a file: refused before anything is loaded
  (tmp_path / "a_file").write_text("x")
  r = _run("--config", os.path.join(ROOT, "configs", "demo_tiny.py"), f"--config.out={tmp_path / 'a_file' / 'o'}",
           f"--config.demo.cache_dir={cache}")
  assert r.returncode == 2 and _error_lines(r) == [
      f"error: cannot create output directory {str(tmp_path / 'a_file' / 'o')!r}: {str(tmp_path / 'a_file')!r} is "
      "a file, not a directory; choose another output path."], r.stderr
  assert "[sample] loaded" not in r.stdout
