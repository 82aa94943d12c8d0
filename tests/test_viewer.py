"""The viewer's and the web app's library side, without a browser (tests/test_browser.py drives both in Chromium):
reading an output directory (and the one-line error for an incomplete one), the point selection behind the
viewer's toggles, the ``points.glb`` read back by an independent reader (trimesh), the progress mapping and the
app's config building."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from configs import demo_tiny, renamed
from gen3r_jax.apps import webapp
from gen3r_jax.apps.glb import OPENCV_TO_GLTF, point_cloud_glb, write_point_cloud_glb
from gen3r_jax.apps.outputs import load_output_dir, missing_files
from gen3r_jax.apps import viewer as viewer_mod
from gen3r_jax.apps.viewer import FRAME_MODES, PointSelector, Selection, scene_frame, up_direction, vertical_fov
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling.placement import STAGE_MESSAGES
from tests.helpers import write_synthetic_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synthetic") / "out")
  return out, write_synthetic_output(out, conf=True)


def test_load_output_dir_reads_every_array(synthetic):
  out, ref = synthetic
  scene = load_output_dir(out)
  assert scene.num_frames == 4 and (scene.height, scene.width) == (120, 160)
  assert scene.rgb.dtype == np.uint8 and scene.rgb.shape == ref["rgb"].shape
  assert np.abs(scene.rgb.astype(int) - ref["rgb"]).mean() < 6          # H.264 at crf 17
  np.testing.assert_array_equal(scene.points, ref["points"])
  np.testing.assert_array_equal(scene.masks, ref["masks"])
  np.testing.assert_allclose(scene.c2w, ref["c2w"], atol=1e-12)
  assert scene.confidence is not None and scene.confidence.shape == ref["depth"].shape
  assert scene.prompt == "a room" and scene.ply_path == os.path.join(out, "points.ply")


def test_incomplete_output_dir_is_one_line_error_and_exit_2(synthetic, tmp_path):
  out, _ = synthetic
  part = tmp_path / "partial"
  part.mkdir()
  (part / "rgb.mp4").write_bytes(open(os.path.join(out, "rgb.mp4"), "rb").read())
  assert missing_files(str(part)) == ["cameras.json", "depth.npz", "points.npz"]
  with pytest.raises(Gen3RInputError, match="cameras.json, depth.npz, points.npz missing"):
    load_output_dir(str(part))
  with pytest.raises(Gen3RInputError, match="not found"):
    load_output_dir(str(tmp_path / "nowhere"))
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for target in (str(part), str(tmp_path / "nowhere")):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "view.py"), target], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr


def test_damaged_output_file_is_one_line_error(synthetic, tmp_path):
  """A truncated depth.npz or points.npz (a full disk, a half-finished copy) is a one-line error, no traceback."""
  out, _ = synthetic
  for name in ("depth.npz", "points.npz"):
    bad = tmp_path / f"bad_{name.split('.')[0]}"
    shutil.copytree(out, bad)
    data = (bad / name).read_bytes()
    (bad / name).write_bytes(data[:len(data) // 2])
    with pytest.raises(Gen3RInputError, match="damaged") as e:
      load_output_dir(str(bad))
    assert "\n" not in str(e.value) and f"{name} is damaged" in str(e.value) and "re-run" in str(e.value)


def test_point_selection_follows_the_toggles(synthetic):
  out, ref = synthetic
  scene = load_output_dir(out)
  sel = PointSelector(scene, max_points=10**9)
  n = ref["masks"][0].size
  every = sel.select(Selection(frames=FRAME_MODES[0], depth_mask=False))
  assert every.size == ref["masks"].size                                  # every point finite
  masked = sel.select(Selection(frames=FRAME_MODES[0]))
  np.testing.assert_array_equal(masked, np.flatnonzero(ref["masks"]))
  only2 = sel.select(Selection(frame=2, frames=FRAME_MODES[2], depth_mask=False))
  np.testing.assert_array_equal(only2, np.arange(2 * n, 3 * n))
  upto1 = sel.select(Selection(frame=1, frames=FRAME_MODES[1], depth_mask=False))
  np.testing.assert_array_equal(upto1, np.arange(0, 2 * n))
  drop = sel.select(Selection(frames=FRAME_MODES[0], depth_mask=False, conf_mask=True, conf_drop_percent=40))
  assert abs(drop.size / every.size - 0.6) < 0.01                        # the lowest 40 % confidence dropped
  assert drop.min() >= int(0.4 * every.size) - 2                          # (confidence = pixel order here)
  capped = PointSelector(scene, max_points=1000)
  a = capped.select(Selection(frames=FRAME_MODES[0], depth_mask=False))
  b = capped.select(Selection(frames=FRAME_MODES[0], depth_mask=True))
  assert a.size == b.size == 1000 and np.all(np.diff(a) > 0)
  # the cap keeps the lowest random ranks: a point shown without the mask and kept by it stays shown
  kept = np.intersect1d(a, np.flatnonzero(ref["masks"]))
  assert np.isin(kept, b).all()


def test_scene_frame_and_camera_fov(synthetic):
  out, ref = synthetic
  scene = load_output_dir(out)
  centre, extent = scene_frame(scene)
  p = ref["points"][ref["masks"]]
  assert np.all(centre >= p.min(0)) and np.all(centre <= p.max(0)) and 0 < extent < 4 * np.ptp(p, 0).max()
  assert vertical_fov(ref["K"][0], 120) == pytest.approx(2 * np.arctan(60 / ref["K"][0, 1, 1]))


def test_viewer_up_is_the_first_cameras_up(synthetic):
  """docs/viewer.md: the first camera's up is the scene's up; OpenCV camera axes have y down, so up = -c2w[0][:3, 1].
  Checked on a camera rolled 90 degrees about its optical axis (its up is world +x, not the world's -y)."""
  out, _ = synthetic
  scene = load_output_dir(out)
  scene.c2w = scene.c2w.copy()
  scene.c2w[0, :3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]   # camera y (down) = world -x
  np.testing.assert_allclose(up_direction(scene), [1.0, 0.0, 0.0], atol=1e-12)
  seen = []

  class Stop(Exception):
    pass

  class Scene:
    def set_up_direction(self, direction):
      seen.append(np.asarray(direction, np.float64))
      raise Stop                                   # what the viewer hands viser; nothing more is built

  with pytest.raises(Stop):
    viewer_mod.Viewer(type("Server", (), {"scene": Scene()})(), scene)
  np.testing.assert_allclose(seen[0], [1.0, 0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(point_size=0.0), r"--point_size must be a positive number"),
    (dict(point_size=-0.01), r"--point_size must be a positive number .* got -0.01"),
    (dict(point_size=float("inf")), r"--point_size must be a positive number"),
    (dict(max_points=0), r"--max_points must be a positive integer .* got 0"),
    (dict(max_points=2.5), r"--max_points must be a positive integer"),
    (dict(fps=0.0), r"--fps must be a positive number"),
    (dict(fps=float("nan")), r"--fps must be a positive number"),
    (dict(port=70000), r"--port must be an integer in 0..65535"),
    (dict(host=""), r"--host must be an address"),
])
def test_view_options_are_checked_before_anything_starts(synthetic, monkeypatch, kwargs, message):
  out, _ = synthetic
  monkeypatch.setattr(viewer_mod, "load_output_dir", lambda *a: pytest.fail("read before the options were checked"))
  monkeypatch.setattr(viewer_mod, "require_viser", lambda: pytest.fail("a server was about to start"))
  with pytest.raises(Gen3RInputError, match=message):
    viewer_mod.serve(out, **kwargs)


def test_view_cli_bad_numbers_exit_2_without_a_server(synthetic):
  out, _ = synthetic
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for flag, name in (("--point_size=0", "--point_size"), ("--max_points=0", "--max_points"), ("--fps=-1", "--fps")):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "view.py"), out, flag], capture_output=True,
                       text=True, timeout=120, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {name} must be"), r.stderr
    assert "[view]" not in r.stdout and "Traceback" not in r.stderr


def test_glb_reads_back_with_trimesh(tmp_path):
  rng = np.random.default_rng(0)
  pts = rng.normal(size=(500, 3)).astype(np.float32)
  col = rng.integers(0, 256, (500, 3)).astype(np.uint8)
  centre = np.array([0.5, -1.0, 2.0])
  path = write_point_cloud_glb(str(tmp_path / "c.glb"), pts, col, centre=centre)
  assert open(path, "rb").read() == point_cloud_glb(pts, col, centre=centre)
  scene = trimesh.load(path)
  cloud = next(iter(scene.geometry.values()))
  assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == 500
  np.testing.assert_allclose(cloud.vertices, (pts - centre) @ OPENCV_TO_GLTF.T, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(cloud.colors)[:, :3], col)
  with pytest.raises(Gen3RInputError, match="finite"):
    point_cloud_glb(np.full((2, 3), np.nan), col[:2])


def test_run_progress_maps_stages_and_steps():
  seen = []
  prog = webapp.RunProgress(lambda f, s: seen.append((f, s)), loading=True)
  prog.log("[load] vggt: 2 MiB")                                           # other lines change nothing
  prog.log("[sample] loaded /x (1.0 s, dtype float32, placement resident)")
  for stage in ("text", "clip", "cameras", "vae_encode", "denoise", "vae_decode", "geometry_decode"):
    prog.log(f"[sample] {stage}: {STAGE_MESSAGES[stage]} …")             # as StageStats logs them
    if stage == "denoise":
      for k in range(1, 5):
        prog.on_step(k, 4)
    prog.log(f"[sample] {stage}: done in 0.1 s, weights on the device 1 MiB")
  fractions = [f for f, _ in seen]
  assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] < 1.0
  texts = [s for _, s in seen]
  assert texts[:2] == ["loading the models …", "encoding the prompt (umT5) …"]
  assert [t for t in texts if t.startswith("denoising step")][-1].startswith("denoising step 4/4")
  assert texts[-1] == "writing the outputs …" and len(seen) == 1 + 7 + 4 + 1
  assert len(prog.lines) == 2 + 14


def test_app_config_copies_uploads_and_takes_the_page_values(tmp_path):
  base = demo_tiny.get_config()
  app = webapp.WebApp(base, out_root=str(tmp_path / "runs"), log=lambda s: None)
  img = tmp_path / "my, image.PNG"                # a comma would split the sampler's image list
  img.write_bytes(b"png")
  cams = tmp_path / "path.json"
  cams.write_text("{}")
  out = app.new_run_dir()
  cfg = app.config(out=out, images=[str(img)], task="2view", prompt="p", cameras="zoom_in", cameras_file=str(cams),
                   num_frames=9, num_steps=3, guidance_scale=1.0, seed=7, scheduler="checkpoint")
  assert cfg.images == os.path.join(out, "inputs", "image00.png") and os.path.isfile(cfg.images)
  assert cfg.cameras == os.path.join(out, "inputs", "cameras.json")
  assert (cfg.task, cfg.num_frames, cfg.num_steps, cfg.seed, cfg.guidance_scale, cfg.scheduler) == (
      "2view", 9, 3, 7, 1.0, "")
  assert renamed.check_config(cfg, renamed.SAMPLE) is None                 # no old name added to the config
  assert base.task == "1view" and base.images == ""                       # the base config is left alone
  cfg = app.config(out=out, images=[], task="1view", prompt="p", cameras="arc_left", cameras_file=None,
                   num_frames=5, num_steps=2, guidance_scale=5.0, seed=0)
  assert cfg.images == "" and cfg.cameras == "arc_left"


def test_app_rejects_bad_input_before_any_model(tmp_path, monkeypatch):
  base = demo_tiny.get_config()
  base.checkpoint = str(tmp_path / "no_bundle")
  app = webapp.WebApp(base, out_root=str(tmp_path / "runs"), log=lambda s: None)
  with pytest.raises(Gen3RInputError, match="num_frames"):
    app.generate(images=[], task="1view", prompt="p", cameras="zoom_out", cameras_file=None, num_frames=6,
                 num_steps=2, guidance_scale=5.0, seed=0)
  assert app.bundle is None and os.listdir(tmp_path / "runs") == []       # no run folder left behind
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
  with pytest.raises(Gen3RInputError, match="hf:nobody/not-a-repo"):     # the hub path (apps.bundle), offline
    webapp.resolve_checkpoint("hf:nobody/not-a-repo", log=lambda s: None)
  with pytest.raises(Gen3RInputError, match="folder not found"):
    webapp.resolve_checkpoint(str(tmp_path / "missing"))


def test_app_cli_bad_flags_are_one_line_errors_before_serving(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1",
             HF_HUB_CACHE=str(tmp_path / "hub"), GEN3R_JAX_CACHE="off")
  for flag, says in ((f"--checkpoint={tmp_path / 'missing'}", "folder not found"),
                     ("--checkpoint=hf:nobody/not-a-repo", "not in the local hub cache"),
                     ("--dtype=float16", "--dtype 'float16'")):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "app.py"), flag, f"--out={tmp_path / 'runs'}"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
