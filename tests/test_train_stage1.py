"""Stage 1 through the trainer on 8 fake CPU devices (cpu_debug config), its input checks, and the launcher
(single process errors, two processes with jax.distributed on CPU)."""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.training.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import cpu_debug  # noqa: E402


def stage1_config(steps=6, every=3):
  c = cpu_debug.get_config()
  c.tensorboard = False
  c.num_train_steps = steps
  c.checkpoint.every = every
  c.checkpoint.keep = 2
  c.profile.steps = 0
  return c


@pytest.mark.slow  # ~4 min on 16 cores: eight 560x560 clips per step through VGGT, the VAE and the adapter
def test_stage1_debug_run_learns_writes_checkpoints_and_resumes_identically(tmp_path):
  full_dir = str(tmp_path / "full")
  full = train(stage1_config(), full_dir)
  loss = {h["step"]: h["loss"] for h in full.history}
  assert all(np.isfinite(v) for v in loss.values())
  assert loss[6] < 0.75 * loss[1], loss                  # the tiny run learns clearly
  assert full.last_checkpoint == 6
  for key in ("image_token_loss", "camera_loss", "depth_loss", "point_loss", "kl_loss", "kl_weight"):
    assert key in full.history[0]
  # "kill" after step 3: a copy of the run with only checkpoint 3 left, then restart from it
  resumed_dir = str(tmp_path / "resumed")
  shutil.copytree(full_dir, resumed_dir, ignore=shutil.ignore_patterns("6", "events*"))
  resumed = train(stage1_config(), resumed_dir)
  rl = {h["step"]: h["loss"] for h in resumed.history}
  assert sorted(rl) == [4, 5, 6]
  np.testing.assert_array_equal([rl[s] for s in (4, 5, 6)], [loss[s] for s in (4, 5, 6)])


@pytest.mark.parametrize("change, message", [
    (dict(height=280, width=280), r"stage 1 needs 560x560 frames"),
    (dict(num_frames=4), r"num_frames must be 1 \+ 4k"),
    (dict(synthetic_scenes=0), r"set exactly one data source"),
])
def test_stage1_bad_data_config_is_a_clear_error(tmp_path, change, message):
  c = stage1_config()
  for k, v in change.items():
    c.data[k] = v
  with pytest.raises(Gen3RInputError, match=message):
    train(c, str(tmp_path))


def _launch(args, env_extra=None, timeout=600):
  path = os.pathsep.join([ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
  env = dict(os.environ, PYTHONPATH=path, **(env_extra or {}))
  env.pop("XLA_FLAGS", None)   # the launcher sets the fake device count from the config
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_launcher_bad_mesh_exits_2_with_message(tmp_path):
  p = _launch(["--config", os.path.join(ROOT, "configs", "cpu_debug.py"), "--workdir", str(tmp_path),
               "--config.task=toy", "--config.mesh.data=3", "--config.mesh.fsdp=1"])
  out, _ = p.communicate(timeout=300)
  assert p.returncode == 2, out
  assert "does not divide the 8 devices" in out


def test_two_processes_train_together_on_cpu(tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  common = ["--config", os.path.join(ROOT, "configs", "cpu_debug.py"), "--workdir", str(tmp_path),
            "--config.task=toy", "--config.host_device_count=4", "--config.num_train_steps=4",
            "--config.checkpoint.every=2", "--config.tensorboard=False",
            f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  procs = [_launch(common + [f"--process_id={i}"]) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outs)):
    lines = [l for l in out.splitlines() if not l.startswith(("I1", "W1"))]   # drop absl info/warning lines
    assert p.returncode == 0, f"process {i} (exit {p.returncode}):\n" + "\n".join(lines[:40] + ["..."] + lines[-20:])
    assert f"process {i} of 2" in out
  assert "done: step 4" in outs[0]
  assert os.path.isdir(tmp_path / "checkpoints" / "4")
