"""Atomic conversion: a failed or killed run leaves the previous output byte-identical and loadable; the bundle's
completeness record is written last and checked by load_bundle."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gen3r_jax import atomic
from gen3r_jax.apps import bundle as B
from gen3r_jax.errors import Gen3RInputError
from tests.conftest import fixture_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _src():
  return os.path.join(fixture_path("pipeline_tiny"), "checkpoint")


def _overrides():
  cfg = json.load(open(os.path.join(fixture_path("pipeline_tiny"), "fixture.json")))["config"]
  return {k: cfg[k] for k in B.COMPONENTS}


def _digest(root):
  """Every path under ``root`` -> sha256 of its bytes (directories -> None)."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = None
    for f in filenames:
      with open(os.path.join(dirpath, f), "rb") as fh:
        out[os.path.relpath(os.path.join(dirpath, f), root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("atomic") / "gen3r")
  B.convert_any(_src(), out, overrides=_overrides(), log=lambda *_: None)
  return out


@pytest.fixture
def old_bundle(converted, tmp_path):
  out = str(tmp_path / "gen3r")
  shutil.copytree(converted, out)
  return out


def test_record_is_written_last_and_lists_every_file(converted):
  record = json.load(open(os.path.join(converted, B.RECORD_FILE)))
  assert set(record["components"]) == set(B.COMPONENTS)
  for comp, info in record["components"].items():
    assert info["status"] == "ok" and info["report_ok"], comp
    assert f"{comp}/conversion_report.json" in info["files"] and info["bytes"] > 0
  assert "tokenizer/spiece.model" in record["copied"]["tokenizer"]
  newest = max(os.path.getmtime(os.path.join(converted, *rel.split("/")))
               for info in record["components"].values() for rel in info["files"])
  assert os.path.getmtime(os.path.join(converted, B.RECORD_FILE)) >= newest
  assert B.verify_record(converted)["format"] == B.RECORD_FORMAT


def test_failure_in_the_second_component_leaves_the_old_bundle(old_bundle, monkeypatch):
  before = _digest(old_bundle)
  real, calls = B.save_params, []

  def failing(*a, **k):
    calls.append(a[0])
    if len(calls) == 2:
      raise RuntimeError("disk on fire")
    return real(*a, **k)

  monkeypatch.setattr(B, "save_params", failing)
  with pytest.raises(RuntimeError, match="disk on fire"):
    B.convert_any(_src(), old_bundle, overrides=_overrides(), overwrite=True, log=lambda *_: None)
  monkeypatch.undo()
  assert ".partial-" in calls[0]                             # written beside the old bundle, never into it
  assert _digest(old_bundle) == before
  assert os.listdir(os.path.dirname(old_bundle)) == ["gen3r"]   # the staging directory is gone
  b = B.load_bundle(old_bundle, components=["wan_vae"])
  assert b.vae is not None


def test_sigkill_during_the_write_leaves_the_old_bundle(old_bundle, tmp_path):
  before = _digest(old_bundle)
  ready = tmp_path / "ready"
  script = f"""
import json, sys, time
sys.path.insert(0, {ROOT!r})
from gen3r_jax.apps import bundle as B
real, n = B.save_params, []
def slow(*a, **k):
  n.append(1)
  if len(n) == 2:                      # the first component is written: block inside the second one
    open({str(ready)!r}, "w").close()
    time.sleep(600)
  return real(*a, **k)
B.save_params = slow
B.convert_any({_src()!r}, {old_bundle!r}, overrides=json.loads({json.dumps(_overrides())!r}), overwrite=True,
              log=lambda *a: None)
"""
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  try:
    deadline = time.time() + 240
    while not ready.exists():
      assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
      assert time.time() < deadline, "the conversion never reached its second component"
      time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert _digest(old_bundle) == before
  leftover = os.path.join(os.path.dirname(old_bundle), f".gen3r.partial-{proc.pid}")
  assert os.path.isdir(leftover) and os.path.isdir(os.path.join(leftover, "text_encoder"))
  with pytest.raises(Gen3RInputError, match="unfinished conversion") as e:
    B.load_bundle(leftover)
  assert "\n" not in str(e.value)
  B.check_bundle(old_bundle)
  assert B.load_bundle(old_bundle, components=["text_encoder"]).text_encoder is not None
  atomic.remove_leftovers(old_bundle, log=lambda *_: None)      # the next run cleans up after a dead process
  assert not os.path.exists(leftover)


def test_bundle_without_a_complete_record_is_refused(old_bundle):
  record_path = os.path.join(old_bundle, B.RECORD_FILE)
  record = json.load(open(record_path))
  os.rename(record_path, record_path + ".bak")
  with pytest.raises(Gen3RInputError, match="no completeness record.*launch/convert.py") as e:
    B.load_bundle(old_bundle)
  assert "\n" not in str(e.value)
  os.rename(record_path + ".bak", record_path)
  # a component whose conversion did not succeed
  bad = json.loads(json.dumps(record))
  bad["components"]["vggt"]["status"] = "failed"
  json.dump(bad, open(record_path, "w"))
  with pytest.raises(Gen3RInputError, match="conversion of vggt did not succeed.*launch/convert.py"):
    B.check_bundle(old_bundle)
  # a file changed after the conversion (e.g. a component replaced by hand)
  json.dump(record, open(record_path, "w"))
  with open(os.path.join(old_bundle, "wan_vae", "config.json"), "a") as f:
    f.write(" ")
  with pytest.raises(Gen3RInputError, match="wan_vae/config.json has .* bytes, the completeness record says"):
    B.check_bundle(old_bundle)


def test_overwrite_replaces_only_when_complete_and_never_foreign_folders(old_bundle, tmp_path):
  with pytest.raises(Gen3RInputError, match="already holds a converted checkpoint; pass --overwrite"):
    B.convert_any(_src(), old_bundle, overrides=_overrides(), log=lambda *_: None)
  B.convert_any(_src(), old_bundle, overrides=_overrides(), overwrite=True, log=lambda *_: None)
  assert sorted(os.listdir(tmp_path)) == ["gen3r"]
  B.check_bundle(old_bundle)
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(Gen3RInputError, match="holds files that are not a gen3r_jax checkpoint"):
    B.convert_any(_src(), str(foreign), overrides=_overrides(), overwrite=True, log=lambda *_: None)
  assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_in_with_and_without_rename_exchange(tmp_path, monkeypatch, exchange):
  if not exchange:
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
  target, new = tmp_path / "out", tmp_path / ".out.partial-1"
  target.mkdir()
  (target / "old.txt").write_text("old")
  new.mkdir()
  (new / "new.txt").write_text("new")
  atomic.swap_in(str(new), str(target))
  assert os.listdir(target) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["out"]
  # a kill between the two renames of the fallback: the set-aside old output is put back by the next run
  os.rename(target, tmp_path / ".out.old-999999999")
  atomic.remove_leftovers(str(target), log=lambda *_: None)
  assert os.listdir(target) == ["new.txt"]
