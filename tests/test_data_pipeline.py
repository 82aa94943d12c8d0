"""TFDS array_record builder (no TensorFlow) and the grain pipeline: batches, resume, shards, mixing."""

import itertools

import numpy as np
import pytest

from gen3r_jax.data import layout, synthetic, tfds_builder
from gen3r_jax.data.clips import official_clip_config
from gen3r_jax.data.pipeline import PipelineConfig, make_pipeline, sources_from_records, sources_from_root
from gen3r_jax.errors import Gen3RInputError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("data") / "root"
  synthetic.generate(root, 2, frames=6, height=24, width=32, datasets=("re10k", "waymo"), test_scenes=1, seed=2)
  return root, tfds_builder.build(root, root.parent / "records")


def _cfg(stage=2, **kw):
  clip = official_clip_config(stage, num_frames=3, height=16, width=16)
  return PipelineConfig(**{**dict(stage=stage, batch_size=2, clip=clip, process_index=0, process_count=1,
                                  read_threads=1, prefetch=1), **kw})


def _take(pipeline_or_it, n):
  return list(itertools.islice(iter(pipeline_or_it), n))


def _same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_tfds_records_equal_the_folder(built):
  root, ds_dir = built
  assert ds_dir == tfds_builder.dataset_dir(root.parent / "records")
  assert tfds_builder.splits(ds_dir) == ["test", "train_re10k", "train_waymo"]
  src = tfds_builder.RecordSource(ds_dir, "train_waymo")
  assert len(src) == 2 and src.index[1] == dict(dataset="waymo", num_images=6, num_cameras=6)
  for i, ref in enumerate(layout.dataset_refs(root)["waymo"]):
    want, got = layout.load_scene(ref, root), src[i]
    assert got["scene"] == want["scene"] and got["dataset"] == "waymo"
    for k in ("frame_index", "intrinsics", "c2w", "image_names", "captions", "images"):
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert got["c2w"].dtype == np.float64
  with pytest.raises(Gen3RInputError, match="split 'train' not in"):
    tfds_builder.RecordSource(ds_dir, "train")


def test_stage2_batches(built):
  root, ds_dir = built
  p = make_pipeline(sources_from_records(ds_dir, 2), _cfg())
  assert p.names == ["re10k", "waymo"] and p.weights == [1.0, 0.5] and p.sizes == [2, 2]
  b = _take(p, 1)[0]
  assert b["frames"].shape == (2, 3, 16, 16, 3) and b["frames"].dtype == np.float32
  assert 0 <= b["frames"].min() and b["frames"].max() <= 1 and b["frames"].std() > 0.05
  assert b["c2ws"].shape == (2, 3, 4, 4) and b["Ks"].shape == (2, 3, 3, 3)
  np.testing.assert_allclose(b["c2ws"][:, 0], np.tile(np.eye(4), (2, 1, 1)))
  # 32x24 -> r = 16/24, resized 21x16, crop 2 px left: cx = 16·r - 2 (int(21.33) = 21, same as round).
  np.testing.assert_allclose(b["Ks"][0, 0, 0, 2], 16 * 16 / 24 - 2, rtol=1e-6)
  assert b["text"].dtype == object and all(isinstance(t, str) and t for t in b["text"])
  assert b["dataset_idx"].dtype == np.int32 and list(b["dataset_name"]) == [p.names[i] for i in b["dataset_idx"]]
  # The same pipeline straight from the folder layout gives the same batches.
  _same(b, _take(make_pipeline(sources_from_root(root, 2), _cfg()), 1)[0])


def test_stage1_batches_and_epochs(built):
  root, ds_dir = built
  p = make_pipeline(sources_from_records(ds_dir, 1), _cfg(1, num_epochs=1, batch_size=1))
  batches = _take(p, 10)
  assert len(batches) == 4 and list(batches[0]) == ["frames"]  # 4 train scenes, one epoch
  assert batches[0]["frames"].shape == (1, 3, 16, 16, 3)
  folder = _take(make_pipeline(sources_from_root(root, 1), _cfg(1, num_epochs=1, batch_size=1)), 10)
  for a, b in zip(batches, folder):
    _same(a, b)


def test_resume_from_state_and_seed(built):
  _, ds_dir = built
  make = lambda seed=42: make_pipeline(sources_from_records(ds_dir, 2), _cfg(seed=seed))
  it = iter(make())
  _take(it, 2)
  state = it.get_state()
  want = _take(it, 2)
  it2 = iter(make())
  it2.set_state(state)
  for a, b in zip(want, _take(it2, 2)):
    _same(a, b)
  first = _take(make(), 3)
  for a, b in zip(first, _take(make(), 3)):
    _same(a, b)
  other = _take(make(seed=7), 3)
  assert any(not np.array_equal(a["frames"], b["frames"]) for a, b in zip(first, other))


def test_process_shards_partition_the_stream(built):
  _, ds_dir = built
  full = _take(make_pipeline(sources_from_records(ds_dir, 2), _cfg(batch_size=1)), 6)
  for pi in (0, 1):
    part = _take(make_pipeline(sources_from_records(ds_dir, 2), _cfg(batch_size=1, process_index=pi,
                                                                        process_count=2)), 3)
    for k, b in enumerate(part):
      _same(b, full[2 * k + pi])


def test_weighted_mixing(built):
  _, ds_dir = built
  cfg = _cfg(batch_size=6, clip=official_clip_config(2, num_frames=1, height=8, width=8))
  idx = np.concatenate([b["dataset_idx"] for b in _take(make_pipeline(sources_from_records(ds_dir, 2), cfg), 2)])
  assert np.bincount(idx).tolist() == [8, 4]  # weights 1.0 (re10k) : 0.5 (waymo)
  only = make_pipeline(sources_from_records(ds_dir, 2), _cfg(weights={"waymo": 0.0}))
  assert set(_take(only, 1)[0]["dataset_name"]) == {"re10k"}
  with pytest.raises(Gen3RInputError, match="unknown datasets"):
    make_pipeline(sources_from_records(ds_dir, 2), _cfg(weights={"kitti": 1.0}))


def test_root_only_scenes_and_test_split(tmp_path):
  root = synthetic.generate(tmp_path / "root", 2, frames=5, height=24, width=32, datasets=("re10k", "waymo"),
                            test_scenes=1, seed=4)
  # A root list with a scene no dataset list holds (images only, as stage 1 reads it) gets its own split.
  extra = tmp_path / "extra"
  synthetic.generate(extra, 1, frames=4, height=24, width=32, datasets=("solo",), test_scenes=0, seed=5)
  with open(root / "train_videos_dirs.txt", "a") as f:
    f.write(f"{extra / 'solo' / 'scene_0000' / 'images'}\n")
  for kind in ("cameras_paths", "captions_paths"):
    (root / f"train_{kind}.txt").unlink()
  ds_dir = tfds_builder.build(root, tmp_path / "records")
  assert "train_root" in tfds_builder.splits(ds_dir)
  rec = tfds_builder.RecordSource(ds_dir, "train_root")[0]
  assert rec["c2w"].shape == (0, 4, 4) and len(rec["images"]) == 4
  stage1 = sources_from_records(ds_dir, 1)
  assert len(stage1["all"]) == 5
  test = make_pipeline(sources_from_records(ds_dir, 2, split="test"), _cfg(clip=official_clip_config(
      2, "val", num_frames=3, height=16, width=16)))
  b = _take(test, 1)[0]
  assert b["frames"].shape == (2, 3, 16, 16, 3)
