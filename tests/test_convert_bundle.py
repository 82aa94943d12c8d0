"""Whole-checkpoint conversion of the official layout (pipeline_tiny/checkpoint) through launch/convert.py."""

import json
import os
import shutil

import numpy as np
import pytest

from gen3r_jax.convert.bundle import COMPONENTS, INDEX_FILE, check_bundle, load_bundle
from gen3r_jax.errors import Gen3RInputError
from launch import convert as convert_cli
from tests.conftest import fixture_path


def _overrides():
  cfg = json.load(open(os.path.join(fixture_path("pipeline_tiny"), "fixture.json")))["config"]
  return {k: cfg[k] for k in COMPONENTS}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("bundle") / "gen3r")
  src = os.path.join(fixture_path("pipeline_tiny"), "checkpoint")
  reports = convert_cli.run(src, out, overrides=_overrides(), log=lambda *_: None)
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
    convert_cli.run(str(broken), str(tmp_path / "out"), log=lambda *_: None)
  out, _ = bundle
  conv = tmp_path / "conv"
  shutil.copytree(out, conv, ignore=shutil.ignore_patterns("wan_vae"))
  with pytest.raises(Gen3RInputError, match="missing wan_vae"):
    check_bundle(str(conv))
  with pytest.raises(Gen3RInputError, match="not a converted gen3r_jax checkpoint"):
    check_bundle(str(tmp_path))


def test_cli_single_model_and_errors(tmp_path, capsys):
  from absl import flags
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["convert", "--model=wan_vae",
               f"--source={fixture_path('wan_vae_tiny')}/weights.safetensors", f"--out={tmp_path}/vae"])
  cfg = json.load(open(os.path.join(fixture_path("wan_vae_tiny"), "fixture.json")))["config"]
  (tmp_path / "cfg.json").write_text(json.dumps(cfg))
  flags.FLAGS.config = str(tmp_path / "cfg.json")
  assert convert_cli.main([]) == 0
  assert os.path.exists(tmp_path / "vae" / "params")
  # the same output again is refused without --overwrite
  assert convert_cli.main([]) == 1
  assert "overwrite" in capsys.readouterr().err
  # the full-size table refuses the tiny weights, naming keys
  flags.FLAGS.config = None
  flags.FLAGS.out = str(tmp_path / "vae_full")
  assert convert_cli.main([]) == 1
  err = capsys.readouterr().err
  assert "misshaped: model." in err and "more misshaped keys" in err
