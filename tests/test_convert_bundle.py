"""Whole-checkpoint conversion of the official layout (pipeline_tiny/checkpoint) through launch/convert.py."""

import json
import os
import shutil

import numpy as np
import pytest

from gen3r_jax.apps.bundle import COMPONENTS, INDEX_FILE, check_bundle, convert_any, load_bundle
from gen3r_jax.errors import Gen3RInputError
from tests.conftest import fixture_path


def _overrides():
  cfg = json.load(open(os.path.join(fixture_path("pipeline_tiny"), "fixture.json")))["config"]
  return {k: cfg[k] for k in COMPONENTS}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("bundle") / "gen3r")
  src = os.path.join(fixture_path("pipeline_tiny"), "checkpoint")
  reports = convert_any(src, out, overrides=_overrides(), log=lambda *_: None)
  return out, reports


def test_bundle_converts_every_component(bundle):
  out, reports = bundle
  assert set(reports) == set(COMPONENTS)
  for comp, rep in reports.items():
    assert rep.ok and rep.counts()["unknown"] == 0 and rep.counts()["missing"] == 0, comp
    assert os.path.exists(os.path.join(out, comp, "conversion_report.json"))
  # the CLIP text tower and VGGT's mask token are ignored with reasons, never dropped silently
  clip_keys = reports["clip_image_encoder"].keys
  assert any(v["fate"] == "ignored" and "text" in v["reason"].lower() for v in clip_keys.values())
  index = json.load(open(os.path.join(out, INDEX_FILE)))
  assert set(index["components"]) == set(COMPONENTS)
  assert os.path.exists(os.path.join(out, "tokenizer", "spiece.model"))


def test_bundle_loads_with_the_weights(bundle):
  out, _ = bundle
  b = load_bundle(out)
  from safetensors.numpy import load_file
  src = load_file(os.path.join(fixture_path("pipeline_tiny"), "checkpoint", "transformer",
                               "diffusion_pytorch_model.safetensors"))
  np.testing.assert_array_equal(np.asarray(b.transformer.head.head.kernel[...]), src["head.head.weight"].T)
  assert b.vae.cfg.dim == 8  # read from the weights: the official loader hard-codes 96
  assert b.tokenizer is not None and b.scheduler_config["_class_name"] == "FlowUniPCMultistepScheduler"


def test_incomplete_checkpoints_are_refused(tmp_path, bundle):
  src = os.path.join(fixture_path("pipeline_tiny"), "checkpoint")
  broken = tmp_path / "broken"
  shutil.copytree(src, broken, ignore=shutil.ignore_patterns("vggt"))
  with pytest.raises(Gen3RInputError, match="missing vggt"):
    convert_any(str(broken), str(tmp_path / "out"), log=lambda *_: None)
  out, _ = bundle
  conv = tmp_path / "conv"
  shutil.copytree(out, conv, ignore=shutil.ignore_patterns("wan_vae"))
  with pytest.raises(Gen3RInputError, match="missing wan_vae"):
    check_bundle(str(conv))
  with pytest.raises(Gen3RInputError, match="not a converted gen3r_jax checkpoint"):
    check_bundle(str(tmp_path))


def _cli(*args):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, os.path.join(root, "launch", "convert.py"), *args],
                        capture_output=True, text=True, cwd=root, timeout=600)


def test_cli_single_model_and_errors(tmp_path):
  cfg = json.load(open(os.path.join(fixture_path("wan_vae_tiny"), "fixture.json")))["config"]
  (tmp_path / "cfg.json").write_text(json.dumps(cfg))
  args = ["--model=wan_vae", f"--source={fixture_path('wan_vae_tiny')}/weights.safetensors"]
  ok = _cli(*args, f"--out={tmp_path}/vae", f"--config={tmp_path}/cfg.json")
  assert ok.returncode == 0, ok.stderr
  assert os.path.exists(tmp_path / "vae" / "params") and "194 mapped" in ok.stdout
  # the same output again is refused without --overwrite
  again = _cli(*args, f"--out={tmp_path}/vae", f"--config={tmp_path}/cfg.json")
  assert again.returncode == 2 and "overwrite" in again.stderr
  # the full-size table refuses the tiny weights, naming keys, and writes the report beside the (absent) output
  full = _cli(*args, f"--out={tmp_path}/vae_full")
  assert full.returncode == 2 and full.stderr.startswith("error: conversion of wan_vae")
  assert "misshaped: model." in full.stderr and "more misshaped keys" in full.stderr
  assert os.path.exists(tmp_path / "vae_full.failed_conversion_report.json")
  assert not os.path.exists(tmp_path / "vae_full")
