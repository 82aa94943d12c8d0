"""Official layout reader: list files, transforms.json, weights, and every bad-input rule."""

import json
import shutil

import numpy as np
import pytest

from gen3r_jax.data import layout, synthetic
from gen3r_jax.data.clips import ClipConfig, cut_clip
from gen3r_jax.data.pipeline import PipelineConfig, check_sources, make_pipeline, sources_from_root
from gen3r_jax.errors import Gen3RInputError


@pytest.fixture()
def root(tmp_path):
  return synthetic.generate(tmp_path / "root", 2, frames=5, height=24, width=32, datasets=("re10k", "waymo"),
                            test_scenes=1, seed=1)


def _scene(root, ds="re10k", i=0):
  return layout.dataset_refs(root)[ds][i]


def _edit_transforms(ref, fn):
  meta = json.loads(ref.cameras_path.read_text())
  fn(meta)
  ref.cameras_path.write_text(json.dumps(meta))


def test_weights_and_aliases():
  assert layout.official_weight("mvimgnet") == 0.25 and layout.official_weight("waymo") == 0.5
  assert layout.official_weight("RealEstate10K") == 1.0 and layout.official_weight("KITTI360") == 0.5
  assert layout.official_weight("my_data", default=2.0) == 2.0
  assert sum(layout.OFFICIAL_WEIGHTS.values()) == 7.75


def test_list_files_relative_paths_and_blank_lines(root, tmp_path):
  lst = root / "re10k" / "train_videos_dirs.txt"
  lst.write_text("\nscene_0000/images\n\n  scene_0001/images  \n")  # relative to the list's folder
  for kind, rel in (("cameras_paths", "transforms.json"), ("captions_paths", "captions.txt")):
    (root / "re10k" / f"train_{kind}.txt").write_text(f"re10k/scene_0000/{rel}\nre10k/scene_0001/{rel}\n")
  refs = layout.dataset_refs(root)["re10k"]  # ... and relative to the root
  assert [r.images_dir for r in refs] == [root / "re10k" / "scene_0000" / "images",
                                          root / "re10k" / "scene_0001" / "images"]
  assert refs[1].cameras_path == root / "re10k" / "scene_0001" / "transforms.json"
  assert layout.root_refs(root, "test")[1].dataset == "waymo"


def test_unequal_list_files(root):
  f = root / "waymo" / "train_captions_paths.txt"
  f.write_text(f.read_text().splitlines()[0] + "\n")
  with pytest.raises(Gen3RInputError, match="unequal lengths"):
    layout.dataset_refs(root)
  (root / "waymo" / "train_cameras_paths.txt").unlink()
  with pytest.raises(Gen3RInputError, match="missing list file"):
    layout.dataset_refs(root)


def test_missing_frame(root):
  ref = _scene(root)
  (ref.images_dir / "frame00003.png").unlink()
  with pytest.raises(Gen3RInputError, match="frame00003.png.*missing from"):
    layout.load_scene(ref)


def test_unreadable_transforms(root):
  ref = _scene(root)
  ref.cameras_path.write_text("{not json")
  with pytest.raises(Gen3RInputError, match="cannot read camera file"):
    layout.load_scene(ref)
  # Found before training starts: building the pipeline reads every transforms.json.
  with pytest.raises(Gen3RInputError, match="cannot read camera file"):
    make_pipeline(sources_from_root(root, 2), PipelineConfig(stage=2, process_index=0, process_count=1))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["frames"][2].pop("fl_x"), "frame 2 lacks fl_x"),
    (lambda m: m["frames"][1].__setitem__("transform_matrix", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "shape"),
    (lambda m: m["frames"][0]["transform_matrix"].__setitem__(3, [0, 0, 1, 1]), "not an invertible rigid"),
    (lambda m: m["frames"][0].__setitem__("fl_y", "wide"), "non-numeric"),
    (lambda m: m.__setitem__("frames", []), "non-empty 'frames'"),
    (lambda m: m["frames"][4].__setitem__("w", 64), "says w=64.*32x24"),
])
def test_inconsistent_transforms(root, edit, match):
  ref = _scene(root)
  _edit_transforms(ref, edit)
  with pytest.raises(Gen3RInputError, match=match):
    layout.load_scene(ref)


def test_size_mismatch_found_when_the_pipeline_is_built(root):
  ref = _scene(root, "waymo", 1)
  _edit_transforms(ref, lambda m: m["frames"][0].__setitem__("h", 48))
  with pytest.raises(Gen3RInputError, match="frame 0 says w=32, h=48 but frame00000.png is 32x24"):
    make_pipeline(sources_from_root(root, 2), PipelineConfig(stage=2, process_index=0, process_count=1))
  # A later frame is caught when a clip uses it.
  ref = _scene(root, "re10k", 0)
  _edit_transforms(ref, lambda m: (m["frames"][0].__setitem__("h", 24), m["frames"][3].__setitem__("w", 40)))
  src = layout.FolderSource([ref], root)
  clip = ClipConfig(num_frames=5, height=16, width=16, start=0)
  with pytest.raises(Gen3RInputError, match="frame 3 says w=40"):
    cut_clip(src[0], np.random.default_rng(0), clip)


def test_empty_captions_and_missing_images_dir(root):
  ref = _scene(root)
  ref.captions_path.write_text("")
  with pytest.raises(Gen3RInputError, match="captions file .* is empty"):
    layout.load_scene(ref)
  shutil.rmtree(ref.images_dir)
  with pytest.raises(Gen3RInputError, match="images folder .* does not exist"):
    layout.load_scene(ref)


def test_too_few_frames_for_the_clip(root):
  srcs = sources_from_root(root, 2)
  with pytest.raises(Gen3RInputError, match="has 5 frames but a clip needs 9"):
    check_sources(srcs, ClipConfig(num_frames=9, pad="error"))
  check_sources(srcs, ClipConfig(num_frames=9))  # the official default pads instead


def test_scene_record_contents(root):
  ref = _scene(root, "waymo", 1)
  rec = layout.load_scene(ref, root)
  assert rec["scene"] == "waymo/scene_0001" and rec["dataset"] == "waymo"
  assert list(rec["image_names"]) == [f"frame{i:05d}.png" for i in range(5)]
  assert rec["intrinsics"].shape == (5, 6) and rec["c2w"].shape == (5, 4, 4)
  assert layout.decode_image(rec["images"][0]).shape == (24, 32, 3)
  intr, c2w, names = layout.read_transforms(ref.cameras_path)
  np.testing.assert_array_equal(rec["c2w"], c2w)
  assert len(rec["captions"]) == 2 and rec["captions"][0].endswith("\n")
