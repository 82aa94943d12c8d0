"""One config vocabulary: a model's config sub-dict uses its dataclass's field names (``Config.from_dict``), the
sampler's options use ``SampleOptions``' names, and an old name (in a flag or a config file) is a one-line error
naming the new one, exit status 2."""

import dataclasses
import os
import subprocess
import sys

import pytest

from configs import base, cpu_debug, demo_tiny, gpu_h100, gpu_h200, renamed, sample as sample_config, tpu_v5
from gen3r_jax.apps.sample import OPTION_FIELDS, options_from_config
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.sampling.pipeline import SampleOptions
from gen3r_jax.training.stage2_task import model_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_FILES = (cpu_debug, gpu_h100, gpu_h200, tpu_v5)


def test_from_dict_over_a_preset_and_unknown_keys():
  cfg = WanDiTConfig.from_dict({"remat": "attention", "num_layers": 3}, base=WanDiTConfig.wan_1_3b())
  assert (cfg.dim, cfg.num_layers, cfg.remat) == (1536, 3, "attention")
  assert WanDiTConfig.from_dict({"dim": 64, "num_heads": 4}).dim == 64   # no base: the dataclass defaults
  with pytest.raises(Gen3RInputError) as e:
    WanDiTConfig.from_dict({"dit_remat": "full", "remat": "full"})
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("WanDiTConfig: unknown config field(s) 'dit_remat'; valid fields: ")
  assert "remat" in msg.split("valid fields:")[1] and "num_layers" in msg


def test_model_configs_come_from_the_sub_dicts_without_renaming():
  c = cpu_debug.get_config("stage2")
  c.model.dit.num_layers = 1                  # any WanDiTConfig field, same name
  c.model.dit.remat = "attention"
  c.model.vggt.remat = "full"
  c.model.clip.dtype = "bfloat16"            # a sub-dict's dtype wins over model.dtype
  m = model_configs(c.model)
  assert (m.dit.num_layers, m.dit.remat, m.vggt.remat) == (1, "attention", "full")
  assert (m.clip.dtype, m.text_encoder.dtype) == ("bfloat16", "float32")
  assert m.adapter.token_grid == c.model.adapter.token_grid == 8
  c.model.dit.dit_remat = "full"
  with pytest.raises(Gen3RInputError, match=r"^config\.model\.dit: WanDiTConfig: unknown config field\(s\) "
                                            r"'dit_remat'; valid fields: .*remat"):
    model_configs(c.model)


def test_every_shipped_config_uses_the_new_names():
  for mod in TRAIN_FILES:
    for entry in mod.ENTRIES:
      c = mod.get_config(entry)
      assert renamed.check_config(c, renamed.TRAIN) is None, (mod.__name__, entry)
      model_configs(c.model)                 # every sub-dict field is a dataclass field
  for c in (sample_config.get_config(), demo_tiny.get_config()):
    assert renamed.check_config(c, renamed.SAMPLE) is None
  # the renames point at fields that exist
  assert set(renamed.SAMPLE.values()) <= set(OPTION_FIELDS)
  models = model_configs(base.get_config().model)
  for new in renamed.TRAIN.values():
    _, sub, field = new.split(".")            # model.<sub-dict>.<field>: a field of that model's dataclass
    assert field in {f.name for f in dataclasses.fields(getattr(models, sub))}, new


def test_sampler_options_are_the_config_fields():
  c = demo_tiny.get_config()
  assert set(OPTION_FIELDS) <= set(c.keys())   # every SampleOptions field is settable, same name
  c.num_steps, c.guidance_scale, c.cameras, c.scheduler = 7, 1.0, "arc_left", "euler"
  opts = options_from_config(c)
  unset = {"cache_steps": "", "cache_threshold": None, "cache_max_skips": None, "cache_warmup": None}
  assert {k: c[k] for k in unset} == unset          # placeholders left unset keep SampleOptions' defaults
  assert opts == SampleOptions(**{name: c[name] for name in OPTION_FIELDS if name not in unset})
  c.cache_steps, c.cache_threshold = "1,2", 0.1
  assert (options_from_config(c).cache_steps, options_from_config(c).cache_threshold) == ("1,2", 0.1)
  c.task, c.cameras = "allview", "zoom_in"      # infer.py: allview's camera map is zero
  assert options_from_config(c).cameras == "free"


def _run(script, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("old, new", sorted(renamed.SAMPLE.items()))
def test_sample_cli_refuses_an_old_flag(old, new):
  r = _run("sample.py", "--config", os.path.join(ROOT, "configs", "demo_tiny.py"), f"--config.{old}=3")
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [
      f"error: --config.{old} was renamed to --config.{new} (one config vocabulary, CONTRIBUTING.md); pass "
      f"--config.{new}=... instead."]


def test_train_cli_refuses_old_flags_and_old_config_files(tmp_path):
  r = _run("train.py", "--config", os.path.join(ROOT, "configs", "cpu_debug.py"), "--workdir", str(tmp_path),
           "--config.model.dit_remat=full")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "error: --config.model.dit_remat was renamed to --config.model.dit.remat (one config vocabulary, "
      "CONTRIBUTING.md); pass --config.model.dit.remat=... instead."], r.stderr[-2000:]
  # a config file of the old vocabulary: refused before anything runs (nothing written to the workdir)
  old = tmp_path / "old_config.py"
  old.write_text("from configs import cpu_debug\n\n\ndef get_config():\n  c = cpu_debug.get_config('stage1')\n"
                 "  c.model.token_grid = 8\n  return c\n")
  work = tmp_path / "w"
  r = _run("train.py", "--config", str(old), "--workdir", str(work))
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "error: config field 'model.token_grid' was renamed to 'model.adapter.token_grid' (one config vocabulary, "
      "CONTRIBUTING.md); set model.adapter.token_grid instead."], r.stderr[-2000:]
  assert not work.exists()


def test_config_flags_the_config_lacks_are_one_line_errors_naming_the_dict_form(tmp_path):
  # a model field its sub-dict does not set (ml_collections raises a traceback): one line with the whole-sub-dict form
  # that works, the sub-dict's current fields kept; a misspelt key: the spelling
  work = tmp_path / "w"
  args = ("--config", os.path.join(ROOT, "configs", "tpu_v5.py:stage2_1p3b"), "--workdir", str(work), "--dry_run")
  r = _run("train.py", *args, "--config.model.dit.num_layers=2")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "error: --config.model.dit.num_layers: config.model.dit has no field 'num_layers' (a sub-dict holds only the "
      "fields its config sets: check the spelling); set a field it lacks by passing the whole sub-dict, which replaces "
      "it: --config.model.dit=\"{'attention': 'splash', 'remat': 'full', 'num_layers': 2}\""], r.stderr[-2000:]
  r = _run("train.py", *args, "--config.model.dit={'attention': 'splash', 'remat': 'full', 'num_layers': 2}")
  assert r.returncode == 0, r.stderr[-2000:]      # the suggested form runs (a 2-layer DiT: ~0.18B parameters)
  row = next(line for line in r.stdout.splitlines() if "stage2_1p3b" in line and line.startswith("|"))
  assert "| 0.18B " in row and "| splash " in row
  r = _run("train.py", *args, "--config.model.dit.attenton=xla")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "error: --config.model.dit.attenton: config.model.dit has no field 'attenton' (did you mean 'attention'?); "
      "check the spelling."], r.stderr[-2000:]
  r = _run("sample.py", "--config", os.path.join(ROOT, "configs", "demo_tiny.py"), "--config.num_stepz=2")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "error: --config.num_stepz: config has no field 'num_stepz' (did you mean 'num_steps'?); check the spelling."]
  assert not work.exists()


def test_sample_cli_refuses_an_old_config_file(tmp_path):
  old = tmp_path / "old_sample.py"
  old.write_text("from configs import demo_tiny\n\n\ndef get_config():\n  c = demo_tiny.get_config()\n"
                 "  c.steps = 2\n  return c\n")
  r = _run("sample.py", "--config", str(old), f"--config.out={tmp_path / 'o'}")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "error: config field 'steps' was renamed to 'num_steps' (one config vocabulary, CONTRIBUTING.md); set "
      "num_steps instead."], r.stderr[-2000:]
  assert not (tmp_path / "o").exists()


def test_calibrate_cache_cli_refuses_the_old_trajectory_flag():
  r = _run("calibrate_cache.py", "--checkpoint=x", "--out=y.json", "--trajectory=zoom_in")
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      "error: --trajectory was renamed to --cameras (one config vocabulary, CONTRIBUTING.md); pass --cameras=... "
      "instead."], r.stderr[-2000:]
