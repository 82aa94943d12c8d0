"""The README's debug training commands (``configs/cpu_debug.py`` stage 1 and ``:stage2``) run as subprocesses of
``launch/train.py``, as a user runs them: they finish (exit 0, the checkpoint of the last step, TensorBoard events,
a finite loss logged at every step) within the laptop budget of peak resident memory (4 GiB), measured by a fresh
wrapper process with ``getrusage(RUSAGE_CHILDREN)``. The console (not a terminal here) holds progress lines and no
library INFO lines (Orbax, the metric writer: those go to ``<workdir>/train.log``) and no ``\r``. Fewer steps than
configured keep CI short; the full runs' times are in the config's docstring."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEAK_RSS_LIMIT_GIB = 4.0

# a fresh process whose only child is the training run: RUSAGE_CHILDREN is that run's peak resident set
WRAPPER = r"""
import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
json.dump({"rc": rc, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, open(sys.argv[1], "w"))
"""


def run_debug_entry(entry: str, workdir, *overrides: str, timeout: int = 900):
  """``launch/train.py --config configs/cpu_debug.py[:entry]`` under the wrapper: ``(exit status, peak RSS in GiB,
  output)``."""
  config = os.path.join(ROOT, "configs", "cpu_debug.py") + (f":{entry}" if entry else "")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + ([os.environ["PYTHONPATH"]]
                                                             if os.environ.get("PYTHONPATH") else [])))
  env.pop("XLA_FLAGS", None)   # the launcher sets the fake device count from the config
  stats = os.path.join(str(workdir), "rusage.json")
  p = subprocess.run([sys.executable, "-c", WRAPPER, stats, sys.executable, os.path.join(ROOT, "launch", "train.py"),
                      "--config", config, "--workdir", os.path.join(str(workdir), "run"), *overrides],
                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
  with open(stats) as f:
    usage = json.load(f)
  assert p.returncode == 0, p.stdout[-3000:]
  return usage["rc"], usage["maxrss_kib"] / 2**20, p.stdout


# 3 steps each, measured on the shared 2-core, 24 GB box (2026-12-04, jax 0.10.2): stage 1 56 s, stage 2 47 s (up to
# ~90 s with other test runs loading the box), peak RSS 2.1-2.7 GiB; most of it the first compile and the first
# checkpoint
@pytest.mark.parametrize("entry, steps", [("", 3), ("stage2", 3)])
def test_debug_entry_finishes_within_laptop_memory(tmp_path, entry, steps):
  rc, peak_gib, out = run_debug_entry(entry, tmp_path, f"--config.num_train_steps={steps}",
                                      f"--config.checkpoint.every={steps}")
  tail = "\n".join(l for l in out.splitlines() if not l.startswith(("I1", "W1")))[-3000:]
  assert rc == 0, f"exit {rc}:\n{tail}"
  assert f"done: step {steps}" in out, tail
  # a readable console: progress with the loss, throughput and ETA; no INFO chatter; no \r off a terminal
  info = [l for l in out.splitlines() if re.match(r"I\d{4} ", l)]
  assert not info, info[:5]
  assert "\r" not in out
  progress = re.findall(r"\[train\] step (\d+)/\d+ .*examples/s .*ETA .*loss [-+0-9.eE]+", out)
  assert [int(k) for k in progress] == list(range(1, steps + 1)), out[-2000:]
  run = tmp_path / "run"
  log = (run / "train.log").read_text()
  assert "orbax" in log.lower() or "checkpoint" in log.lower(), log[-2000:]
  assert (run / "checkpoints" / str(steps) / "state").is_dir(), sorted(os.listdir(run / "checkpoints"))
  events = [f for f in os.listdir(run) if f.startswith("events.out.tfevents")]
  assert events and all(os.path.getsize(run / f) > 0 for f in events), os.listdir(run)
  # one log line per step (log_every 1) with a finite loss
  losses = {int(s): float(v) for s, v in re.findall(r"\] \[(\d+)\] .*?\bloss=([-+0-9.eE]+|nan|inf)", log)}
  assert sorted(losses) == list(range(1, steps + 1)), losses
  assert all(math.isfinite(v) for v in losses.values()), losses
  assert peak_gib <= PEAK_RSS_LIMIT_GIB, f"peak resident memory {peak_gib:.2f} GiB > {PEAK_RSS_LIMIT_GIB} GiB"
  print(f"cpu_debug.py{':' + entry if entry else ''}: {steps} steps, peak RSS {peak_gib:.2f} GiB")


def test_token_grid_is_a_config_value():
  # the debug entries' 112x112 frames: VGGT's 8x8 token grid <-> the adapter's 14x14 latents, same arithmetic as the
  # release's 40 <-> 70 (g -> 1.75 g -> 2 g -> stride-2 conv -> g)
  import jax.numpy as jnp
  from gen3r_jax.errors import Gen3RInputError
  from gen3r_jax.models.geometry_adapter.model import GeometryAdapter, GeometryAdapterConfig
  from gen3r_jax.models.init import random_params
  from gen3r_jax.training.stage1_task import model_configs
  from configs import cpu_debug
  c = cpu_debug.get_config("stage1")
  vggt, _, acfg = model_configs(c.model)
  assert (acfg.token_grid, acfg.latent_grid, acfg.out_resize) == (8, 14, 16)
  assert c.data.height == c.data.width == acfg.token_grid * vggt.patch_size == 112
  assert model_configs(cpu_debug.get_config("stage1_full").model)[2].latent_grid == 70
  assert GeometryAdapterConfig().token_grid == 40 and GeometryAdapterConfig().out_resize == 80
  adapter = random_params(GeometryAdapter, acfg)
  post = adapter.encode(jnp.ones((1, 1, 8, 8, acfg.input_dim)) * 0.1)
  assert post.mean.shape == (1, 1, 14, 14, 16)
  assert adapter.decode(post.mean).shape == (1, 1, 8, 8, acfg.output_dim)
  with pytest.raises(Gen3RInputError, match="only accepts a 8x8 token grid"):
    adapter.encode(jnp.ones((1, 1, 40, 40, acfg.input_dim)))
  with pytest.raises(ValueError, match="token_grid must be a positive multiple of 4"):
    GeometryAdapterConfig(token_grid=10)
