"""Sampler inputs and outputs (issue 16): 16-bit and odd-mode images, size / aspect / prompt-length warnings, the
official CLI's all-view inputs (a video, a folder of frames), the output directory created and probed before any
compute, and the whole config path with the models stubbed out (no compile: these tests are fast)."""

import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling import export as ex
from gen3r_jax.sampling import inputs
from tests.conftest import fixture_path


def png16(path, a):
  """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): grey [H, W] or RGB [H, W, 3] uint16."""
  h, w = a.shape[:2]
  colour = 2 if a.ndim == 3 else 0
  raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

  def chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
  return str(path)


def test_16_bit_and_other_image_modes(tmp_path):
  grey = (np.arange(48 * 64).reshape(48, 64) * 9).astype(np.uint16)              # 0 .. 27639 of 65535
  p = png16(tmp_path / "grey16.png", grey)
  assert Image.open(p).mode == "I;16"
  x = inputs.read_image(p)
  assert x.dtype == np.uint16 and x.shape == (48, 64, 3)
  np.testing.assert_array_equal(inputs.to_unit(x)[..., 1], grey.astype(np.float32) / np.float32(65535))
  pre = inputs.preprocess_image(x)                                                 # was ~all white (/ 255, clipped)
  assert pre.shape == (560, 560, 3) and 0.1 < pre.mean() < 0.3
  from gen3r_jax.apps.reconstruct import load_and_preprocess_images           # VGGT's reader too
  assert 0.1 < load_and_preprocess_images([p], 28).mean() < 0.3
  rgb = np.stack([grey, grey // 2, 65535 - grey], -1)
  x = inputs.read_image(png16(tmp_path / "rgb16.png", rgb))                        # Pillow: the high byte
  assert x.dtype == np.uint8 and np.abs(x.astype(int) - rgb / 257.0).max() <= 1
  # palette with a transparent entry and LA: RGB, the alpha dropped as infer.py does, with one warning each
  pal = Image.fromarray(np.arange(48 * 64).reshape(48, 64).astype(np.uint8) % 4).convert("P")
  pal.info["transparency"] = 0
  pal.save(tmp_path / "pal.png", transparency=0)
  Image.fromarray(np.stack([grey // 257, np.full_like(grey, 255)], -1).astype(np.uint8)).save(tmp_path / "la.png")
  Image.fromarray(np.stack([grey // 257] * 2, -1).astype(np.uint8)).save(tmp_path / "la_half.png")
  for name, n_warn in (("pal.png", 1), ("la.png", 0), ("la_half.png", 1)):
    warns = []
    x = inputs.read_image(str(tmp_path / name), warn=warns.append)
    assert x.dtype == np.uint8 and x.shape == (48, 64, 3), name
    assert len(warns) == n_warn and all("transparent pixels" in w and "\n" not in w for w in warns), (name, warns)
  # 32-bit integer images: taken as 16-bit when they fit, else refused; float images must lie in [0, 1]
  Image.fromarray(grey.astype(np.int32)).save(tmp_path / "i32.tif")
  assert inputs.read_image(str(tmp_path / "i32.tif")).dtype == np.uint16
  Image.fromarray((grey.astype(np.int32) * 10)).save(tmp_path / "big.tif")
  with pytest.raises(Gen3RInputError, match=r"image .*big.tif.*32-bit integer image with values in \[0, 276390\]"):
    inputs.read_image(str(tmp_path / "big.tif"))
  Image.fromarray(grey.astype(np.float32) / 65535).save(tmp_path / "f.tif")
  assert inputs.read_image(str(tmp_path / "f.tif")).dtype == np.float32


def test_small_and_elongated_images_warn_with_their_sizes(tmp_path):
  rng = np.random.default_rng(0)
  for name, (h, w) in {"small.png": (48, 64), "wide.png": (300, 1200), "ok.png": (560, 700)}.items():
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
  warns = []
  views = inputs.read_views([str(tmp_path / n) for n in ("small.png", "wide.png")], "2view", 49, warn=warns.append)
  assert len(views) == 2 and views.source == "images" and len(warns) == 2
  assert "small.png" in warns[0] and "64x48 pixels" in warns[0] and "560x560" in warns[0] and "11.7x" in warns[0]
  assert "wide.png" in warns[1] and "1200x300" in warns[1] and "aspect ratio 4.0:1" in warns[1] and "25%" in warns[1]
  warns.clear()
  inputs.read_views(str(tmp_path / "ok.png"), "1view", 49, warn=warns.append)
  assert warns == []


def _video(path, n, h=32, w=48):
  """n frames, frame i a flat grey of 10 + 20 i (so the order can be read back through compression)."""
  frames = np.stack([np.full((h, w, 3), 10 + 20 * i, np.uint8) for i in range(n)])
  return ex.write_video(str(path), frames, fps=8)


def test_allview_video_first_frames_and_count_errors(tmp_path):
  video = _video(tmp_path / "garden.mp4", 11)
  warns = []
  views = inputs.read_views(video, "allview", 9, warn=warns.append)
  assert views.source == "video" and len(views) == 9 and views.frames[0].shape == (32, 48, 3)
  np.testing.assert_allclose([f.mean() for f in views.frames], 10 + 20 * np.arange(9), atol=3)   # the first 9
  assert len(warns) == 2 and all("\n" not in w for w in warns)     # one size note for the video, not per frame
  assert "has 11 frames; using the first 9, as infer.py does" in warns[0]
  assert "garden.mp4" in warns[1] and "48x32 pixels" in warns[1]
  with pytest.raises(Gen3RInputError, match=r"video .*garden.mp4' has 11 frames but task allview needs "
                                            r"num_frames=13 .* --config.num_frames=9 "):
    inputs.read_views(video, "allview", 13, warn=None)
  with pytest.raises(Gen3RInputError, match="video .*garden.mp4'.* taken for task allview only"):
    inputs.read_views(video, "1view", 9, warn=None)
  (tmp_path / "junk.mp4").write_bytes(b"not a video")
  with pytest.raises(Gen3RInputError, match="cannot read video .*junk.mp4"):
    inputs.read_views(str(tmp_path / "junk.mp4"), "allview", 5, warn=None)


def test_allview_folder_sorted_by_name(tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for i in range(1, 12):                    # f1.png .. f11.png: name order f1, f10, f11, f2, ... (as infer.py)
    Image.fromarray(np.full((560, 560, 3), i, np.uint8)).save(folder / f"f{i}.png")
  (folder / "notes.txt").write_text("not a frame")
  warns = []
  views = inputs.read_views(str(folder), "allview", 9, warn=warns.append)
  assert views.source == "folder" and [os.path.basename(n) for n in views.names] == [
      "f1.png", "f10.png", "f11.png", "f2.png", "f3.png", "f4.png", "f5.png", "f6.png", "f7.png"]
  assert [int(f[0, 0, 0]) for f in views.frames] == [1, 10, 11, 2, 3, 4, 5, 6, 7]
  assert len(warns) == 2 and "'f10.png' comes before 'f2.png'" in warns[0] and "has 11 frames" in warns[1]
  with pytest.raises(Gen3RInputError, match=r"folder .* has 11 frames but task allview needs num_frames=13"):
    inputs.read_views(str(folder), "allview", 13, warn=None)
  with pytest.raises(Gen3RInputError, match="folder .* taken for task allview only"):
    inputs.read_views(str(folder), "2view", 9, warn=None)
  (tmp_path / "empty").mkdir()
  with pytest.raises(Gen3RInputError, match="holds no frames"):
    inputs.read_views(str(tmp_path / "empty"), "allview", 5, warn=None)


def test_output_dir_is_created_and_probed(tmp_path, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  with pytest.raises(Gen3RInputError, match=r"cannot create output directory .*a_file/out/deeper.*is a file"):
    ex.prepare_output_dir(str(blocker / "out" / "deeper"))
  with pytest.raises(Gen3RInputError, match="is an existing file, not a directory"):
    ex.prepare_output_dir(str(blocker))
  out = tmp_path / "new" / "out"
  warns = []
  assert ex.prepare_output_dir(str(out), expected_bytes=10, warn=warns.append) == str(out)
  assert out.is_dir() and os.listdir(out) == [] and warns == []          # the probe file is gone
  (out / "rgb.mp4").write_bytes(b"old")
  (out / (ex.STAGING_PREFIX + "123-abc")).mkdir()
  ex.prepare_output_dir(str(out), expected_bytes=2**62, warn=warns.append)
  assert len(warns) == 3 and "previous run (rgb.mp4)" in warns[0] and "interrupted export" in warns[1]
  assert "MiB free" in warns[2]
  with pytest.raises(Gen3RInputError, match=r"already holds outputs of a previous run \(rgb.mp4\)"):
    ex.prepare_output_dir(str(out), overwrite=False)

  def no_write(*a, **k):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(ex.tempfile, "mkstemp", no_write)
  with pytest.raises(Gen3RInputError, match="is not writable \\(Permission denied\\)"):
    ex.prepare_output_dir(str(out))


def test_prompt_file_and_prompt_longer_than_512_tokens(tmp_path):
  from gen3r_jax.apps.sample import check_prompt_length, read_prompt
  f = tmp_path / "prompts.txt"
  f.write_text("A tranquil garden.\nsecond line\n")
  warns, logs = [], []
  assert read_prompt(str(f), log=logs.append, warn=warns.append) == "A tranquil garden."
  assert len(warns) == 1 and "only the first is the prompt" in warns[0] and "prompts.txt" in logs[0]
  assert read_prompt("a plain prompt", warn=warns.append) == "a plain prompt" and len(warns) == 1
  ckpt = os.path.join(fixture_path("pipeline_tiny"), "checkpoint")              # its SentencePiece tokenizer
  counts = check_prompt_length(ckpt, {"prompt": "a red chair"}, warn=warns.append)
  assert 1 < counts["prompt"] < 20 and len(warns) == 1
  counts = check_prompt_length(ckpt, {"prompt": "the palace of knossos " * 200}, warn=warns.append)
  assert counts["prompt"] > 512 and len(warns) == 2
  assert f"prompt is {counts['prompt']} tokens long" in warns[1] and f"last {counts['prompt'] - 512} tokens" in warns[1]


# ---------------------------------------------------------------------------- the config path, models stubbed
def _stub_models(monkeypatch, calls):
  """No bundle check, no weights, no compile: ``generate`` records what it was given and returns tiny outputs."""
  import gen3r_jax.apps.bundle as bundle
  import gen3r_jax.apps.sample as sample
  import gen3r_jax.sampling.pipeline as pipeline
  for mod in (bundle, sample):   # the module that defines them and the one that calls them
    monkeypatch.setattr(mod, "check_bundle", lambda d: None)
    monkeypatch.setattr(mod, "load_bundle", lambda *a, **k: object())

  def generate(b, images, prompt, opts, **kw):
    calls.append(dict(images=images, prompt=prompt, opts=opts))
    f = opts.num_frames
    rng = np.random.default_rng(0)
    c2w = np.tile(np.eye(4), (f, 1, 1))
    return dict(rgb=rng.random((f, 16, 16, 3), np.float32), depth=1 + rng.random((f, 16, 16, 1), np.float32),
                pcds=rng.random((f, 16, 16, 3), np.float32), masks=np.ones((f, 16, 16), bool), c2w=c2w,
                intrinsics=np.tile(np.array([[8.0, 0, 8], [0, 8, 8], [0, 0, 1]]), (f, 1, 1)),
                depth_conf=np.ones((f, 16, 16), np.float32),
                latents=np.zeros((1, 2, 2, 4, 16), np.float32), timings={}, stats={"peak_bytes_in_use": None},
                cache={"kind": "none", "full_steps": opts.num_steps, "cached_steps": 0, "cached": []})
  monkeypatch.setattr(pipeline, "generate", generate)
  monkeypatch.setattr(sample, "generate", generate)


def _config(tmp_path, **kw):
  import sys
  from configs import sample as sample_config
  c = sample_config.get_config()
  c.checkpoint, c.out, c.prompt = str(tmp_path / "ckpt"), str(tmp_path / "out"), "x"
  c.num_frames, c.progress = 5, False
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_allview_video_and_2view_cameras_json_through_the_config(tmp_path, monkeypatch):
  from gen3r_jax.apps.sample import sample_from_config
  calls, warns = [], []
  _stub_models(monkeypatch, calls)
  prompt = tmp_path / "prompts.txt"
  prompt.write_text("A tranquil garden with a classical building.\n")
  video = _video(tmp_path / "garden.mp4", 7, h=560, w=560)
  cfg = _config(tmp_path, task="allview", images=video, prompt=str(prompt))
  files = sample_from_config(cfg, log=lambda s: None, warn=warns.append)
  got = calls[-1]
  assert got["images"].shape == (5, 560, 560, 3) and got["prompt"] == "A tranquil garden with a classical building."
  assert got["opts"].cameras == "free"              # allview: no camera map, no VGGT estimate (infer.py)
  assert warns == [f"video {video!r} has 7 frames; using the first 5, as infer.py does (trim the video, or extract "
                   "the frames you want into a folder)."]
  assert {"latents.npz", "rgb.mp4", "prompt.txt", "cameras.json"} <= set(files)
  assert sorted(os.listdir(cfg.out)) == sorted(files)          # no staging or probe files left
  assert json.load(open(files["cameras.json"]))["meta"]["views"] == "video"

  # 2view with a cameras file (as the official bedroom example), into the same folder: replaced, with a warning
  cams = {"extrinsics": np.tile(np.eye(4), (5, 1, 1)).tolist(),
          "intrinsics": np.tile([[480.0, 0, 280], [0, 480, 280], [0, 0, 1]], (5, 1, 1)).tolist()}
  (tmp_path / "cameras.json").write_text(json.dumps(cams))
  Image.fromarray(np.zeros((560, 560, 3), np.uint8)).save(tmp_path / "first.png")
  Image.fromarray(np.zeros((560, 560, 3), np.uint8)).save(tmp_path / "last.png")
  warns.clear()
  cfg = _config(tmp_path, task="2view", images=f"{tmp_path}/first.png,{tmp_path}/last.png",
                cameras=str(tmp_path / "cameras.json"))
  sample_from_config(cfg, log=lambda s: None, warn=warns.append)
  assert calls[-1]["images"].shape == (2, 560, 560, 3) and calls[-1]["opts"].cameras.endswith("cameras.json")
  assert len(warns) == 1 and "already holds outputs of a previous run" in warns[0]
  cams["extrinsics"][3][0][0] = 1.01                  # a scaled rotation: refused before any compute
  (tmp_path / "cameras.json").write_text(json.dumps(cams))
  n = len(calls)
  with pytest.raises(Gen3RInputError, match="'extrinsics' frame 3 is not a rotation"):
    sample_from_config(cfg, log=lambda s: None, warn=warns.append)
  assert len(calls) == n


def test_unwritable_output_stops_before_compute(tmp_path, monkeypatch):
  from gen3r_jax.apps.sample import sample_from_config
  calls = []
  _stub_models(monkeypatch, calls)
  (tmp_path / "a_file").write_text("x")
  Image.fromarray(np.zeros((560, 560, 3), np.uint8)).save(tmp_path / "first.png")
  cfg = _config(tmp_path, images=str(tmp_path / "first.png"), out=str(tmp_path / "a_file" / "out"))
  with pytest.raises(Gen3RInputError, match="a_file' is a file, not a directory") as e:
    sample_from_config(cfg, log=lambda s: None, warn=lambda s: None)
  assert calls == [] and "\n" not in str(e.value)
