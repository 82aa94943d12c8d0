"""Bad converter input: one clear line naming the file or key (exit status 2 from launch/convert.py), never a
traceback or a silent cast; legacy (non-zip) .pth files are read."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file

from gen3r_jax import atomic
from gen3r_jax.apps.bundle import convert_model, failed_report_path, read_json_arg
from gen3r_jax.convert import ConversionError, convert, load_torch_weights, param_targets
from gen3r_jax.convert.registry import ModelSpec
from gen3r_jax.convert.sources import DictSource, open_source
from gen3r_jax.errors import Gen3RInputError
from tests.conftest import fixture_path
from tests.test_convert import Toy, ToyConfig, toy_state_dict, toy_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line(e):
  assert "\n" not in str(e.value), str(e.value)
  return str(e.value)


def test_empty_and_truncated_safetensors_name_the_file(tmp_path):
  sd = toy_state_dict(ToyConfig())
  good = tmp_path / "good.safetensors"
  save_file(sd, str(good))
  data = good.read_bytes()
  for name, content, message in [("empty", b"", "empty .safetensors file"),
                                 ("short", data[:5], "truncated .safetensors file"),
                                 ("header", data[:40], "truncated or not a .safetensors file"),
                                 ("half", data[:len(data) // 2], "truncated .safetensors file: tensor")]:
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(content)
    with pytest.raises(Gen3RInputError, match=message) as e:
      open_source(str(path))
    assert str(path) in _one_line(e)


def test_refused_pickle_says_the_file_holds_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))

  torch.save({"x": Evil()}, tmp_path / "evil.pth")
  with pytest.raises(Gen3RInputError, match="evil.pth: refused: the file holds code .*not only tensors") as e:
    open_source(str(tmp_path / "evil.pth"))
  _one_line(e)
  (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
  with pytest.raises(Gen3RInputError, match="junk.pth: truncated or not a PyTorch checkpoint"):
    open_source(str(tmp_path / "junk.pth"))


def test_legacy_pth_is_read(tmp_path):
  cfg = ToyConfig()
  sd = toy_state_dict(cfg)
  path = tmp_path / "legacy.pth"
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path, _use_new_zipfile_serialization=False)
  assert not zipfile.is_zipfile(path)
  m = Toy(cfg, rngs=nnx.Rngs(0))
  assert load_torch_weights(m, toy_table(cfg), open_source(str(path))).ok
  np.testing.assert_array_equal(np.asarray(m.fc.kernel[...]), sd["model.fc.weight"].T)


def test_lpips_two_file_form_with_the_legacy_heads_file(tmp_path):
  """The lpips package ships ``weights/v0.1/alex.pth`` in the legacy format."""
  from gen3r_jax.convert.lpips import load_lpips
  g = torch.Generator().manual_seed(0)
  convs = [(0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3)]
  backbone = {}
  for j, cin, cout, k in convs:
    backbone[f"features.{j}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.01
    backbone[f"features.{j}.bias"] = torch.zeros(cout)
  heads = {f"lin{k}.model.1.weight": torch.rand(1, c[2], 1, 1, generator=g) for k, c in enumerate(convs)}
  torch.save(backbone, tmp_path / "alexnet.pth")
  torch.save(heads, tmp_path / "alex.pth", _use_new_zipfile_serialization=False)
  model = load_lpips(f"{tmp_path / 'alexnet.pth'},{tmp_path / 'alex.pth'}")
  np.testing.assert_allclose(np.asarray(model.lins[1].kernel[...])[:, 0], heads["lin1.model.1.weight"].flatten())


def test_nonfinite_weights_are_refused_naming_the_key_unless_allowed():
  cfg = ToyConfig()
  sd = toy_state_dict(cfg)
  sd["model.conv.bias"][0] = np.nan
  sd["model.blocks.1.weight"][0, :2] = np.inf
  targets = param_targets(Toy(cfg, rngs=nnx.Rngs(0)))
  with pytest.raises(ConversionError, match="NaN/Inf in weight") as e:
    convert(toy_table(cfg), sd, targets)
  msg = _one_line(e)
  assert "model.conv.bias (1 NaN, 0 Inf)" in msg and "model.blocks.1.weight (0 NaN, 2 Inf)" in msg
  assert "--allow_nonfinite" in msg
  # --nostrict is about keys: it does not let NaN through
  with pytest.raises(ConversionError, match="NaN/Inf"):
    convert(toy_table(cfg), sd, targets, strict=False)
  params, report = convert(toy_table(cfg), sd, targets, allow_nonfinite=True)
  assert report.ok and len(report.nonfinite) == 2 and report.to_json()["nonfinite_allowed"]
  assert np.isnan(params[("conv", "bias")][0])


def test_integer_tensor_for_a_float_parameter_is_refused_naming_the_key():
  cfg = ToyConfig()
  sd = toy_state_dict(cfg)
  sd["model.fc.bias"] = np.arange(16, dtype=np.int64)
  targets = param_targets(Toy(cfg, rngs=nnx.Rngs(0)))
  with pytest.raises(ConversionError, match=r"integer tensor\(s\) where the model has a float parameter: "
                     r"model.fc.bias \(int64\)") as e:
    convert(toy_table(cfg), sd, targets)
  _one_line(e)
  _, report = convert(toy_table(cfg), sd, targets, strict=False)   # forced: reported, not silent
  assert not report.ok and report.wrong_dtype[0]["key"] == "model.fc.bias"


def test_failed_single_model_conversion_keeps_the_old_output(tmp_path):
  cfg = json.load(open(os.path.join(fixture_path("wan_vae_tiny"), "fixture.json")))["config"]
  src = os.path.join(fixture_path("wan_vae_tiny"), "weights.safetensors")
  out = str(tmp_path / "vae")
  convert_model("wan_vae", src, out, config=cfg, log=lambda *_: None)
  before = {f: os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs}
  sd = load_file(src)
  key = sorted(k for k in sd if k.endswith("weight"))[0]
  sd[key] = sd[key].copy()
  sd[key].flat[0] = np.nan
  save_file(sd, str(tmp_path / "nan.safetensors"))
  with pytest.raises(ConversionError, match=f"{key} \\(1 NaN"):
    convert_model("wan_vae", str(tmp_path / "nan.safetensors"), out, config=cfg, overwrite=True,
                  log=lambda *_: None)
  assert {f: os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs} == before
  assert json.load(open(failed_report_path(out)))["nonfinite"][0]["key"] == key
  assert sorted(os.listdir(tmp_path)) == ["nan.safetensors", "vae", "vae.failed_conversion_report.json"]


def test_read_only_output_directory(tmp_path, monkeypatch):
  cfg = ToyConfig()
  parent = tmp_path / "ro"
  parent.mkdir()
  if os.geteuid() != 0:                       # root ignores permissions: the monkeypatch below covers it
    parent.chmod(0o555)
    try:
      with pytest.raises(Gen3RInputError, match="cannot write .*ro: permission denied"):
        with atomic.staged_dir(str(parent / "out"), overwrite=False, is_ours=lambda d: True):
          pass
    finally:
      parent.chmod(0o755)

  def denied(path, *a, **k):
    raise PermissionError(13, "Permission denied", path)

  monkeypatch.setattr(atomic.os, "mkdir", denied)
  spec = ModelSpec("toy", cfg, Toy, toy_table)
  with pytest.raises(Gen3RInputError, match="cannot write .*ro: permission denied; choose a writable --out") as e:
    convert_model(spec, DictSource(toy_state_dict(cfg)), str(parent / "out"), log=lambda *_: None)
  _one_line(e)


def test_malformed_json_arguments_name_the_file(tmp_path):
  bad = tmp_path / "overrides.json"
  bad.write_text('{"wan_vae": {"base_dim": 8,}}')
  with pytest.raises(Gen3RInputError, match=f"--overrides {bad}: not valid JSON") as e:
    read_json_arg(str(bad), "--overrides", nested=True)
  _one_line(e)
  bad.write_text('{"wan_vae": 8}')
  with pytest.raises(Gen3RInputError, match="expected component -> config object, but wan_vae"):
    read_json_arg(str(bad), "--overrides", nested=True)
  with pytest.raises(Gen3RInputError, match="--config .*nope.json: no such file"):
    read_json_arg(str(tmp_path / "nope.json"), "--config")


def _cli(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", "convert.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=600)


def _error_line(r):
  assert r.returncode == 2, r.stderr
  assert "Traceback" not in r.stderr, r.stderr
  lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1 and lines[0] == r.stderr.strip().splitlines()[-1], r.stderr
  return lines[0]


def test_cli_bad_inputs_exit_2_with_one_error_line(tmp_path):
  cfg = json.load(open(os.path.join(fixture_path("wan_vae_tiny"), "fixture.json")))["config"]
  (tmp_path / "cfg.json").write_text(json.dumps(cfg))
  sd = load_file(os.path.join(fixture_path("wan_vae_tiny"), "weights.safetensors"))
  key = sorted(sd)[3]
  sd[key] = np.full_like(sd[key], np.inf)
  save_file(sd, str(tmp_path / "inf.safetensors"))
  line = _error_line(_cli("--model=wan_vae", f"--source={tmp_path}/inf.safetensors", f"--config={tmp_path}/cfg.json",
                          f"--out={tmp_path}/vae"))
  assert f"{key} (0 NaN, " in line and "--allow_nonfinite" in line
  assert not os.path.exists(tmp_path / "vae")
  (tmp_path / "over.json").write_text("{nope")
  line = _error_line(_cli(f"--source={fixture_path('pipeline_tiny')}/checkpoint", f"--out={tmp_path}/b",
                          f"--overrides={tmp_path}/over.json"))
  assert f"--overrides {tmp_path}/over.json: not valid JSON" in line
