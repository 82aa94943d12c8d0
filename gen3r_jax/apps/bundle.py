"""A whole Gen3R checkpoint: conversion of the official directory layout, loading, and random bundles.

Official layout (``Gen3RPipeline.save_pretrained``)::

    model_index.json  tokenizer/  text_encoder/  transformer/  clip_image_encoder/  wan_vae/  geo_adapter/  vggt/
    scheduler/scheduler_config.json

Converted layout (written by :func:`convert_bundle` / ``launch/convert.py --source``)::

    <out>/gen3r_jax_index.json              components, their manifest names and the conversion summary
    <out>/<component>/{params/, config.json, conversion_report.json}   one Orbax checkpoint per network
    <out>/tokenizer/                        copied as is (SentencePiece ``spiece.model`` + configs)
    <out>/scheduler/scheduler_config.json   copied as is
    <out>/gen3r_jax_complete.json           the completeness record, written last (see below)

(folder names, component classes, index and record file names: :mod:`gen3r_jax.models.bundle_layout`)

Conversion is atomic: the whole bundle is written into a sibling ``.<out>.partial-<pid>`` directory, verified (each
component's Orbax metadata against the converted parameters, then the record) and only then swapped in for the
previous output (:mod:`gen3r_jax.atomic`). A failed or killed run leaves the previous output as it was; the
report of a component that failed goes to ``<out>.<component>.failed_conversion_report.json``. The record lists
each component's status (``ok``; ``forced``: converted with ``--nostrict`` or ``--allow_nonfinite`` despite the
problems its report lists, loaded with a warning; ``random``: random demo weights) and the size of every file;
:func:`load_bundle` (and :func:`check_bundle`) refuse a bundle without it, with a component of another status, or
with a file missing or of another size.

Checkpoints from the Hugging Face hub (``hf:<repo id>[@revision]``, :func:`resolve_checkpoint`; optional extra
``[hub]``): ``huggingface_hub.snapshot_download`` fetches the official layout (or finds it in the local hub cache;
``HF_HUB_OFFLINE=1`` never touches the network), then the strict conversion above writes the bundle into
``$GEN3R_HUB_CACHE`` (default ``~/.cache/gen3r_jax/hub``) under ``<owner>--<name>@<commit>``. The next call with the
same repository and revision finds that bundle complete (its completeness record verified) and converts nothing;
an incomplete one (a killed conversion) is converted again. Without network and not in the cache, or a repository
that does not exist: one line naming the local-folder alternative.

Configs: the official loaders read ``config.json`` for the text encoder, the DiT and the geometry adapter, but
hard-code the Wan VAE width (96), the CLIP tower (ViT-H/14) and VGGT-1B. We do the same, except that the widths
the weights reveal unambiguously (VAE base width, the DiT's CLIP projection width) are read from the tensor shapes,
and ``overrides`` (component -> config dict) replace the defaults for non-release checkpoints (the tiny fixture).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import time
from typing import Any, Callable
import warnings

from gen3r_jax.atomic import atomic_path, is_partial, refuse_partial, staged_dir
from gen3r_jax.convert.core import ConversionError, Report, convert, param_targets
from gen3r_jax.convert.registry import get_spec
from gen3r_jax.convert.sources import TensorSource, open_source
from gen3r_jax.convert.tables import wan_dit
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.bundle_layout import COMPONENTS, COPIED, INDEX_FILE, RECORD_FILE, model_class
from gen3r_jax.models.checkpoint import CONFIG_FILE, PARAMS_DIR, REPORT_FILE, save_params, verify_params
from gen3r_jax.models.config import DTYPES
from gen3r_jax.models.init import random_params
from gen3r_jax.models.umt5.tokenizer import UMT5Tokenizer
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.parallel.rules import as_rules
from gen3r_jax.progress import Progress
from gen3r_jax.sampling import placement as pl


RECORD_FORMAT = "gen3r_jax bundle record v1"
# statuses a loadable component may have in the record
STATUSES = {"ok": "converted, every key accounted for",
            "forced": "converted with --nostrict / --allow_nonfinite despite problems",
            "random": "random weights (demo / tests)"}
FAILED_REPORT_SUFFIX = "failed_conversion_report.json"
_RECONVERT = "re-run `python launch/convert.py --source <Gen3R checkpoint> --out {d} --overwrite`"

_META_KEYS = ("_class_name", "_diffusers_version", "note")
HUB_PREFIX = "hf:"
HUB_CACHE_ENV = "GEN3R_HUB_CACHE"
_LOCAL_ALTERNATIVE = ("or download the official Gen3R checkpoint folder yourself and pass its local path instead "
                      "(launch/convert.py --source <dir> --out <dir>, then the converted folder as the checkpoint)")


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise Gen3RInputError(f"{path}: not valid JSON ({e}); re-download the checkpoint") from e


def read_json_arg(path: str | None, flag: str, *, nested: bool = False) -> dict | None:
  """A JSON object from a user-given file (``--config`` / ``--overrides``); ``nested``: values must be objects
  too (component -> config). Errors name the file and the flag."""
  if not path:
    return None
  if not os.path.isfile(path):
    raise Gen3RInputError(f"{flag} {path}: no such file")
  try:
    with open(path) as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise Gen3RInputError(f"{flag} {path}: not valid JSON ({e}); fix the file") from e
  if not isinstance(data, dict):
    raise Gen3RInputError(f"{flag} {path}: expected a JSON object, got {type(data).__name__}")
  if nested:
    bad = [k for k, v in data.items() if not isinstance(v, dict)]
    if bad:
      raise Gen3RInputError(f"{flag} {path}: expected component -> config object, but {', '.join(bad)} "
                            "map(s) to something else")
  return data


def failed_report_path(out: str, component: str | None = None) -> str:
  """Where the report of a conversion that failed goes (beside ``out``: ``out`` itself is left untouched)."""
  out = os.path.abspath(out)
  return f"{out}.{component}.{FAILED_REPORT_SUFFIX}" if component else f"{out}.{FAILED_REPORT_SUFFIX}"


def _remove_failed_reports(out: str) -> None:
  for p in glob.glob(glob.escape(os.path.abspath(out)) + ".*" + FAILED_REPORT_SUFFIX):
    os.remove(p)


def _is_model_dir(d: str) -> bool:
  return all(n in (PARAMS_DIR, CONFIG_FILE, REPORT_FILE) or is_partial(n) for n in os.listdir(d))


def _is_bundle_dir(d: str) -> bool:
  known = {*COMPONENTS, *COPIED, INDEX_FILE, RECORD_FILE}
  return all(n in known or n.startswith("gen3r_") or is_partial(n) for n in os.listdir(d))


def _shape(src: TensorSource, key: str) -> tuple[int, ...] | None:
  for k in (key, "model." + key):
    if k in set(src.keys()):
      return src.shape(k)
  return None


def official_config(component: str, folder: str, src: TensorSource, override: dict | None) -> dict | None:
  """The config dict to build ``component`` from (``None`` = the released full size)."""
  cfg_path = os.path.join(folder, "config.json")
  official = {k: v for k, v in (_read_json(cfg_path) if os.path.exists(cfg_path) else {}).items()
              if k not in _META_KEYS}
  if component == "wan_vae":
    cfg = dict(override or {})
    if "base_dim" not in cfg and "inner" not in cfg:
      shape = _shape(src, "encoder.conv1.weight")  # [dim, 3, 3, 3, 3]
      if shape is not None:
        cfg["base_dim"] = int(shape[0])
    return cfg or None
  if component == "transformer":
    cfg = {**official, **(override or {})}
    shape = _shape(src, "img_emb.proj.0.weight")  # LayerNorm(clip_dim)
    return cfg, ({"clip_dim": int(shape[0])} if shape is not None else {})
  if component in ("text_encoder", "geo_adapter"):
    return {**official, **(override or {})} or None
  # clip_image_encoder, vggt: the official classes take no (or an informative) config
  return override or None


def _spec(component: str, config):
  name, _ = COMPONENTS[component]
  if component == "transformer":
    cfg, extra = config
    dit_cfg = WanDiTConfig.from_fixture(cfg, **extra)
    if dit_cfg.dim == 5120:
      name = "wan_dit_14b_control_camera"
    return wan_dit.spec(name, dit_cfg)
  return get_spec(name, config)


def _convert_into(spec, src: TensorSource, out: str, *, strict: bool, allow_nonfinite: bool, failed_report: str,
                  log: Callable) -> Report:
  """Convert into the fresh directory ``out`` (a staging directory) and verify what was written."""
  t0 = time.time()
  log(f"[convert] {spec.name}: {src.description} ({len(src)} tensors)")
  targets = param_targets(spec.abstract())
  try:
    params, report = convert(spec.table(spec.config), src, targets, strict=strict,
                             allow_nonfinite=allow_nonfinite)
  except ConversionError as e:
    e.report.write(failed_report)
    head, _, rest = str(e).partition("\n")
    raise ConversionError(f"{head} (every key's fate: {failed_report})" + (f"\n{rest}" if rest else ""),
                          e.report) from None
  os.makedirs(out, exist_ok=True)
  report.write(os.path.join(out, REPORT_FILE))
  save_params(out, params, config=spec.config.to_dict())
  verify_params(out, {p: t.shape for p, t in targets.items() if p in params})
  log(f"[convert] {report.summary()} ({time.time() - t0:.1f} s)")
  return report


def _status(report: Report) -> str:
  return "ok" if report.ok and not report.nonfinite else "forced"


def convert_model(name_or_spec, source: str | TensorSource, out: str, *, config: dict | None = None,
                  strict: bool = True, overwrite: bool = False, allow_nonfinite: bool = False,
                  log: Callable = print) -> Report:
  """Convert one network: ``source`` (file / directory / TensorSource) -> Orbax checkpoint in ``out``.

  Atomic: written beside ``out`` and swapped in when complete (module docstring); on failure ``out`` is unchanged
  and the report goes to :func:`failed_report_path`."""
  spec = get_spec(name_or_spec, config) if isinstance(name_or_spec, str) else name_or_spec
  src = open_source(source) if isinstance(source, str) else source
  with staged_dir(out, overwrite=overwrite, is_ours=_is_model_dir, what="checkpoint", log=log) as tmp:
    report = _convert_into(spec, src, tmp, strict=strict, allow_nonfinite=allow_nonfinite,
                           failed_report=failed_report_path(out), log=log)
  _remove_failed_reports(out)
  return report


def check_bundle_source(source_dir: str) -> None:
  """Refuse a checkpoint directory with a missing part, naming it."""
  if not os.path.isdir(source_dir):
    raise Gen3RInputError(f"{source_dir}: not a directory; pass the Gen3R checkpoint folder (the one holding "
                          "model_index.json)")
  missing = [c for c in (*COMPONENTS, *COPIED) if not os.path.isdir(os.path.join(source_dir, c))]
  if not os.path.exists(os.path.join(source_dir, "model_index.json")):
    missing.insert(0, "model_index.json")
  if missing:
    raise Gen3RInputError(f"{source_dir}: incomplete Gen3R checkpoint, missing {', '.join(missing)}; "
                          "download the full checkpoint directory")


def _copy_tree(src: str, dst: str) -> None:
  """Copy file contents only: the copy stays writable (and deletable) even when the source is read-only."""
  shutil.copytree(src, dst, copy_function=shutil.copyfile)
  for dirpath, _, _ in os.walk(dst):
    os.chmod(dirpath, 0o755)


def _inventory(root: str, sub: str) -> dict[str, int]:
  """``{relative path: size}`` of every file under ``root/sub`` (or of the file ``root/sub``)."""
  top = os.path.join(root, sub)
  if os.path.isfile(top):
    return {sub: os.path.getsize(top)}
  out = {}
  for dirpath, dirnames, filenames in os.walk(top):
    dirnames.sort()
    for fn in sorted(filenames):
      full = os.path.join(dirpath, fn)
      out[os.path.relpath(full, root).replace(os.sep, "/")] = os.path.getsize(full)
  return out


def write_record(directory: str, components: dict[str, dict]) -> dict:
  """Write the completeness record of a bundle (last: after every other file). ``components`` maps each
  component to ``{"status": one of STATUSES, ...}``; file sizes are read from ``directory``."""
  bad = {c: i.get("status") for c, i in components.items() if i.get("status") not in STATUSES}
  if bad:
    raise ValueError(f"record: components {bad} have no loadable status ({', '.join(STATUSES)})")
  record = {"format": RECORD_FORMAT, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "components": {},
            "copied": {c: _inventory(directory, c) for c in COPIED}, "index": _inventory(directory, INDEX_FILE)}
  for comp, info in components.items():
    files = _inventory(directory, comp)
    record["components"][comp] = {**info, "files": files, "bytes": sum(files.values())}
  with atomic_path(os.path.join(directory, RECORD_FILE)) as tmp, open(tmp, "w") as f:
    json.dump(record, f, indent=1)
  return record


def verify_record(directory: str) -> dict:
  """Check a bundle against its completeness record (module docstring); returns the record."""
  fix = _RECONVERT.format(d=directory)
  path = os.path.join(directory, RECORD_FILE)
  if not os.path.isfile(path):
    raise Gen3RInputError(f"{directory}: no completeness record ({RECORD_FILE}): its conversion did not finish or "
                          f"predates the record; {fix}")
  try:
    with open(path) as f:
      record = json.load(f)
    comps = record["components"]
  except (ValueError, KeyError, TypeError) as e:
    raise Gen3RInputError(f"{path}: unreadable completeness record ({e}); {fix}") from e
  for comp in COMPONENTS:
    info = comps.get(comp)
    if info is None:
      raise Gen3RInputError(f"{directory}: the completeness record has no {comp}; {fix}")
    if info.get("status") not in STATUSES:
      raise Gen3RInputError(f"{directory}: the conversion of {comp} did not succeed (status "
                            f"{info.get('status')!r}); {fix}")
  expected = {}
  for info in (*comps.values(), {"files": record.get("index", {})},
               *({"files": f} for f in record.get("copied", {}).values())):
    expected.update(info.get("files", {}))
  for rel, size in expected.items():
    full = os.path.join(directory, *rel.split("/"))
    if not os.path.isfile(full):
      raise Gen3RInputError(f"{directory}: {rel} is missing (listed in {RECORD_FILE}); the bundle was changed "
                            f"after conversion; {fix}")
    if os.path.getsize(full) != size:
      raise Gen3RInputError(f"{directory}: {rel} has {os.path.getsize(full)} bytes, the completeness record says "
                            f"{size}; the bundle was changed after conversion; {fix}")
  forced = [c for c in COMPONENTS if comps[c]["status"] == "forced"]
  if forced:
    warnings.warn(f"{directory}: {', '.join(forced)} converted with --nostrict / --allow_nonfinite despite problems "
                  f"(see their "
                  f"{REPORT_FILE})", stacklevel=3)
  return record


def convert_bundle(source_dir: str, out_dir: str, *, overrides: dict[str, dict] | None = None,
                   strict: bool = True, overwrite: bool = False, components=None, allow_nonfinite: bool = False,
                   log: Callable = print) -> dict[str, Report]:
  """Convert an official Gen3R checkpoint directory (see module docstring). Returns the reports.

  Atomic: ``out_dir`` changes only once the whole new bundle is written and verified."""
  check_bundle_source(source_dir)
  overrides = overrides or {}
  unknown = set(overrides) - set(COMPONENTS)
  if unknown:
    raise Gen3RInputError(f"overrides for unknown component(s) {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
  reports, index = {}, {"format": "gen3r_jax bundle v1", "source": os.path.abspath(source_dir), "components": {}}
  comps = list(components or COMPONENTS)
  bar = Progress(len(comps), "convert", unit="component", every=1)
  with staged_dir(out_dir, overwrite=overwrite, is_ours=_is_bundle_dir, what="checkpoint", log=log) as tmp:
    for comp in comps:
      folder = os.path.join(source_dir, comp)
      src = open_source(folder)
      spec = _spec(comp, official_config(comp, folder, src, overrides.get(comp)))
      reports[comp] = _convert_into(spec, src, os.path.join(tmp, comp), strict=strict,
                                    allow_nonfinite=allow_nonfinite,
                                    failed_report=failed_report_path(out_dir, comp), log=log)
      index["components"][comp] = {"model": spec.name, "class": COMPONENTS[comp][1],
                                   "counts": reports[comp].counts()}
      bar.update(extra=f"{comp} converted")
    for comp in COPIED:
      _copy_tree(os.path.join(source_dir, comp), os.path.join(tmp, comp))
    with open(os.path.join(tmp, INDEX_FILE), "w") as f:
      json.dump(index, f, indent=1)
    write_record(tmp, {c: {"status": _status(r), "model": index["components"][c]["model"],
                           "report_ok": r.ok, "counts": r.counts()} for c, r in reports.items()})
    if not components:
      verify_record(tmp)
  _remove_failed_reports(out_dir)
  log(f"[convert] wrote {out_dir}")
  return reports


def is_hub_spec(spec) -> bool:
  return isinstance(spec, str) and spec.startswith(HUB_PREFIX)


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
  """``"hf:owner/name@rev"`` -> ``("owner/name", "rev")`` (revision None when not given)."""
  body = spec[len(HUB_PREFIX):].strip()
  repo, _, rev = body.partition("@")
  ok = repo.count("/") == 1 and all(part.strip() for part in repo.split("/")) and (rev.strip() or not _)
  if not ok:
    raise Gen3RInputError(f"{spec!r}: expected hf:<owner>/<name>[@revision], e.g. hf:JaceyH919/Gen3R")
  return repo, (rev.strip() or None)


def hub_cache_root() -> str:
  return os.environ.get(HUB_CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gen3r_jax", "hub")


def download_hub_checkpoint(repo: str, revision: str | None = None, log: Callable = print) -> str:
  """The local snapshot folder of ``repo`` at ``revision`` (``huggingface_hub.snapshot_download``: from the local
  hub cache when it is there, else downloaded). Errors are one line naming the local-folder alternative."""
  spec = f"{HUB_PREFIX}{repo}" + (f"@{revision}" if revision else "")
  try:
    import huggingface_hub  # heavy optional dependency (extra [hub]): imported on first use
    from huggingface_hub import errors as hf_errors  # heavy optional dependency (extra [hub])
  except ImportError:
    raise Gen3RInputError(f"{spec}: loading from the hub needs huggingface_hub (pip install 'gen3r-jax[hub]'), "
                          + _LOCAL_ALTERNATIVE) from None
  missing = tuple(getattr(hf_errors, n) for n in ("LocalEntryNotFoundError", "IncompleteSnapshotError")
                  if hasattr(hf_errors, n))
  t0 = time.time()
  try:
    path = huggingface_hub.snapshot_download(repo, revision=revision)
  except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as e:
    what = "revision" if isinstance(e, hf_errors.RevisionNotFoundError) else "repository (or it is gated)"
    raise Gen3RInputError(f"{spec}: no such {what} on the hub; check the id, log in for a gated repository, "
                          + _LOCAL_ALTERNATIVE) from None
  except missing:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
    raise Gen3RInputError(f"{spec}: not in the local hub cache and {why}; download it where there is network "
                          f"(huggingface-cli download {repo}) " + _LOCAL_ALTERNATIVE) from None
  except (hf_errors.HfHubHTTPError, hf_errors.HFValidationError, OSError, ValueError) as e:
    raise Gen3RInputError(f"{spec}: the hub download failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); " + _LOCAL_ALTERNATIVE) from None
  log(f"[hub] {spec}: snapshot {path} ({time.time() - t0:.1f} s)")
  return path


def _bundle_complete(directory: str) -> bool:
  try:
    check_bundle(directory)
  except Gen3RInputError:
    return False
  return True


def _reusable(target: str, snapshot: str, in_cache: bool) -> bool:
  """A complete bundle converted from this snapshot (in the cache the folder name holds the commit already)."""
  if not _bundle_complete(target):
    return False
  if in_cache:
    return True
  with open(os.path.join(target, INDEX_FILE)) as f:
    return json.load(f).get("source") == os.path.abspath(snapshot)


def resolve_checkpoint(spec: str, *, out: str | None = None, overrides: dict | None = None, strict: bool = True,
                       allow_nonfinite: bool = False, overwrite: bool = False, log: Callable = print) -> str:
  """A converted bundle folder for ``spec``: a local folder is returned as it is; ``hf:<repo>[@rev]`` is fetched
  and converted once into ``out`` (default: the hub cache, module docstring), then reused while complete. The
  sampler, the web app and ``launch/convert.py --source hf:...`` all go through here. ``overwrite`` lets a
  conversion replace another bundle in ``out`` (the cache folder is always ours to replace)."""
  if not is_hub_spec(spec):
    return spec
  repo, revision = parse_hub_spec(spec)
  snapshot = download_hub_checkpoint(repo, revision, log=log)
  commit = os.path.basename(os.path.normpath(snapshot))
  target = out or os.path.join(hub_cache_root(), f"{repo.replace('/', '--')}@{commit}")
  if _reusable(target, snapshot, in_cache=not out):
    log(f"[hub] {spec}: reusing the converted bundle {target}")
    return target
  log(f"[hub] {spec}: converting {snapshot} -> {target}")
  convert_bundle(snapshot, target, overrides=overrides, strict=strict, overwrite=overwrite or not out,
                 allow_nonfinite=allow_nonfinite, log=log)
  return target


def convert_any(source: str, out: str | None, *, model: str | None = None, config: dict | None = None,
                overrides: dict | None = None, strict: bool = True, overwrite: bool = False,
                allow_nonfinite: bool = False, log: Callable = print):
  """What ``launch/convert.py`` does: one network (``model`` given), a whole Gen3R checkpoint directory, or
  ``hf:<repo>[@rev]`` (:func:`resolve_checkpoint`: into ``out`` or the hub cache; returns the bundle folder)."""
  if is_hub_spec(source):
    if model:
      raise Gen3RInputError("--model converts one local file or folder; hf:<repo> sources are whole Gen3R "
                            "checkpoints (drop --model)")
    return resolve_checkpoint(source, out=out, overrides=overrides, strict=strict, allow_nonfinite=allow_nonfinite,
                              overwrite=overwrite, log=log)
  if not out:
    raise Gen3RInputError("--out is required for a local --source (only hf:<repo> sources default to the hub "
                          "cache)")
  if not os.path.exists(source):
    raise Gen3RInputError(f"{source}: no such file or directory")
  if model:
    return convert_model(model, source, out, config=config, strict=strict, overwrite=overwrite,
                         allow_nonfinite=allow_nonfinite, log=log)
  if not os.path.isdir(source):
    raise Gen3RInputError(f"{source} is a file: pass --model <name> to convert one network, or the Gen3R "
                          "checkpoint directory to convert everything")
  return convert_bundle(source, out, overrides=overrides, strict=strict, overwrite=overwrite,
                        allow_nonfinite=allow_nonfinite, log=log)


@dataclasses.dataclass
class Gen3RBundle:
  """Every piece Gen3R sampling needs. Set a field to ``None`` to release that model's memory."""
  tokenizer: Any = None
  text_encoder: Any = None
  clip: Any = None
  transformer: Any = None
  vae: Any = None
  geo_adapter: Any = None
  vggt: Any = None
  scheduler_config: dict | None = None


_FIELDS = {"text_encoder": "text_encoder", "clip_image_encoder": "clip", "transformer": "transformer",
           "wan_vae": "vae", "geo_adapter": "geo_adapter", "vggt": "vggt"}


def read_scheduler_config(directory: str) -> dict:
  """The converted bundle's ``scheduler/scheduler_config.json`` (no weights read)."""
  return _read_json(os.path.join(directory, "scheduler", "scheduler_config.json"))


def check_bundle(directory: str) -> None:
  """Everything :func:`load_bundle` checks before reading weights: the parts and the completeness record."""
  refuse_partial(directory)
  if not os.path.isdir(directory):
    raise Gen3RInputError(f"checkpoint {directory!r} not found; convert one with `python launch/convert.py "
                          "--source <Gen3R checkpoint> --out <dir>`")
  if not os.path.exists(os.path.join(directory, INDEX_FILE)):
    raise Gen3RInputError(f"{directory}: no {INDEX_FILE}; this is not a converted gen3r_jax checkpoint (convert "
                          "the official one with `python launch/convert.py --source <dir> --out <dir>`)")
  missing = [c for c in (*COMPONENTS, *COPIED) if not os.path.isdir(os.path.join(directory, c))]
  if missing:
    raise Gen3RInputError(f"{directory}: checkpoint is missing {', '.join(missing)}; re-run the conversion")
  verify_record(directory)


def load_bundle(directory: str, *, dtype: str | None = None, param_dtype: str | None = None, mesh=None,
                rules=None, components=None, placement: str = "resident",
                log: Callable = lambda s: None) -> Gen3RBundle:
  """Load a converted bundle.

  Args:
    dtype: overrides every model's compute dtype (e.g. ``"bfloat16"``).
    param_dtype: overrides the stored parameter dtype (``"bfloat16"`` halves the weights' memory, as the official
      ``infer.py`` casting the pipeline does; None keeps the converted float32).
    mesh: shard every model's parameters over this mesh by their logical axes (``gen3r_jax.parallel.rules``);
      the DiT's denoising step then runs sharded (``generate`` reads the mesh from its parameters).
    rules: the sharding rules (:class:`gen3r_jax.parallel.rules.Rules`, e.g. ``Rules.from_config(config.sharding)``;
      default the library's); each component gets its ``model_rules`` (``transformer`` -> ``dit``, ...).
    placement: ``"resident"`` (parameters restored into device memory) or ``"sequential"`` (restored straight
      into host memory, same shardings; each sampling stage moves its model to the device and back, see
      :mod:`gen3r_jax.sampling.placement`).
  """
  pl.check_placement(placement)
  for name, value in (("dtype", dtype), ("param_dtype", param_dtype)):
    if value is not None and value not in DTYPES:
      raise Gen3RInputError(f"{name} {value!r} is not supported; use one of {', '.join(DTYPES)}")
  check_bundle(directory)
  rules = as_rules(rules)
  out = Gen3RBundle()
  out.tokenizer = UMT5Tokenizer.from_pretrained(os.path.join(directory, "tokenizer"))
  out.scheduler_config = read_scheduler_config(directory)
  host_kind = pl.host_memory_kind() if placement == "sequential" else None
  for comp in components or COMPONENTS:
    cls = model_class(COMPONENTS[comp][1])
    kw = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v}
    t0 = time.time()
    model = cls.from_checkpoint(os.path.join(directory, comp), mesh=mesh, rules=rules.for_model(comp),
                                memory_kind=host_kind, **kw)
    if placement == "sequential" and host_kind is None:     # no host memory space: numpy copies
      model = pl.to_host(model)
    setattr(out, _FIELDS[comp], model)
    log(f"[load] {comp}: {pl.fmt_bytes(pl.param_bytes(model))} "
        f"({'host' if placement == 'sequential' else 'device'}, {time.time() - t0:.1f} s)")
  return out


def save_random_bundle(out_dir: str, configs: dict[str, Any], *, tokenizer_dir: str, seed: int = 0,
                       scheduler_config: dict | None = None, postprocess: Callable[[str], None] | None = None,
                       log: Callable = print) -> str:
  """Write a bundle of random-weight models (for demos and tests): ``configs`` maps component -> config object.

  Weights are drawn on the host (:func:`gen3r_jax.models.init.random_params`), so no XLA init program has to compile.
  Like a conversion, the bundle is staged beside ``out_dir`` and swapped in (replacing a previous bundle there)
  with its completeness record; ``postprocess(staged_dir)`` may change the weights before the record is written.
  """
  index = {"format": "gen3r_jax bundle v1", "source": "random", "components": {}}
  with staged_dir(out_dir, overwrite=True, is_ours=_is_bundle_dir, what="bundle", log=log) as tmp:
    for i, comp in enumerate(COMPONENTS):
      cls = model_class(COMPONENTS[comp][1])
      model = random_params(cls, configs[comp], seed=seed + i)
      model.save_checkpoint(os.path.join(tmp, comp))
      verify_params(os.path.join(tmp, comp), {p: t.shape for p, t in param_targets(model).items()})
      index["components"][comp] = {"model": "random", "class": COMPONENTS[comp][1]}
      log(f"[bundle] random {comp} written")
    _copy_tree(tokenizer_dir, os.path.join(tmp, "tokenizer"))
    os.makedirs(os.path.join(tmp, "scheduler"))
    with open(os.path.join(tmp, "scheduler", "scheduler_config.json"), "w") as f:
      json.dump(scheduler_config or {"_class_name": "FlowUniPCMultistepScheduler", "num_train_timesteps": 1000,
                                     "shift": 1.0, "solver_order": 2, "solver_type": "bh2",
                                     "prediction_type": "flow_prediction", "predict_x0": True,
                                     "lower_order_final": True, "final_sigmas_type": "zero"}, f, indent=1)
    with open(os.path.join(tmp, INDEX_FILE), "w") as f:
      json.dump(index, f, indent=1)
    if postprocess is not None:
      postprocess(tmp)
    write_record(tmp, {c: {"status": "random", "model": "random"} for c in COMPONENTS})
    verify_record(tmp)
  return out_dir
