"""Checkpoints from the hub against a local hub cache laid out here with the tiny official-layout checkpoint
(``HF_HUB_OFFLINE=1``): the conversion happens once, the next call (the CLI again, the sampler's resolution)
reuses the cached bundle; a repository missing from the cache offline is a one-line error naming the local-folder
alternative."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from gen3r_jax.apps import bundle
from gen3r_jax.apps.sample import sample_from_config
from gen3r_jax.errors import Gen3RInputError
from tests.conftest import fixture_path
from tests.test_convert_bundle import _overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "tiny-org/gen3r-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
  """``$HF_HUB_CACHE/models--tiny-org--gen3r-tiny/{refs/main, snapshots/<commit>/...}`` as huggingface_hub lays
  out a downloaded repository, and an empty gen3r_jax hub cache."""
  root = tmp_path_factory.mktemp("hub")
  repo = root / "hf" / f"models--{REPO.replace('/', '--')}"
  shutil.copytree(os.path.join(fixture_path("pipeline_tiny"), "checkpoint"), repo / "snapshots" / COMMIT,
                  copy_function=shutil.copyfile)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(COMMIT)
  (root / "overrides.json").write_text(json.dumps(_overrides()))
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(root / "hf"), GEN3R_HUB_CACHE=str(root / "cache"),
             JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
  return root, env


def _convert(env, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "convert.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_hub_checkpoint_converted_once_then_reused(hub, monkeypatch):
  root, env = hub
  expected = str(root / "cache" / f"tiny-org--gen3r-tiny@{COMMIT}")
  first = _convert(env, f"--source=hf:{REPO}", f"--overrides={root / 'overrides.json'}")
  assert first.returncode == 0, first.stderr[-3000:]
  assert f"bundle: {expected}" in first.stdout and "converting" in first.stdout
  assert first.stdout.count("[convert] ") >= len(bundle.COMPONENTS)
  bundle.check_bundle(expected)                         # complete, with its record
  record = os.path.join(expected, bundle.RECORD_FILE)
  mtime = os.path.getmtime(record)
  again = _convert(env, f"--source=hf:{REPO}@main", f"--overrides={root / 'overrides.json'}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "reusing the converted bundle" in again.stdout and "[convert] " not in again.stdout
  assert os.path.getmtime(record) == mtime
  # the sampler resolves hf: the same way (same process environment as the CLI): no conversion either
  for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "GEN3R_HUB_CACHE"):
    monkeypatch.setenv(k, env[k])
  logs = []
  assert bundle.resolve_checkpoint(f"hf:{REPO}@{COMMIT}", log=logs.append) == expected
  assert any("reusing" in line for line in logs) and not any("converting" in line for line in logs)
  # a killed conversion (no completeness record) is not reused: converted again
  os.remove(record)
  logs.clear()
  assert bundle.resolve_checkpoint(f"hf:{REPO}", overrides=_overrides(), log=logs.append) == expected
  assert any("converting" in line for line in logs) and os.path.isfile(record)


def test_hub_errors_are_one_line_with_the_local_alternative(hub, tmp_path, monkeypatch):
  root, env = hub
  r = _convert(env, "--source=hf:nobody/missing-repo")
  assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
  assert "not in the local hub cache and HF_HUB_OFFLINE is set" in r.stderr and "local path" in r.stderr
  r = _convert(env, "--source=hf:not-a-repo-id")
  assert r.returncode == 2 and "expected hf:<owner>/<name>[@revision]" in r.stderr
  for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "GEN3R_HUB_CACHE"):
    monkeypatch.setenv(k, env[k])
  with pytest.raises(Gen3RInputError, match="no such|not in the local hub cache"):
    bundle.resolve_checkpoint(f"hf:{REPO}@v9")
  from configs import sample as sample_config
  c = sample_config.get_config()
  c.checkpoint, c.prompt, c.images, c.out = "hf:nobody/missing-repo", "a room", "x.png", str(tmp_path / "o")
  with pytest.raises(Gen3RInputError, match="local path") as e:
    sample_from_config(c, log=lambda *_: None)
  assert "\n" not in str(e.value)
