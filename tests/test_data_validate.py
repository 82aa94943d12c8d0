"""Scene validation when the pipeline is built (``PipelineConfig.validate`` / ``data.validate``): ``strict`` names
every bad scene in one error, ``skip`` drops them with a warning; validation reads headers only; a corrupt image
that gets past it is a one-line error naming the file and the scene; the training CLI exits 2."""

import itertools
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from gen3r_jax.data import layout, synthetic
from gen3r_jax.data.clips import official_clip_config
from gen3r_jax.data.pipeline import PipelineConfig, make_pipeline, sources_from_root
from gen3r_jax.errors import Gen3RInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def root(tmp_path):
  return synthetic.generate(tmp_path / "root", 3, frames=5, height=24, width=32, datasets=("re10k", "waymo"),
                            test_scenes=0, seed=3)


def _damage(root):
  """Four bad scenes of six, each in another way; one good scene per dataset is left. Returns the bad scenes'
  names and what their errors must say."""
  refs = layout.dataset_refs(root)
  (refs["re10k"][0].images_dir / "frame00002.png").write_bytes(b"")                   # empty image file
  meta = json.loads(refs["re10k"][1].cameras_path.read_text())
  meta["frames"][3]["w"] = 64                                                          # a later frame's size
  refs["re10k"][1].cameras_path.write_text(json.dumps(meta))
  refs["waymo"][0].cameras_path.write_text('{"frames": [')                              # transforms.json cut off
  (refs["waymo"][1].images_dir / "frame00004.png").unlink()                            # a listed frame missing
  return {"re10k/scene_0000": r"cannot read image \S*frame00002.png \(not an image PIL can identify",
          "re10k/scene_0001": r"frame 3 says w=64, h=24 but frame00003.png is 32x24",
          "waymo/scene_0000": r"cannot read camera file", "waymo/scene_0001": r"frame00004.png that are missing"}


def _config(stage=2, **kw):
  clip = official_clip_config(stage, num_frames=3, height=16, width=16)
  return PipelineConfig(**{**dict(stage=stage, batch_size=1, clip=clip, process_index=0, process_count=1,
                                  read_threads=1, prefetch=1), **kw})


def test_strict_lists_every_bad_scene_in_one_error(root):
  bad = _damage(root)
  with pytest.raises(Gen3RInputError) as e:
    make_pipeline(sources_from_root(root, 2), _config())
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("4 of 6 scenes cannot be used: [1] ")
  parts = msg.split("; [")
  for scene, why in bad.items():
    dataset = scene.split("/")[0]
    assert any(f"{scene} ({dataset}): " in part and re.search(why, part) for part in parts), (scene, msg)
  assert "data.validate='skip'" in msg
  # validate_images="first" reads one header per scene: the damage in later frames is left to the clips
  with pytest.raises(Gen3RInputError, match=r"^2 of 6 scenes .*\[1\] waymo/scene_0000 .*\[2\] waymo/scene_0001"):
    make_pipeline(sources_from_root(root, 2), _config(validate_images="first"))
  # stage 1 (the root lists, every image of a scene is read): the same four scenes
  with pytest.raises(Gen3RInputError, match=r"^4 of 6 scenes .*re10k/scene_0000 \(re10k\): cannot read image"):
    make_pipeline(sources_from_root(root, 1), _config(stage=1))


def test_skip_warns_with_count_and_names_and_trains_on_the_rest(root, caplog):
  bad = _damage(root)
  with caplog.at_level(logging.WARNING, logger="gen3r_jax.data"):
    p = make_pipeline(sources_from_root(root, 2), _config(validate="skip"))
  warning = [r.getMessage() for r in caplog.records if "data.validate='skip'" in r.getMessage()]
  assert len(warning) == 1 and "dropped 4 of 6 scenes" in warning[0], caplog.text
  assert all(s in warning[0] for s in bad)
  assert dict(zip(p.names, p.sizes)) == {"re10k": 1, "waymo": 1}
  assert sorted(b.scene for b in p.dropped) == sorted(bad)
  assert {str(b) for b in itertools.chain.from_iterable(x["dataset_name"] for x in itertools.islice(iter(p), 6))} \
      == {"re10k", "waymo"}


def test_skip_keeps_a_dataset_only_while_it_has_scenes(root):
  _damage(root)
  (layout.dataset_refs(root)["waymo"][2].images_dir / "frame00000.png").write_bytes(b"not a png")
  # waymo loses all three scenes: an error naming the dataset, not a silent empty mix
  with pytest.raises(Gen3RInputError, match=r"every scene of dataset\(s\) waymo is bad"):
    make_pipeline(sources_from_root(root, 2), _config(validate="skip"))


def test_validation_reads_headers_only_and_a_corrupt_image_names_file_and_scene(root, monkeypatch):
  ref = layout.dataset_refs(root)["re10k"][1]
  path = ref.images_dir / "frame00001.png"
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])             # the header is intact, the pixel data cut off
  # building the pipeline decodes no image (headers only): it succeeds with a decoder that always fails
  def no_decode(data):
    raise AssertionError("validation decoded an image")

  monkeypatch.setattr(layout, "decode_image", no_decode)
  p = make_pipeline(sources_from_root(root, 2), _config(clip=official_clip_config(2, num_frames=5, height=16,
                                                                                     width=16, start=0)))
  monkeypatch.undo()
  with pytest.raises(Gen3RInputError) as e:
    list(itertools.islice(iter(p), 12))              # 5-frame clips from frame 0: every scene within 12 clips
  msg = str(e.value)
  assert "\n" not in msg and "scene re10k/scene_0001 (re10k): cannot decode image" in msg, msg
  assert re.search(re.escape(str(path)) + r" \(OSError: image file is truncated", msg), msg


def test_train_cli_exits_2_listing_bad_scenes(root, tmp_path):
  bad = _damage(root)
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  p = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "train.py"), "--config",
                      os.path.join(ROOT, "configs", "cpu_debug.py"), "--workdir", str(tmp_path / "w"),
                      "--config.data.synthetic_scenes=0", f"--config.data.root={root}"],
                     env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
  errors = [l for l in p.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "4 of 6 scenes cannot be used" in errors[0], p.stderr[-2000:]
  assert all(s in errors[0] for s in bad)
  assert "Traceback" not in p.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_frames_of_one_scene_must_have_one_size(root):
  from PIL import Image
  ref = layout.dataset_refs(root)["waymo"][2]
  Image.new("RGB", (48, 36)).save(ref.images_dir / "frame00001.png")
  meta = json.loads(ref.cameras_path.read_text())
  meta["frames"][1].update(w=48, h=36)                 # consistent with its own transforms.json entry
  ref.cameras_path.write_text(json.dumps(meta))
  with pytest.raises(Gen3RInputError, match=r"^1 of 6 scenes .*waymo/scene_0002 \(waymo\): its frames have different "
                                            r"sizes 32x24, 48x36"):
    make_pipeline(sources_from_root(root, 2), _config())


def test_records_are_validated_by_their_index(tmp_path):
  from gen3r_jax.data import tfds_builder
  from gen3r_jax.data.pipeline import sources_from_records
  root = synthetic.generate(tmp_path / "root", 2, frames=3, height=24, width=32, datasets=("re10k",),
                            test_scenes=0, seed=4)
  ds = tfds_builder.build(root, tmp_path / "records")
  cfg = _config(clip=official_clip_config(2, num_frames=5, height=16, width=16, pad="error"))
  with pytest.raises(Gen3RInputError, match=r"2 of 2 scenes .*record 0 \(re10k\): has 3 frames but a clip needs 5"):
    make_pipeline(sources_from_records(ds, 2), cfg)
  assert np.isfinite(next(iter(make_pipeline(sources_from_records(ds, 2), _config())))["frames"]).all()
