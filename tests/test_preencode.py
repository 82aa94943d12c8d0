"""Offline pre-encoding (gen3r_jax.training.preencode, launch/preencode.py; read back by gen3r_jax.data.preencoded)
on random tiny models and synthetic 560x560 scenes: two processes write the records (the first leaves the output
unfinished, a rerun skips finished shards), the stage-2 pipeline reads them back, the stored arrays equal a direct
encode of the same clip through gen3r_jax.training.stage2, and bad input fails with a message before anything is
compiled.

1-frame clips keep this fast (the three conditions then share one control video; the masking of longer clips is
checked on its own, exactly, through an identity posterior)."""

import dataclasses
import itertools
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.data import preencoded as R         # the on-disk format and reader
from gen3r_jax.data import synthetic
from gen3r_jax.data.clips import relative_poses, resize_crop
from gen3r_jax.data.layout import decode_image
from gen3r_jax.data.pipeline import PipelineConfig, make_pipeline, sources_from_preencoded, sources_from_root
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.wan_vae.vae import DiagonalGaussian
from gen3r_jax.training import preencode as P      # the writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  from gen3r_jax.apps.demo import ensure_demo_bundle
  base = tmp_path_factory.mktemp("preencode")
  root = base / "root"
  synthetic.generate(root, 1, frames=2, height=560, width=560, datasets=("re10k", "waymo"), test_scenes=0, seed=3)
  bundle = ensure_demo_bundle(str(base / "demo"), log=lambda *a: None)
  cfg = P.PreencodeConfig(source=str(root), bundle=bundle, out=str(base / "out"), num_frames=1,
                          compute_dtype="float32", shard_size=1, process_count=2)
  logs = {}
  for name, pi in (("first", 0), ("second", 1), ("rerun", 0)):
    lines = []
    P.preencode(dataclasses.replace(cfg, process_index=pi), log=lines.append)
    logs[name] = lines
    if name == "first":
      with pytest.raises(Gen3RInputError, match="is unfinished; rerun launch/preencode.py") as e:
        R.read_metadata(cfg.out)
      logs["unfinished"] = str(e.value)
  return cfg, logs


def test_two_processes_write_and_a_rerun_resumes(run):
  cfg, logs = run
  assert "2 shards, 2 clips; process 0/2: 1 shards (1 clips) to encode" in logs["first"][0]
  assert logs["first"][-1].startswith("[preencode] this process is done")
  assert logs["second"][-1] == f"[preencode] complete: {cfg.out}"
  assert "0 shards (0 clips) to encode" in logs["rerun"][0] and len(logs["rerun"]) == 2
  meta = R.read_metadata(cfg.out)
  s = meta["settings"]
  assert (s["num_frames"], s["size"], s["dtype"], s["strides"], s["start"], s["pad"]) == (1, 560, "bfloat16", [1],
                                                                                          None, "random")
  assert sorted(meta["splits"]) == ["train_re10k", "train_waymo"]
  clip = meta["splits"]["train_re10k"]["clips"][0]
  assert clip["scene"] == "re10k/scene_0000" and clip["clip"] == 0 and len(clip["frame_ids"]) == 1
  assert meta["empty_context"].dtype == ml_dtypes.bfloat16 and meta["empty_context"].shape == (512, 32)
  with pytest.raises(Gen3RInputError, match=r"different settings \(clips_per_scene differ\)"):
    P.preencode(dataclasses.replace(cfg, clips_per_scene=2), log=lambda *a: None)


def test_pipeline_reads_the_stage2_keys(run):
  cfg, _ = run
  pc = PipelineConfig(stage=2, batch_size=2, process_index=0, process_count=1, read_threads=1, prefetch=1)
  p = make_pipeline(sources_from_preencoded(cfg.out), pc)
  assert p.names == ["re10k", "waymo"] and p.sizes == [1, 1] and p.weights == [1.0, 0.5]
  it = iter(p)
  b = next(it)
  assert set(b) == set(R.BATCH_KEYS)
  for k in R.POSTERIOR_KEYS:
    assert b[k].shape == (2, 1, 70, 70, 16) and b[k].dtype == ml_dtypes.bfloat16, k
  assert b["context"].shape == (2, 512, 32) and b["context"].dtype == ml_dtypes.bfloat16
  assert b["clip_fea"].shape == (2, 257, 32) and b["clip_fea"].dtype == ml_dtypes.bfloat16
  assert b["c2ws"].shape == (2, 1, 4, 4) and b["Ks"].shape == (2, 1, 3, 3) and b["Ks"].dtype == np.float32
  assert b["dataset_idx"].dtype == np.int32 and list(b["dataset_name"]) == [p.names[i] for i in b["dataset_idx"]]
  assert b["text"].dtype == object and all(isinstance(t, str) and t for t in b["text"])
  # the shared machinery: a resumed iterator continues with the same batches
  state = it.get_state()
  want = [next(it) for _ in range(2)]
  it2 = iter(p)
  it2.set_state(state)
  for a, c in zip(want, [next(it2) for _ in range(2)]):
    for k in a:
      np.testing.assert_array_equal(a[k], c[k], err_msg=k)


def test_pipeline_bad_input(run, tmp_path):
  cfg, _ = run
  pre = sources_from_preencoded(cfg.out)
  pc = PipelineConfig(stage=1, process_index=0, process_count=1)
  with pytest.raises(Gen3RInputError, match="pre-encoded clips feed stage 2 only"):
    make_pipeline(pre, pc)
  mixed = {"re10k": pre["re10k"], "scenes": sources_from_root(cfg.source, 2)["waymo"]}
  with pytest.raises(Gen3RInputError, match="mix of pre-encoded and scene sources"):
    make_pipeline(mixed, dataclasses.replace(pc, stage=2))
  with pytest.raises(Gen3RInputError, match="holds no pre-encoding"):
    sources_from_preencoded(tmp_path)


def _close_in_bf16(stored, direct, what):
  """``stored`` (bfloat16) is ``direct`` (float32, another compiled program) rounded: equal almost everywhere,
  at most one bfloat16 step apart where the float32 values straddle a rounding boundary."""
  got = np.asarray(stored, np.float32)
  want = R.storage_round(direct, "bfloat16")
  step = np.abs(want) * 2.0 ** -7 + 1e-30
  assert (np.abs(got - want) <= step * 1.01).all(), what
  assert np.mean(got != want) < 1e-3, what


def test_records_equal_a_direct_encode(run):
  from gen3r_jax.apps.bundle import load_bundle
  from gen3r_jax.training import stage2 as S
  cfg, _ = run
  src = sources_from_preencoded(cfg.out)["re10k"]
  ex = src[0]
  scene = sources_from_root(cfg.source, 2)["re10k"][0]
  ids = ex["frame_ids"]
  assert ex["scene"] == scene["scene"] and ex["text"] and ex["clip_index"] == 0
  np.testing.assert_allclose(ex["c2ws"], relative_poses(scene["c2w"][ids]), atol=1e-6)
  images = np.stack([decode_image(scene["images"][int(i)]) for i in np.asarray(scene["frame_index"])[ids]])
  frames = jnp.asarray(resize_crop(images, 560, 560))[None]                   # [1, 1, 560, 560, 3]
  b = load_bundle(cfg.bundle, components=P.NEEDED)
  frozen = S.Stage2Frozen(b.vggt, b.geo_adapter, b.vae, text_encoder=b.text_encoder, clip=b.clip)
  # the keys of stage2.encode_posteriors; with one frame every control video is the clip itself
  parts = [f"{n}_{p}" for n in ("wan", "geo") for p in ("mean", "logvar")]
  assert set(R.POSTERIOR_KEYS) == {f"{c}{q}" for c in ["", *(f"ctrl_{m}_" for m in S.PARTIAL_MODES)] for q in parts}
  wan, geo = nnx.jit(S.posterior_params)(frozen, frames)
  for k in R.POSTERIOR_KEYS:
    d = DiagonalGaussian(wan if "wan" in k else geo)
    _close_in_bf16(ex[k], np.asarray(d.mean if k.endswith("mean") else d.logvar)[0], k)
  tok = b.tokenizer([ex["text"]], max_length=512)
  ctx = np.asarray(nnx.jit(S.text_context)(frozen, tok["input_ids"], tok["attention_mask"]))[0]
  n = int(tok["attention_mask"].sum())
  _close_in_bf16(ex["context"], ctx, "context")
  rows = np.abs(np.asarray(ex["context"], np.float32)).sum(1)
  assert (rows[:n] > 0).all() and not rows[n:].any()
  _close_in_bf16(ex["clip_fea"], np.asarray(nnx.jit(S.clip_features)(frozen, frames))[0], "clip_fea")
  empty = np.asarray(S.empty_caption_context(b.tokenizer, b.text_encoder, 512))
  _close_in_bf16(R.read_metadata(cfg.out)["empty_context"], empty, "empty_context")


def test_condition_masks_match_the_stage2_control_video():
  """5-frame clips: each stored condition encodes the control video of stage 2's mode (here through an identity
  posterior, mean = the masked frames, so the check is exact); the clean clip is the ``all`` mode."""
  from gen3r_jax.training import stage2 as S
  frames = np.random.RandomState(0).rand(3, 5, 8, 8, 3).astype(np.float32)
  identity = lambda x: DiagonalGaussian(jnp.concatenate([x, -x], axis=-1))  # noqa: E731
  out = P.encode_posteriors(identity, (), frames, "wan", batch=2)
  assert set(out) == {k for k in R.POSTERIOR_KEYS if "wan" in k}
  for prefix, mode in (("", "all"), ("ctrl_first_", "first"), ("ctrl_first_last_", "first_last")):
    ctrl = np.asarray(S.control_frames(jnp.asarray(frames), jnp.full((3,), S.MODES.index(mode))))
    np.testing.assert_array_equal(out[f"{prefix}wan_mean"], ctrl, err_msg=prefix)
    np.testing.assert_array_equal(out[f"{prefix}wan_logvar"], -ctrl, err_msg=prefix)
  assert not np.array_equal(out["ctrl_first_wan_mean"], out["ctrl_first_last_wan_mean"])
  # one frame: "first" and "first and last" are the clip itself (encoded once)
  one = P.encode_posteriors(identity, (), frames[:, :1], "wan", batch=2)
  assert one["ctrl_first_last_wan_mean"] is one["wan_mean"] and one["ctrl_first_wan_mean"] is one["wan_mean"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_storage_round_trip(dtype):
  x = np.random.RandomState(1).randn(3, 7).astype(np.float32) * 30
  s = R.to_storage(x, dtype)
  assert s.dtype == {"bfloat16": np.uint16, "float16": np.float16, "float32": np.float32}[dtype]
  back = R.from_storage(s, dtype)
  np.testing.assert_array_equal(np.asarray(back, np.float32), R.storage_round(x, dtype))
  np.testing.assert_allclose(np.asarray(back, np.float32), x, rtol={"bfloat16": 2 ** -8, "float16": 2 ** -11,
                                                                    "float32": 0}[dtype])


def test_plan_is_seeded_per_scene_and_clip():
  cfg = P.PreencodeConfig(source="s", bundle="b", out="o", clips_per_scene=3, shard_size=4, process_count=2)
  shards = P.plan_shards({"waymo": 2, "re10k": 1}, cfg)
  assert [(s.split, s.index, s.count, len(s.items)) for s in shards] == [
      ("train_re10k", 0, 1, 3), ("train_waymo", 0, 2, 4), ("train_waymo", 1, 2, 2)]
  assert shards[1].filename == "gen3r_preencoded-train_waymo.array_record-00000-of-00002"
  draws = [P.clip_rng(42, d, s, c).integers(1 << 30) for d, s, c in itertools.product(("a", "b"), (0, 1), (0, 1))]
  assert len(set(draws)) == len(draws)
  assert P.clip_rng(42, "a", 1, 0).integers(1 << 30) == draws[2]


@pytest.fixture(scope="module")
def tiny_bundle(run):
  return run[0].bundle, run[0].source


@pytest.mark.parametrize("change, message", [
    (dict(source="EMPTY"), r"is not a dataset: no <dataset>/train_videos_dirs.txt"),
    (dict(bundle="PARTIAL"), r"is missing clip_image_encoder; pre-encoding needs"),
    (dict(num_frames=5, pad="error"), r"has 2 frames but a clip needs 5 \(pad='error'\)"),
    (dict(num_frames=4), r"num_frames must be 1 \+ 4k"),
    (dict(dtype="int8"), r"dtype 'int8' is not a storage dtype"),
    (dict(process_index=2, process_count=2), r"process_index 2 must be in \[0, process_count=2\)"),
    (dict(out="FULL"), r"is not empty and holds no preencode.json"),
])
def test_bad_input_is_a_clear_error(tmp_path, tiny_bundle, change, message):
  bundle, source = tiny_bundle
  (tmp_path / "empty").mkdir()
  (tmp_path / "partial").mkdir()
  for name in os.listdir(bundle):
    if name != "clip_image_encoder":
      os.symlink(os.path.join(bundle, name), tmp_path / "partial" / name)
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "notes.txt").write_text("mine")
  subst = {"EMPTY": str(tmp_path / "empty"), "PARTIAL": str(tmp_path / "partial"), "FULL": str(tmp_path / "full")}
  cfg = P.PreencodeConfig(source=source, bundle=bundle, out=str(tmp_path / "out"), num_frames=1)
  cfg = dataclasses.replace(cfg, **{k: subst.get(v, v) for k, v in change.items()})
  with pytest.raises(Gen3RInputError, match=message):
    P.preencode(cfg, log=lambda *a: None)
  assert not (tmp_path / "out").exists()


def test_launcher_bad_source_exits_2(tmp_path, tiny_bundle):
  bundle, _ = tiny_bundle
  env = dict(os.environ, GEN3R_JAX_CACHE="off", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "preencode.py"), "--source", str(tmp_path),
                      "--bundle", bundle, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 2, r.stderr
  assert "error: --source" in r.stderr and "is not a dataset" in r.stderr
