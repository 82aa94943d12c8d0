"""Grain input pipeline: scene records → shuffled, sharded, mixed clips → numpy batches.

```
per dataset: source ─► shuffle(seed) ─► repeat ─► stage 2: mix(weights) | stage 1: one concatenated source
  ─► random_map(cut clip, caption; rng from seed + global index)
  ─► [process_index :: process_count]   (per-process shard)
  ─► batch ─► to_iter_dataset(threads, prefetch) ─► [mp_prefetch]
```
Every random choice (shuffle order, stride, padding split, start, caption line, prompt cleaning) is a function of
``seed`` and the element's global position, so a resumed iterator (``get_state`` / ``set_state``) yields the
very batches the uninterrupted run would have. Batches are dicts of numpy arrays:

* stage 1: ``frames`` ``[B, F, H, W, 3]`` float32 in [0, 1];
* stage 2: also ``c2ws`` ``[B, F, 4, 4]`` (relative to frame 0), ``Ks`` ``[B, F, 3, 3]`` (pixels at H×W),
  ``text`` ``[B]`` object (str), ``dataset_idx`` ``[B]`` int32 (into ``DataPipeline.names``),
  ``dataset_name`` ``[B]`` object.
* stage 2 over pre-encoded clips (:func:`sources_from_preencoded`, :mod:`gen3r_jax.data.preencoded`): no frames;
  the stored posteriors ``{,ctrl_first_,ctrl_first_last_}{wan,geo}_{mean,logvar}`` ``[B, f, 70, 70, 16]``,
  ``context`` ``[B, L, Dt]``, ``clip_fea`` ``[B, 257, Dc]`` (storage dtype) and the stage-2 keys above. The clip
  and caption were fixed at pre-encode time, so this path has no random map; shuffle, mix, shard, batch and resume
  are the same.

Validation: :func:`make_pipeline` checks every scene before it returns (:func:`validate_sources`: transforms.json,
captions and image headers, no pixel decoded) and, by ``PipelineConfig.validate``, raises one error listing every
bad scene (``"strict"``) or drops them with a warning (``"skip"``).

Mixing: stage 2 draws datasets in proportion to the official weights (training-reference §1.3) with
``grain.MapDataset.mix``, which interleaves deterministically in those proportions (the official code draws
the dataset i.i.d. per sample; the expected proportions are the same) and shuffles scenes within each dataset.
Stage 1 samples uniformly over all scenes (the official root list), epoch by epoch.
"""

from __future__ import annotations

import bisect
from concurrent.futures import ThreadPoolExecutor
import dataclasses
import logging
from typing import Any, Mapping, Sequence

from absl import flags
import jax
import numpy as np

from gen3r_jax.data import layout
from gen3r_jax.data.captions import pick_caption
from gen3r_jax.data.clips import ClipConfig, cut_clip, official_clip_config
from gen3r_jax.data.preencoded import BATCH_KEYS, PreencodedSource, read_metadata
from gen3r_jax.data.tfds_builder import RecordSource, splits
from gen3r_jax.errors import Gen3RInputError, fmt_list, require


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Input pipeline settings. ``batch_size`` is per process.

  Attributes:
    stage: 1 (frames only, uniform over scenes) or 2 (cameras + captions, weighted mixing).
    clip: how clips are cut (default: the official settings of ``stage``'s training split).
    weights: ``{dataset: weight}`` for stage 2; missing names take the official weight (1.0 if unknown).
    num_epochs: ``None`` repeats forever; else stops after that many passes (stage 2: sum of dataset sizes).
    process_index / process_count: shard of this host (``None`` → ``jax.process_index()/process_count()``).
    read_threads / prefetch: grain ``ReadOptions`` (element threads and buffer) of ``to_iter_dataset``.
    mp_workers: > 0 adds ``mp_prefetch`` with that many worker processes (off by default and in tests).
    clean_captions: apply ``clean_prompt`` (official) to the chosen caption line.
    validate: what :func:`validate_sources` does with scenes that cannot give a clip, found when the pipeline is
      built: ``"strict"`` raises one error listing every bad scene; ``"skip"`` drops them with a warning (their
      count and names) and trains on the rest.
    validate_images: ``"all"``: validation reads the header of every frame a clip may use; ``"first"``: of the
      first only (one image file per scene, for very large datasets; see :func:`layout.validate_scene`).
    validate_threads: threads reading transforms.json files and image headers during validation (I/O bound).
  """
  stage: int = 2
  batch_size: int = 1
  seed: int = 42
  clip: ClipConfig | None = None
  weights: Mapping[str, float] | None = None
  num_epochs: int | None = None
  process_index: int | None = None
  process_count: int | None = None
  drop_remainder: bool = True
  read_threads: int = 2
  prefetch: int = 2
  mp_workers: int = 0
  clean_captions: bool = True
  validate: str = "strict"
  validate_images: str = "all"
  validate_threads: int = 8

  def resolved_clip(self) -> ClipConfig:
    return (self.clip or official_clip_config(self.stage, "train")).validate()


class ConcatSource:
  """Several random-access sources seen as one (stage 1 reads all datasets as one list)."""

  def __init__(self, sources: Sequence[Any]):
    self.sources = list(sources)
    self._ends = list(np.cumsum([len(s) for s in self.sources]))

  def __len__(self) -> int:
    return int(self._ends[-1]) if self._ends else 0

  def __getitem__(self, i: int):
    k = bisect.bisect_right(self._ends, i)
    return self.sources[k][i - (int(self._ends[k - 1]) if k else 0)]


VALIDATE_MODES = ("strict", "skip")


def scene_index(source: Any) -> list[dict]:
  """``[{dataset, num_images, num_cameras}]`` per scene, without decoding images (folder sources: validates
  every scene from its transforms.json and image headers, see :func:`layout.validate_scene`)."""
  if hasattr(source, "index") and source.index:
    return list(source.index)
  if isinstance(source, layout.FolderSource):
    return [source.validate(i) for i in range(len(source))]
  if isinstance(source, ConcatSource):
    return [e for s in source.sources for e in scene_index(s)]
  return []


@dataclasses.dataclass(frozen=True)
class BadScene:
  """A scene that cannot give a clip: its dataset, its name (folder relative to the root, or ``record i``) and
  why (one line)."""
  dataset: str
  scene: str
  reason: str

  def __str__(self) -> str:
    return f"{self.scene} ({self.dataset}): {self.reason}"


class SubsetSource:
  """The scenes ``keep`` of a random-access source (records after ``validate="skip"``)."""

  def __init__(self, source: Any, keep: Sequence[int]):
    self.source, self.keep = source, [int(i) for i in keep]
    index = getattr(source, "index", None)
    self.index = [index[i] for i in self.keep] if index else []

  def __len__(self) -> int:
    return len(self.keep)

  def __getitem__(self, i: int):
    return self.source[self.keep[i]]


def _clip_problem(entry: dict, clip: ClipConfig) -> str | None:
  """Why a scene of ``entry`` (``{num_images, num_cameras}``) cannot give a clip of ``clip``, or ``None``."""
  cameras = clip.order == "cameras"
  length = entry["num_cameras"] if cameras else entry["num_images"]
  if length == 0:
    return f"no {'cameras' if cameras else 'images'}; stage-2 clips need transforms.json frames."
  if clip.pad == "error" and length < clip.num_frames:
    return (f"has {length} frames but a clip needs {clip.num_frames} (pad='error'); drop it from the list files, "
            "lower num_frames, or use pad='random' (official).")
  return None


def _validate_one(source: Any, name: str, clip: ClipConfig, threads: int, images: str
                  ) -> tuple[Any, list[BadScene]]:
  """``(source without its bad scenes, [BadScene])`` of one dataset's source."""
  if isinstance(source, ConcatSource):
    parts = [_validate_one(s, name, clip, threads, images) for s in source.sources]
    return ConcatSource([p for p, _ in parts]), [b for _, bad in parts for b in bad]
  if isinstance(source, layout.FolderSource):
    def check(i):
      try:
        return source.validate(i, images)
      except Gen3RInputError as e:
        return e
    if threads > 1 and len(source) > 1:
      with ThreadPoolExecutor(min(threads, len(source))) as pool:
        entries = list(pool.map(check, range(len(source))))
    else:
      entries = [check(i) for i in range(len(source))]
    label = lambda i: (source.scene_name(i), source.refs[i].dataset)  # noqa: E731
  else:
    entries = scene_index(source) or [None] * len(source)
    label = lambda i: (f"record {i}", (entries[i] or {}).get("dataset", name))  # noqa: E731
  keep, bad = [], []
  for i, e in enumerate(entries):
    reason = (" ".join(str(e).split()) if isinstance(e, Exception) else
              _clip_problem(e, clip) if e is not None else None)
    if reason is None:
      keep.append(i)
    else:
      scene, dataset = label(i)
      prefix = f"scene {scene}: "
      bad.append(BadScene(dataset, scene, reason[len(prefix):] if reason.startswith(prefix) else reason))
  if not bad:
    return source, []
  subset = source.subset(keep) if isinstance(source, layout.FolderSource) else SubsetSource(source, keep)
  return subset, bad


def validate_sources(sources: Mapping[str, Any], clip: ClipConfig, mode: str = "strict", *, images: str = "all",
                     threads: int = 8, log=None) -> tuple[dict[str, Any], list[BadScene]]:
  """Check every scene of every dataset before training: ``(sources without bad scenes, [BadScene])``.

  Folder sources are read as :func:`layout.validate_scene` describes (transforms.json, captions, image *headers*
  of every frame a clip may use, or of the first with ``images="first"``: no pixel is decoded), ``threads`` scenes
  at a time; record sources (validated in full when they were built) by
  their index. A scene is bad when that raises or when it cannot give a clip (``_clip_problem``). ``mode``:

  * ``"strict"``: any bad scene is one :class:`Gen3RInputError` listing every bad scene and why;
  * ``"skip"``: bad scenes are dropped; ``log`` (default: a ``logging`` warning) gets one line with their count
    and names. A dataset left without scenes is still an error.
  """
  require(images in layout.VALIDATE_IMAGES, f"validate_images must be one of {layout.VALIDATE_IMAGES}, got "
          f"{images!r}.")
  require(mode in VALIDATE_MODES, f"validate must be one of {VALIDATE_MODES} ('strict': one error listing every bad "
          f"scene; 'skip': drop them with a warning), got {mode!r}.")
  out, bad, total = {}, [], 0
  for name, src in sources.items():
    require(len(src) > 0, f"dataset {name!r} has no scenes; remove it or fill its list files.")
    total += len(src)
    out[name], b = _validate_one(src, name, clip, threads, images)
    bad += b
  if not bad:
    return out, []
  if mode == "strict":
    raise Gen3RInputError(
        f"{len(bad)} of {total} scenes cannot be used: "
        + "; ".join(f"[{i + 1}] {str(b).rstrip('.')}" for i, b in enumerate(bad))
        + ". Fix or remove them from the list files, or set data.validate='skip' to train on the other scenes.")
  empty = [n for n, s in out.items() if len(s) == 0]
  require(not empty, f"every scene of dataset(s) {fmt_list(empty)} is bad (data.validate='skip' leaves none): "
          + "; ".join(str(b) for b in bad)[:2000])
  if log is None:
    log = logging.getLogger("gen3r_jax.data").warning
  log(f"data.validate='skip': dropped {len(bad)} of {total} scenes that cannot be used "
      f"({fmt_list([f'{b.scene} ({b.dataset})' for b in bad], 50)}); first reason: {bad[0].reason}")
  return out, bad


def check_sources(sources: Mapping[str, Any], clip: ClipConfig) -> None:
  """Fail before training when a scene cannot give a clip (:func:`validate_sources` in ``"strict"`` mode: every
  bad scene in one error)."""
  validate_sources(sources, clip, "strict")


class ClipTransform:
  """``grain`` random map: scene record → clip dict (see module docstring), one RNG per element."""

  def __init__(self, clip: ClipConfig, names: Sequence[str], with_text: bool, clean_captions: bool = True,
               *, with_frame_ids: bool = False):
    self.clip, self.names, self.with_text, self.clean = clip, list(names), with_text, clean_captions
    self.with_frame_ids = with_frame_ids  # pre-encoding records which frames each clip used

  def random_map(self, element: tuple[int, dict], rng: np.random.Generator) -> dict[str, Any]:
    idx, rec = element
    c = cut_clip(rec, rng, self.clip)
    ids = {"frame_ids": c["frame_ids"]} if self.with_frame_ids else {}
    if not self.with_text:
      return {"frames": c["frames"], **ids}
    text = pick_caption(rec["captions"], rng, clean=self.clean) if len(rec["captions"]) else ""
    return dict(frames=c["frames"], c2ws=c["c2ws"], Ks=c["Ks"], text=text, dataset_idx=np.int32(idx),
                dataset_name=self.names[idx], **ids)

  __call__ = random_map


class PreencodedTransform:
  """``grain`` map: (dataset index, pre-encoded clip) → the pre-encoded stage-2 batch keys (module docstring)."""

  def __init__(self, names: Sequence[str]):
    self.names = list(names)
    self.keys = tuple(k for k in BATCH_KEYS if k not in ("dataset_idx", "dataset_name"))

  def __call__(self, element: tuple[int, dict]) -> dict[str, Any]:
    idx, ex = element
    return dict({k: ex[k] for k in self.keys}, dataset_idx=np.int32(idx), dataset_name=self.names[idx])


def collate(items: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Stack a list of clip dicts; strings become object arrays."""
  out = {}
  for k in items[0]:
    vals = [it[k] for it in items]
    out[k] = np.array(vals, dtype=object) if isinstance(vals[0], str) else np.stack(vals)
  return out


@dataclasses.dataclass
class DataPipeline:
  """The built pipeline: iterate it (``iter(p)`` is checkpointable) or use ``dataset`` directly."""
  dataset: Any  # grain.IterDataset of batches
  names: list[str]
  weights: list[float]
  sizes: list[int]
  dropped: list[BadScene] = dataclasses.field(default_factory=list)   # scenes validate="skip" left out

  def __iter__(self):
    return iter(self.dataset)


def make_pipeline(sources: Mapping[str, Any], cfg: PipelineConfig) -> DataPipeline:
  """Build the grain pipeline over ``{dataset name: random-access source of scene records}``."""
  import grain  # heavy optional dependency: imported on first use

  require(cfg.stage in (1, 2), f"stage must be 1 or 2, got {cfg.stage}.")
  require(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}.")
  require(len(sources) > 0, "no datasets given; point the pipeline at a dataset root or built records.")
  kinds = {bool(getattr(s, "preencoded", False)) for s in sources.values()}
  require(len(kinds) == 1, "mix of pre-encoded and scene sources; use one kind for all datasets.")
  preencoded = kinds == {True}
  require(not preencoded or cfg.stage == 2, "pre-encoded clips feed stage 2 only; set stage=2.")
  clip = cfg.resolved_clip()
  require(cfg.stage == 1 or clip.order == "cameras",
          "stage 2 needs clip.order='cameras' (transforms.json order, with cameras).")
  pi, pc = cfg.process_index, cfg.process_count
  if pi is None or pc is None:
    pi, pc = jax.process_index(), jax.process_count()
  require(0 <= pi < pc, f"process_index {pi} must be in [0, {pc}).")
  dropped: list[BadScene] = []
  if not preencoded:
    sources, dropped = validate_sources(sources, clip, cfg.validate, images=cfg.validate_images,
                                        threads=cfg.validate_threads)

  names = list(sources)
  sizes = [len(sources[n]) for n in names]
  wmap = dict(cfg.weights or {})
  unknown = sorted(set(wmap) - set(names))
  require(not unknown, f"weights name unknown datasets {fmt_list(unknown)}; known: {fmt_list(names)}.")
  weights = [float(wmap.get(n, layout.official_weight(n))) for n in names]
  require(all(w >= 0 for w in weights) and sum(weights) > 0, f"dataset weights must be >= 0, not all 0: {weights}.")

  if cfg.stage == 1:
    src = ConcatSource([sources[n] for n in names])
    ds = grain.MapDataset.source(src).shuffle(seed=cfg.seed).map(_Tag(0))
    ds = ds.repeat(cfg.num_epochs)
  else:
    parts = []
    for i, n in enumerate(names):
      part = grain.MapDataset.source(sources[n]).shuffle(seed=cfg.seed + 7919 * i).repeat()
      parts.append(part.map(_Tag(i)))
    keep = [(p, w) for p, w in zip(parts, weights) if w > 0]
    ds = grain.MapDataset.mix([p for p, _ in keep], [w for _, w in keep])
    if cfg.num_epochs is not None:
      ds = ds[: cfg.num_epochs * sum(sizes)]
  if preencoded:
    ds = ds.map(PreencodedTransform(names))
  else:
    ds = ds.random_map(ClipTransform(clip, names, cfg.stage == 2, cfg.clean_captions), seed=cfg.seed)
  ds = ds[pi::pc]
  ds = ds.batch(cfg.batch_size, drop_remainder=cfg.drop_remainder, batch_fn=collate)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch))
  if cfg.mp_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside absl.app.run use defaults
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.mp_workers))
  return DataPipeline(it, names, weights, sizes, dropped)


class _Tag:
  """Pair a record with its dataset index (a class, not a lambda, so mp_prefetch can pickle it)."""

  def __init__(self, i: int):
    self.i = i

  def __call__(self, rec):
    return (self.i, rec)


def sources_from_root(root, stage: int = 2, split: str = "train", *, check_sizes: bool = False) -> dict[str, Any]:
  """Sources read straight from an official root (no conversion).

  Stage 2 train: one source per dataset folder (``<root>/<dataset>/train_*.txt``). Stage 1 train and any
  ``test`` split: the root lists ``<root>/<split>_*.txt`` as one source named ``"all"``.
  """
  if stage == 2 and split == "train":
    refs = layout.dataset_refs(root, "train")
    return {d: layout.FolderSource(r, root, check_sizes=check_sizes) for d, r in refs.items()}
  refs = layout.root_refs(root, split, need_cameras=stage == 2)
  return {"all": layout.FolderSource(refs, root, need_cameras=stage == 2, check_sizes=check_sizes)}


def sources_from_records(dataset_dir, stage: int = 2, split: str = "train") -> dict[str, Any]:
  """Sources over the array_record files of :mod:`gen3r_jax.data.tfds_builder`.

  ``split="train"``: stage 2 gets one source per ``train_<dataset>`` split (named by the dataset folder);
  stage 1 gets every ``train_*`` split as one source ``"all"``. Any other split name is read as one source.
  """

  if split != "train":
    return {split: RecordSource(dataset_dir, split)}
  train = [s for s in splits(dataset_dir) if s.startswith("train_")]
  require(bool(train), f"{dataset_dir} has no train_* split.")
  if stage == 1:
    return {"all": ConcatSource([RecordSource(dataset_dir, s) for s in train])}
  out = {}
  for s in train:
    if s == "train_root":
      continue
    src = RecordSource(dataset_dir, s)
    out[src.index[0]["dataset"] if src.index else s[len("train_"):]] = src
  return out


def sources_from_preencoded(directory, split: str = "train") -> dict[str, Any]:
  """Sources over a finished pre-encoding (``launch/preencode.py``), for :func:`make_pipeline` with ``stage=2``.

  ``split="train"``: one source per ``train_<dataset>`` split, named by its dataset (mixed with the stage-2
  weights, as online). Any other split name is one source of that name.
  """
  import tensorflow_datasets as tfds  # heavy optional dependency: imported on first use


  read_metadata(directory)  # clear error for a missing or unfinished pre-encoding
  if split != "train":
    return {split: PreencodedSource(directory, split)}
  train = sorted(s for s in tfds.builder_from_directory(str(directory)).info.splits.keys() if s.startswith("train_"))
  require(bool(train), f"{directory} has no train_* split; it was pre-encoded from another split.")
  srcs = [PreencodedSource(directory, s) for s in train]
  return {src.dataset: src for src in srcs}
