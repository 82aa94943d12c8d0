"""Optional offline pre-encoding for stage 2: fixed clips -> frozen-encoder outputs in a TFDS array_record dataset.

``python launch/preencode.py --source <root | array_record dir> --bundle <converted bundle> --out <dir>`` lets
stage 2 train without holding VGGT, the adapter, the Wan VAE, umT5 and CLIP. Data flow, per shard of clips:

```
source scenes ─► plan: clip c of scene s of dataset d, rng = (seed, crc32(d), s, c) ─► shards [process_index::count]
shard: cut clips (official stage-2 sampler + caption pick) ─► frames [N, F, 560, 560, 3] float32 in [0, 1]
  pass 1  VGGT ─► tokens ─► adapter posterior     for x·keep, keep ∈ {all, frame 0, frames 0 and F-1}
  pass 2  Wan VAE posterior of clamp(2·x·keep − 1)  (same three conditions)
  pass 3  umT5 of the caption (trimmed to its tokens; the reader pads zeros to max_length)
  pass 4  CLIP tokens of frame 0 (official uint8 truncation)
  (one model group loaded per pass and released after it, unless keep_models)
  ─► <out>/gen3r_preencoded-<split>.array_record-XXXXX-of-YYYYY   then shards/<file>.json (the "done" marker)
last process to finish: TFDS metadata (dataset_info.json, features.json) + preencode.json (settings, clip table)
```

Stored per clip (see ``docs/data.md``): posterior mean and clamped log-variance (not samples, so the loss still
draws fresh posterior samples every step) of the clean clip and of the 1-view / 2-view control videos, the caption
context, the CLIP tokens, cameras and the clip's frame ids. The clips are fixed at pre-encode time (the online
pipeline re-draws start and caption every epoch). This module writes; the on-disk format and the reader
(:class:`~gen3r_jax.data.preencoded.PreencodedSource`, ``pipeline.sources_from_preencoded``) live in
:mod:`gen3r_jax.data.preencoded`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import os
from pathlib import Path
import time
from typing import Any, Callable
import zlib

import jax.numpy as jnp
import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.data import layout, pipeline, tfds_builder
from gen3r_jax.data.clips import official_clip_config
from gen3r_jax.data.layout import split_name
from gen3r_jax.data.pipeline import ClipTransform, check_sources
from gen3r_jax.data.preencoded import (
    CONDITIONS, EMPTY_CONTEXT_FILE, FORMAT, LATENT, NAME, POSTERIOR_KEYS, SETTINGS_FILE, SHARD_DIR, SIZE,
    STORAGE_DTYPES, features, pad_rows, storage_round, to_storage
)
from gen3r_jax.errors import fmt_list, require
from gen3r_jax.models.bundle_layout import INDEX_FILE, load_component
from gen3r_jax.models.checkpoint import read_config
from gen3r_jax.models.clip.model import encode_videos
from gen3r_jax.models.umt5.t5 import encode_prompts
from gen3r_jax.models.umt5.tokenizer import UMT5Tokenizer
from gen3r_jax.models.wan_vae.vae import unit_to_vae_range
from gen3r_jax.nn.jit import module_jit
from gen3r_jax.progress import fmt_seconds
from gen3r_jax.sampling.cameras import check_num_frames
from gen3r_jax.sampling.conditioning import clip_image_input
from gen3r_jax.training.stage1 import target_tokens


COMPUTE_DTYPES = ("bfloat16", "float32")
NEEDED = ("vggt", "geo_adapter", "wan_vae", "text_encoder", "clip_image_encoder")
PASSES = (("geometry", ("vggt", "geo_adapter")), ("appearance", ("wan_vae",)), ("text", ("text_encoder",)),
          ("clip", ("clip_image_encoder",)))


@dataclasses.dataclass(frozen=True)
class PreencodeConfig:
  """What ``launch/preencode.py`` does.

  Attributes:
    source: official layout root, or an array_record dataset folder (``tfds_builder``; its data_dir works too).
    bundle: converted checkpoint (``launch/convert.py``); needs vggt, geo_adapter, wan_vae, text_encoder,
      clip_image_encoder and tokenizer.
    out: the output dataset folder (created; a run with the same settings resumes there).
    split: ``train`` (one output split ``train_<dataset>`` per dataset, official stage-2 sampler) or any split
      of the source (``test``: one split, start 0 as the official stage-2 validation).
    clips_per_scene: clips cut from each scene (clip c uses rng (seed, dataset, scene, c)).
    batch_size: clips per encoder call; shard_size: clips per output file (host RAM ~ shard_size x 184 MB,
      the float32 frames of a 49-frame clip; bigger shards reload the models less often).
    dtype: storage dtype of the float arrays (bfloat16 is stored as its uint16 bit pattern).
    compute_dtype: the encoders' compute dtype (official: bfloat16). Frames enter the encoders in float32, as in
      the online stage-2 loss (:mod:`gen3r_jax.training.stage2`); the models cast them to their dtype.
    keep_models: keep every model loaded between shards (faster, needs them all in device memory at once).
    pad: scenes shorter than num_frames: ``random`` (official), ``last`` or ``error``.
  """
  source: str
  bundle: str
  out: str
  split: str = "train"
  clips_per_scene: int = 1
  batch_size: int = 1
  shard_size: int = 16
  dtype: str = "bfloat16"
  compute_dtype: str = "bfloat16"
  num_frames: int = 49
  seed: int = 42
  max_length: int = 512
  clean_captions: bool = True
  pad: str = "random"
  keep_models: bool = False
  process_index: int = 0
  process_count: int = 1


# ---------------------------------------------------------------- checks, sources, plan

def check_config(cfg: PreencodeConfig) -> None:
  require(cfg.dtype in STORAGE_DTYPES, f"dtype {cfg.dtype!r} is not a storage dtype; use one of {STORAGE_DTYPES}.")
  require(cfg.compute_dtype in COMPUTE_DTYPES,
          f"compute_dtype {cfg.compute_dtype!r} is not supported; use one of {COMPUTE_DTYPES}.")
  check_num_frames(cfg.num_frames)
  for name in ("clips_per_scene", "batch_size", "shard_size", "max_length", "process_count"):
    require(getattr(cfg, name) >= 1, f"{name} must be >= 1, got {getattr(cfg, name)}.")
  require(0 <= cfg.process_index < cfg.process_count,
          f"process_index {cfg.process_index} must be in [0, process_count={cfg.process_count}).")
  require(bool(cfg.out), "no output folder: pass --out <dir>.")


def check_bundle_parts(bundle: str) -> None:
  """The converted bundle holds every encoder pre-encoding needs (the DiT is not needed)."""
  require(os.path.isfile(os.path.join(bundle, INDEX_FILE)),
          f"--bundle {bundle}: not a converted gen3r_jax checkpoint (no {INDEX_FILE}); convert the official one "
          "with `python launch/convert.py --source <Gen3R checkpoint> --out <dir>`.")
  missing = [c for c in (*NEEDED, "tokenizer") if not os.path.isdir(os.path.join(bundle, c))]
  require(not missing, f"--bundle {bundle} is missing {fmt_list(missing)}; pre-encoding needs "
          f"{fmt_list(NEEDED)} and the tokenizer: re-run launch/convert.py on the full checkpoint.")


def open_sources(source: str, split: str) -> tuple[dict[str, Any], str]:
  """``({dataset: scene source}, kind)`` for an official root or an array_record dataset folder."""
  p = Path(source)
  require(p.is_dir(), f"--source {source}: no such folder; pass an official layout root or an array_record "
          "dataset folder (python -m gen3r_jax.data.tfds_builder).")
  nested = tfds_builder.dataset_dir(p)
  if not (p / "dataset_info.json").is_file() and (nested / "dataset_info.json").is_file():
    p = nested
  if (p / "dataset_info.json").is_file():
    return pipeline.sources_from_records(p, 2, split), "array_record"
  is_root = (split == "train" and bool(layout.discover_datasets(p))) or (p / f"{split}_videos_dirs.txt").is_file()
  require(is_root, f"--source {source} is not a dataset: no <dataset>/{split}_videos_dirs.txt or {split}_*.txt "
          "list files (official layout) and no dataset_info.json (array_record folder); point it at the root that "
          "holds the list files.")
  return pipeline.sources_from_root(p, 2, split), "root"


def clip_config(cfg: PreencodeConfig):
  return official_clip_config(2, "train" if cfg.split == "train" else "val", num_frames=cfg.num_frames,
                              height=SIZE, width=SIZE, pad=cfg.pad)


def split_of(dataset: str, split: str) -> str:
  return f"train_{split_name(dataset)}" if split == "train" else split_name(split)


@dataclasses.dataclass(frozen=True)
class Shard:
  split: str
  dataset: str
  index: int
  count: int
  items: tuple[tuple[int, int], ...]   # (scene index, clip index)

  @property
  def filename(self) -> str:
    return f"{NAME}-{self.split}.array_record-{self.index:05d}-of-{self.count:05d}"


def plan_shards(sizes: dict[str, int], cfg: PreencodeConfig) -> list[Shard]:
  """All shards of all splits (datasets sorted), clips scene-major; process ``p`` encodes ``shards[p::count]``."""
  out = []
  for d in sorted(sizes):
    items = [(s, c) for s in range(sizes[d]) for c in range(cfg.clips_per_scene)]
    n = max(1, math.ceil(len(items) / cfg.shard_size))
    out += [Shard(split_of(d, cfg.split), d, i, n, tuple(items[i * cfg.shard_size:(i + 1) * cfg.shard_size]))
            for i in range(n)]
  return out


def clip_rng(seed: int, dataset: str, scene: int, clip: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(dataset.encode()), scene, clip])


def cut(sources: dict[str, Any], shard: Shard, cfg: PreencodeConfig, names: list[str]) -> list[dict]:
  """The shard's clips (``pipeline.ClipTransform``, the online stage-2 transform, with frame ids)."""
  t = ClipTransform(clip_config(cfg), names, True, cfg.clean_captions, with_frame_ids=True)
  k = names.index(shard.dataset)
  out, recs = [], {}
  for s, c in shard.items:
    if s not in recs:                       # items are scene-major: read each scene once, keep only the current
      recs = {s: sources[shard.dataset][s]}
    rec = recs[s]
    out.append(dict(t.random_map((k, rec), clip_rng(cfg.seed, shard.dataset, s, c)), scene=str(rec["scene"])))
  return out


# ---------------------------------------------------------------- encoders (public model APIs)

def keep_masks(num_frames: int) -> dict[str, np.ndarray]:
  """Frame masks ``[F]`` of the three conditions (``control_images[:, [0, -1]]``: frame 0 twice when F = 1)."""
  out = {c: np.zeros(num_frames, np.float32) for c in CONDITIONS}
  out[""][:] = 1
  out["ctrl_first_"][0] = 1
  out["ctrl_first_last_"][[0, -1]] = 1
  return out


@functools.lru_cache(maxsize=None)
def _tokens_jit():
  return module_jit(lambda vggt, frames: target_tokens(vggt, frames)[0])


def geo_posterior(vggt, adapter, x):
  """frames ``[B, F, H, W, 3]`` in [0, 1] -> VGGT tokens -> adapter posterior (``DiagonalGaussian``)."""
  return adapter.encode(_tokens_jit()(vggt, x))


def wan_posterior(vae, x):
  """frames ``[B, F, H, W, 3]`` in [0, 1] -> Wan VAE posterior of ``clamp(2x - 1)``."""
  return vae.encode(unit_to_vae_range(x))


def _batches(n: int, size: int):
  return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def _padded(x: np.ndarray, size: int) -> np.ndarray:
  """Pad axis 0 to ``size`` with zeros, so the last batch reuses the compiled shape."""
  return x if len(x) == size else np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])


def encode_posteriors(fn, models: tuple, frames: np.ndarray, name: str, batch: int) -> dict[str, np.ndarray]:
  """``{<cond><name>_{mean,logvar}: [N, f, 70, 70, z] float32}`` of the three conditions (``x · keep``);
  conditions with the same mask (all of them when F = 1) are encoded once."""
  out: dict[str, np.ndarray] = {}
  seen: dict[bytes, str] = {}
  for cond, keep in keep_masks(frames.shape[1]).items():
    if keep.tobytes() in seen:
      same = seen[keep.tobytes()]
      out.update({f"{cond}{name}_{p}": out[f"{same}{name}_{p}"] for p in ("mean", "logvar")})
      continue
    seen[keep.tobytes()] = cond
    parts = {"mean": [], "logvar": []}
    for idx in _batches(len(frames), batch):
      x = jnp.asarray(_padded(frames[idx], batch))
      dist = fn(*models, x * jnp.asarray(keep, x.dtype)[None, :, None, None, None])
      parts["mean"].append(np.asarray(dist.mean, np.float32)[:len(idx)])
      parts["logvar"].append(np.asarray(dist.logvar, np.float32)[:len(idx)])
    out.update({f"{cond}{name}_{p}": np.concatenate(v) for p, v in parts.items()})
  return out


def encode_captions(tokenizer, t5, texts: list[str], batch: int, max_length: int) -> list[np.ndarray]:
  """umT5 output of each caption, trimmed to its token count (eos included): ``[n_i, Dt]`` float32."""
  out = []
  for idx in _batches(len(texts), batch):
    chunk = [texts[i] for i in idx] + [""] * (batch - len(idx))
    tok = tokenizer(chunk, max_length=max_length)
    out += [np.asarray(e, np.float32) for e in encode_prompts(t5, tok["input_ids"], tok["attention_mask"])[:len(idx)]]
  return out


def encode_clip(clip, frames: np.ndarray, batch: int) -> np.ndarray:
  """CLIP tokens of frame 0 of each clip ``[N, 257, Dc]`` (``sampling.conditioning.clip_image_input``)."""
  out = []
  for idx in _batches(len(frames), batch):
    x = clip_image_input(jnp.asarray(_padded(frames[idx, 0], batch)))        # [B, H, W, 3] in [-1, 1]
    out.append(np.asarray(encode_videos(clip, [x[i:i + 1] for i in range(batch)]), np.float32)[:len(idx)])
  return np.concatenate(out)


class Models:
  """Loads the encoders of one pass at a time from the bundle, weights cast to the compute dtype (the official
  script casts the frozen encoders to bf16); :meth:`release` drops them (unless ``keep``)."""

  def __init__(self, bundle: str, dtype: str, keep: bool):
    self.bundle, self.dtype, self.keep, self.loaded = bundle, dtype, keep, {}
    self.tokenizer = None

  def get(self, comps: tuple[str, ...]) -> tuple:
    for c in comps:
      if c not in self.loaded:
        self.loaded[c] = load_component(self.bundle, c, dtype=self.dtype, param_dtype=self.dtype)
    return tuple(self.loaded[c] for c in comps)

  def get_tokenizer(self):
    if self.tokenizer is None:
      self.tokenizer = UMT5Tokenizer.from_pretrained(os.path.join(self.bundle, "tokenizer"))
    return self.tokenizer

  def release(self) -> None:
    if not self.keep:
      self.loaded.clear()
      gc.collect()


def encode_shard(models: Models, clips: list[dict], cfg: PreencodeConfig, out: Path, log: Callable) -> dict:
  """Every stored array of the shard's clips (float32), one model group per pass (module docstring)."""
  frames = np.stack([c["frames"] for c in clips]).astype(np.float32)                      # [N, F, H, W, 3]
  res: dict[str, Any] = {}
  for name, comps in PASSES:
    t0 = time.perf_counter()
    ms = models.get(comps)
    if name == "geometry":
      res.update(encode_posteriors(geo_posterior, ms, frames, "geo", cfg.batch_size))
    elif name == "appearance":
      res.update(encode_posteriors(wan_posterior, ms, frames, "wan", cfg.batch_size))
    elif name == "text":
      tok = models.get_tokenizer()
      res["context"] = encode_captions(tok, ms[0], [c["text"] for c in clips], cfg.batch_size, cfg.max_length)
      if not (out / EMPTY_CONTEXT_FILE).exists():
        empty = encode_captions(tok, ms[0], [""], cfg.batch_size, cfg.max_length)[0]
        _atomic_save(out / EMPTY_CONTEXT_FILE, pad_rows(storage_round(empty, cfg.dtype), cfg.max_length))
    else:
      res["clip_fea"] = encode_clip(ms[0], frames, cfg.batch_size)
    del ms                            # no reference left: the next pass's models load after these are freed
    models.release()
    log(f"[preencode]   {name}: {time.perf_counter() - t0:.1f} s")
  return res


# ---------------------------------------------------------------- writing

def shard_examples(clips: list[dict], res: dict, shard: Shard, dtype: str) -> list[dict]:
  out = []
  for i, (c, (_, k)) in enumerate(zip(clips, shard.items)):
    ex = {key: to_storage(res[key][i], dtype) for key in (*POSTERIOR_KEYS, "context", "clip_fea")}
    ex.update(c2ws=c["c2ws"], Ks=c["Ks"], frame_ids=c["frame_ids"], text=c["text"], dataset=shard.dataset,
              scene=c["scene"], clip_index=np.int32(k))
    out.append(ex)
  return out


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
  with atomic_path(path) as tmp:
    write(tmp)


def _atomic_save(path: Path, array: np.ndarray) -> None:
  def save(tmp):
    with open(tmp, "wb") as f:
      np.save(f, array)
  _atomic_write(path, save)


def _write_json(path: Path, obj) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=1)
  _atomic_write(path, write)


def write_shard(out: Path, shard: Shard, examples: list[dict], spec) -> None:
  """The array_record file, then its marker ``shards/<file>.json`` (clip table); both atomic."""
  from array_record.python.array_record_module import (  # heavy optional dependency: imported on first use
      ArrayRecordWriter
  )

  def write(tmp):
    w = ArrayRecordWriter(tmp, "group_size:1")
    for ex in examples:
      w.write(spec.serialize_example(ex))
    w.close()
  _atomic_write(out / shard.filename, write)
  table = [dict(scene=ex["scene"], clip=int(ex["clip_index"]), frame_ids=np.asarray(ex["frame_ids"]).tolist())
           for ex in examples]
  _write_json(out / SHARD_DIR / f"{shard.filename}.json",
              dict(split=shard.split, dataset=shard.dataset, num_examples=len(examples),
                   num_bytes=os.path.getsize(out / shard.filename), clips=table))


def _marker(out: Path, shard: Shard) -> Path:
  return out / SHARD_DIR / f"{shard.filename}.json"


def shard_done(out: Path, shard: Shard) -> bool:
  return _marker(out, shard).is_file() and (out / shard.filename).is_file()


# ---------------------------------------------------------------- settings, metadata, driver

def settings(cfg: PreencodeConfig, kind: str, sizes: dict[str, int]) -> dict:
  """What fixes the output: a rerun with other settings must not mix into the same folder."""
  with open(os.path.join(cfg.bundle, INDEX_FILE)) as f:
    comps = json.load(f).get("components", {})
  clip = clip_config(cfg)
  return dict(source=os.path.abspath(cfg.source), source_kind=kind, split=cfg.split, scenes=sizes,
              bundle=os.path.abspath(cfg.bundle), components={c: comps.get(c, {}) for c in NEEDED},
              num_frames=cfg.num_frames, size=SIZE, strides=list(clip.strides), start=clip.start, pad=clip.pad,
              exact_crop_offsets=clip.exact_crop_offsets, clips_per_scene=cfg.clips_per_scene, seed=cfg.seed,
              clean_captions=cfg.clean_captions, dtype=cfg.dtype, compute_dtype=cfg.compute_dtype,
              max_length=cfg.max_length, shard_size=cfg.shard_size,
              clip_rng="np.random.default_rng([seed, zlib.crc32(dataset), scene_index, clip_index])")


def record_shapes(bundle: str, num_frames: int) -> dict[str, list]:
  """Static shapes of the stored arrays, from the bundle's component configs (no weights loaded)."""
  rc = lambda c: read_config(os.path.join(bundle, c))                         # noqa: E731
  f = (num_frames - 1) // 4 + 1
  clip = rc("clip_image_encoder")
  shapes = {k: [f, LATENT, LATENT, int(rc("wan_vae" if "wan" in k else "geo_adapter")["z_dim"])]
            for k in POSTERIOR_KEYS}
  shapes["context"] = [None, int(rc("text_encoder")["dim"])]
  shapes["clip_fea"] = [(int(clip["image_size"]) // int(clip["patch_size"])) ** 2 + 1, int(clip["dim"])]
  return shapes


def claim_output(out: Path, s: dict, shapes: dict) -> None:
  """Create ``out`` with its settings file, or check that an existing one holds the same settings."""
  path = out / SETTINGS_FILE
  if path.is_file():
    with open(path) as f:
      old = json.load(f)["settings"]
    diff = sorted(k for k in set(old) | set(s) if old.get(k) != s.get(k))
    require(not diff, f"--out {out} holds a pre-encoding with different settings ({fmt_list(diff)} differ); "
            "use another --out, or delete the folder to start over.")
    return
  # another process of this run may be creating the folder at the same moment: its files are allowed
  foreign = [p.name for p in out.iterdir() if p.name != SHARD_DIR and not p.name.startswith(SETTINGS_FILE + ".tmp-")
             ] if out.exists() else []
  require(not foreign, f"--out {out} is not empty and holds no {SETTINGS_FILE}; pass an empty or new folder.")
  (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
  _write_json(path, dict(format=FORMAT, complete=False, settings=s, shapes=shapes))


def finalize(out: Path, shards: list[Shard], s: dict, shapes: dict, spec) -> bool:
  """Once every shard is done: TFDS metadata and the complete ``preencode.json``. False while some are missing."""
  import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use
  if not all(shard_done(out, sh) for sh in shards) or not (out / EMPTY_CONTEXT_FILE).is_file():
    return False
  markers = {sh: json.loads(_marker(out, sh).read_text()) for sh in shards}
  split_infos, records = [], {}
  for split in dict.fromkeys(sh.split for sh in shards):
    mine = [sh for sh in shards if sh.split == split]
    template = tfds.core.ShardedFileTemplate(data_dir=out, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                                             dataset_name=NAME, split=split, filetype_suffix="array_record")
    split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[markers[m]["num_examples"] for m in mine],
                                           num_bytes=sum(markers[m]["num_bytes"] for m in mine),
                                           filename_template=template))
    records[split] = dict(dataset=mine[0].dataset, clips=[c for m in mine for c in markers[m]["clips"]])
  tfds.folder_dataset.write_metadata(data_dir=out, features=spec, split_infos=split_infos, check_data=False,
                                     description="Gen3R stage-2 pre-encoded clips (gen3r_jax.training.preencode).")
  _write_json(out / SETTINGS_FILE, dict(format=FORMAT, complete=True, settings=s, shapes=shapes, splits=records))
  return True


def preencode(cfg: PreencodeConfig, log: Callable = print) -> Path:
  """Encode this process's shards (skipping finished ones) and finalise when all are done; returns ``out``."""
  check_config(cfg)
  check_bundle_parts(cfg.bundle)
  sources, kind = open_sources(cfg.source, cfg.split)
  names = sorted(sources)
  sizes = {d: len(sources[d]) for d in names}
  require(sum(sizes.values()) > 0, f"--source {cfg.source} split {cfg.split!r} lists no scenes.")
  check_sources(sources, clip_config(cfg))
  out = Path(cfg.out)
  s, shapes = settings(cfg, kind, sizes), record_shapes(cfg.bundle, cfg.num_frames)
  spec = features(shapes, cfg.num_frames, cfg.dtype)
  claim_output(out, s, shapes)
  shards = plan_shards(sizes, cfg)
  todo = [sh for sh in shards[cfg.process_index::cfg.process_count] if not shard_done(out, sh)]
  total = sum(len(sh.items) for sh in todo)
  log(f"[preencode] {len(shards)} shards, {sum(len(sh.items) for sh in shards)} clips; process "
      f"{cfg.process_index}/{cfg.process_count}: {len(todo)} shards ({total} clips) to encode")
  models, done, t_start = Models(cfg.bundle, cfg.compute_dtype, cfg.keep_models), 0, time.perf_counter()
  for j, sh in enumerate(todo):
    clips = cut(sources, sh, cfg, names)
    res = encode_shard(models, clips, cfg, out, log)
    write_shard(out, sh, shard_examples(clips, res, sh, cfg.dtype), spec)
    done += len(sh.items)
    rate = done / (time.perf_counter() - t_start)
    log(f"[preencode] {sh.filename}: shard {j + 1}/{len(todo)}, {done}/{total} clips, {rate:.3f} clips/s, "
        f"ETA {fmt_seconds((total - done) / rate)}")
  if finalize(out, shards, s, shapes, spec):
    log(f"[preencode] complete: {out}")
  else:
    log(f"[preencode] this process is done; {out} is finalised by the last process to finish (or a rerun)")
  return out



__all__ = ("PreencodeConfig", "preencode", "record_shapes", "keep_masks", "plan_shards", "clip_rng")
