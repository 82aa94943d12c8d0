"""The sampling pipeline on a tiny random bundle: same seed -> same outputs, the seed matters, models are released,
and every bad option fails before anything compiles. (Fixture parity of the whole pipeline runs in
tests/test_parity.py through gen3r_jax/testing/cases/pipeline.py.)"""

import dataclasses
import json

import numpy as np
import pytest

from gen3r_jax.apps import demo
from gen3r_jax.apps.bundle import load_bundle
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling.pipeline import SampleOptions, check_options, generate
from gen3r_jax.testing.cases import pipeline as case
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path

OPTS = SampleOptions(task="1view", cameras="zoom_out", num_frames=1, num_steps=2, seed=3, posterior="sample")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
  return demo.ensure_demo_bundle(str(tmp_path_factory.mktemp("demo")), log=lambda *a: None)


def test_same_seed_same_outputs_and_release(bundle_dir):
  bundle = load_bundle(bundle_dir)
  image = demo.example_image(0)[None].astype(np.float32) / 255.0
  a = generate(bundle, image, "a palace", OPTS, progress=False)
  b = generate(bundle, image, "a palace", OPTS, progress=False)
  for k in ("rgb", "depth", "points", "pcds", "masks", "extrinsics", "intrinsics", "latents"):
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert a["rgb"].shape == (1, 560, 560, 3) and a["depth"].shape == (1, 560, 560, 1)
  assert a["pcds"].shape == (1, 560, 560, 3) and a["masks"].shape == (1, 560, 560) and a["c2w"].shape == (1, 4, 4)
  assert np.isfinite(a["rgb"]).all() and 0 <= a["rgb"].min() and a["rgb"].max() <= 1

  c = generate(bundle, image, "a palace", dataclasses.replace(OPTS, seed=4), progress=False, release=True)
  assert np.abs(c["latents"] - a["latents"]).max() > 1e-3            # the seed drives the noise
  assert bundle.text_encoder is None and bundle.clip is None and bundle.transformer is None
  assert bundle.vae is not None and bundle.vggt is not None


@pytest.mark.parametrize("change, n_views, message", [
    (dict(task="2view"), 1, "task '2view' takes 2 conditioning images"),
    (dict(task="allview", num_frames=5), 2, "task 'allview' takes 5 conditioning images"),
    (dict(task="3view"), 1, "unknown task '3view'"),
    (dict(num_frames=6), 1, "num_frames must be 1 \\+ 4k"),
    (dict(size=512), 1, "size 512 is not supported"),
    (dict(cameras="spiral"), 1, "unknown camera trajectory 'spiral'"),
    (dict(cameras="missing.json"), 1, "cameras file 'missing.json' not found"),
    (dict(num_steps=0), 1, "num_steps must be a positive integer"),
    (dict(posterior="mean"), 1, "posterior must be one of"),
    (dict(scheduler="ddim"), 1, "unknown scheduler 'ddim'"),
])
def test_bad_options(change, n_views, message):
  with pytest.raises(Gen3RInputError, match=message):
    check_options(dataclasses.replace(OPTS, **change), n_views)


def test_malformed_cameras_json(tmp_path):
  bad = tmp_path / "cams.json"
  bad.write_text('{"extrinsics": [[1, 2]], ')
  with pytest.raises(Gen3RInputError, match="is not valid JSON"):
    check_options(dataclasses.replace(OPTS, cameras=str(bad)), 1)
  bad.write_text(json.dumps({"extrinsics": [np.eye(4).tolist()]}))
  with pytest.raises(Gen3RInputError, match="missing 'intrinsics'"):
    check_options(dataclasses.replace(OPTS, cameras=str(bad)), 1)


def test_parity_case_reads_task_and_configs_from_the_fixture():
  fx = Fixture.open(fixture_path("pipeline_tiny"))
  opts = case.options(fx)
  assert (opts.task, opts.cameras, opts.num_frames, opts.num_steps, opts.posterior) == (
      "1view", "zoom_out", 5, 4, "mode")
  ov = case.overrides(fx)
  assert set(ov) == {"text_encoder", "clip_image_encoder", "transformer", "wan_vae", "geo_adapter", "vggt"}
  assert "dpt_common" in ov["vggt"] and "dpt_heads" not in ov["vggt"]
  variant = Fixture(fx.path, {**fx.meta, "config": {**fx.config, "run": {**fx.config["run"], "task": "2view"}}})
  assert case.options(variant).task == "2view"


def test_two_view_and_all_view_tasks_run(bundle_dir):
  """2view (first + last frame) and allview (every frame) go through the whole pipeline with their own
  conditioning: allview has no camera input (zero Plücker latents), 2view does; outputs cover every frame."""
  bundle = load_bundle(bundle_dir)
  frames = 5
  img = demo.example_image(0).astype(np.float32) / 255.0
  views = {"2view": np.stack([img, img[:, ::-1]]), "allview": np.stack([np.roll(img, 8 * i, axis=1)
                                                                       for i in range(frames)])}
  outs = {}
  for task, images in views.items():
    opts = dataclasses.replace(OPTS, task=task, num_frames=frames, num_steps=1)
    outs[task] = generate(bundle, images, "a palace", opts, progress=False, record=True)
    o = outs[task]
    assert o["rgb"].shape == (frames, 560, 560, 3) and o["c2w"].shape == (frames, 4, 4), task
    assert np.isfinite(o["rgb"]).all() and np.isfinite(o["depth"]).all(), task
  cam_all = np.asarray(outs["allview"]["stages"]["camera_latents"])
  cam_two = np.asarray(outs["2view"]["stages"]["camera_latents"])
  assert np.all(cam_all == 0) and np.abs(cam_two).max() > 0
  ctrl_all = np.asarray(outs["allview"]["stages"]["control_latents"])
  ctrl_two = np.asarray(outs["2view"]["stages"]["control_latents"])
  assert ctrl_all.shape == ctrl_two.shape and not np.allclose(ctrl_all, ctrl_two)
