"""Stage 1 through the trainer on 8 fake CPU devices (``cpu_debug.py:stage1_full``: the tiny models at the release
frame size), its input checks, and the launcher (single process errors, two processes with jax.distributed on CPU).
The laptop-sized ``cpu_debug.py`` stage-1 entry runs as a subprocess in ``tests/test_train_debug_configs.py``."""

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import cpu_debug
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.parallel.rules import make_mesh
from gen3r_jax.training.loop import train
from gen3r_jax.training.stage1_task import make_task
from tests.helpers import one_train_step, set_nested

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage1_config(steps=6, every=3, entry="stage1_full"):
  """``configs/cpu_debug.py:stage1_full`` (560x560 frames, data 2 x fsdp 4) for the slow tests, or ``entry``."""
  c = cpu_debug.get_config(entry)
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


@pytest.mark.slow  # ~6 min on 2 cores (measured 342 s, 374 s): the random inits of VGGT, the VAE and the adapter,
# the 8-device compile and step (~260 s), the one-device compile and step (~80 s); eight 560x560 frames per step
def test_one_sharded_stage1_step_equals_single_device(tmp_path):
  # one step of the cpu_debug stage-1 task (tiny random VGGT and Wan VAE, the adapter; 8 one-frame clips of the
  # synthetic scenes: the smallest batch the mesh divides) on its data 2 x fsdp 4 mesh and on one device. The
  # one-device run takes the sharded run's task (frozen models, data) and initial parameters: the same numbers
  # without compiling the random inits twice
  def config(**mesh):
    c = stage1_config(steps=1)
    # Adam's first step moves each parameter by lr * g / (|g| + eps): with eps 1e-8 a gradient that is ~0 up to
    # float32 summation order can move its parameter by +lr or -lr; eps 1e-4 keeps the update continuous in g
    c.optimizer.eps = 1e-4
    c.mesh.update(mesh)
    return c

  c = config()
  mesh = make_mesh(dict(c.mesh))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "context": 1, "tensor": 1}
  task = make_task(c, mesh, str(tmp_path))
  a = one_train_step(c, task, mesh)
  start = lambda _, shardings: jax.device_put(a.before["params"], shardings)  # noqa: E731
  mesh1 = make_mesh(dict(config(data=1, fsdp=1).mesh), devices=jax.devices()[:1])
  b = one_train_step(config(data=1, fsdp=1), dataclasses.replace(task, init_params=start), mesh1)

  # the real sharding: the batch over data x fsdp, the adapter's parameters over fsdp (all but a few biases and
  # norm gains: 99.7% of the elements), each device holding a quarter of them
  assert a.batch["frames"].shape[:2] == (8, 1) and a.batch["frames"].sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_array_equal(np.asarray(a.batch["frames"]), np.asarray(b.batch["frames"]))
  params = jax.tree.leaves(a.state["params"])
  on_fsdp = [x for x in params if "fsdp" in jax.tree.leaves(tuple(x.sharding.spec))]
  assert sum(x.size for x in on_fsdp) > 0.95 * sum(x.size for x in params), [x.sharding.spec for x in params]
  assert all(x.addressable_shards[0].data.size * 4 == x.size for x in on_fsdp)

  # the same step: loss and every logged term (measured: <= 2e-7 relative), the gradient norm (8e-8 relative)
  assert bool(a.metrics["finite"]) and bool(b.metrics["finite"])
  assert sorted(a.metrics) == sorted(b.metrics) and "kl_loss" in a.metrics and "depth_loss" in a.metrics
  for k in a.metrics:
    np.testing.assert_allclose(np.float64(a.metrics[k]), np.float64(b.metrics[k]), rtol=1e-5, atol=1e-8, err_msg=k)
  sa, sb = jax.device_get(a.state), jax.device_get(b.state)
  # the gradients, as Adam's first moment (0.1 x the clipped gradient): float32 sums in another order differ by
  # up to 7e-8 here (1e-5 of the largest entry; so does pure data parallelism, data 8), which is a few 1e-4 of
  # the leaves whose gradient nearly cancels (~1e-5): an absolute tolerance on the scale of the whole gradient
  mu_a, mu_b = sa["opt_state"][1][0].mu, sb["opt_state"][1][0].mu
  scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(mu_b))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4 * scale), mu_a, mu_b)
  # the updated parameters: the step moves them by up to lr = 3e-3, the two runs agree to 8e-6 (measured)
  lr = c.optimizer.learning_rate
  moved = max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(sb["params"]),
                                                        jax.tree.leaves(a.before["params"])))
  assert moved > 0.5 * lr, moved
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=5e-5), sa["params"], sb["params"])


@pytest.mark.parametrize("change, message", [
    (dict(height=280, width=280), r"stage 1 needs 112x112 frames \(model.adapter.token_grid 8 x patch 14\)"),
    (dict(model__adapter__token_grid=6), r"model.adapter.token_grid must be a positive multiple of 4"),
    (dict(num_frames=4), r"num_frames must be 1 \+ 4k"),
    (dict(synthetic_scenes=0), r"set exactly one data source"),
    (dict(validate="lenient"), r"validate must be one of \('strict', 'skip'\)"),
    (dict(validate_images="some"), r"validate_images must be one of \('all', 'first'\)"),
])
def test_stage1_bad_data_config_is_a_clear_error(tmp_path, change, message):
  c = stage1_config(entry="stage1")
  set_nested(c, **{k if "__" in k else f"data__{k}": v for k, v in change.items()})
  with pytest.raises(Gen3RInputError, match=message):
    train(c, str(tmp_path))


def _launch(args, env_extra=None, stdout=subprocess.PIPE):
  path = os.pathsep.join([ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
  env = dict(os.environ, PYTHONPATH=path, **(env_extra or {}))
  env.pop("XLA_FLAGS", None)   # the launcher sets the fake device count from the config
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "train.py"), *args], env=env,
                          stdout=stdout, stderr=subprocess.STDOUT, text=True)


def _run_together(arg_lists, log_dir, timeout_s):
  """Run one launcher per argument list at once (output to files: no pipe can fill up and block a process) and
  wait for all; the first process that fails ends the others at once (they would wait for it until a jax timeout)
  and ``timeout_s`` bounds the whole. Returns ``[(exit status, output)]`` (-9: ended here)."""
  paths = [os.path.join(log_dir, f"process_{i}.log") for i in range(len(arg_lists))]
  logs = [open(p, "w") for p in paths]
  procs = [_launch(a, stdout=f) for a, f in zip(arg_lists, logs)]
  deadline = time.monotonic() + timeout_s
  try:
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
      if any(p.returncode not in (None, 0) for p in procs):
        break
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=60)
    for f in logs:
      f.close()
  outs = []
  for path in paths:
    with open(path) as f:
      outs.append(f.read())
  if time.monotonic() >= deadline:
    outs = [o + f"\n[test: ended after {timeout_s} s]" for o in outs]
  return [(p.returncode, o) for p, o in zip(procs, outs)]


def test_launcher_bad_mesh_exits_2_with_message(tmp_path):
  p = _launch(["--config", os.path.join(ROOT, "configs", "cpu_debug.py"), "--workdir", str(tmp_path),
               "--config.task=toy", "--config.mesh.data=3", "--config.mesh.fsdp=1"])
  out, _ = p.communicate(timeout=300)
  assert p.returncode == 2, out
  assert "does not divide the 8 devices" in out


def test_launcher_partial_multiprocess_flags_exit_2_with_message(tmp_path):
  # --process_id alone would have run a second "process 0" writing the same checkpoints
  p = _launch(["--config", os.path.join(ROOT, "configs", "cpu_debug.py"), "--workdir", str(tmp_path),
               "--config.task=toy", "--process_id=1"])
  out, _ = p.communicate(timeout=300)
  assert p.returncode == 2, out
  assert ("error: a multi-process run needs --coordinator_address, --num_processes and --process_id together "
          "(missing --coordinator_address, --num_processes)") in out
  assert not os.listdir(tmp_path) or os.listdir(tmp_path) == ["train.1.log"], os.listdir(tmp_path)


def test_two_processes_train_together_on_cpu(tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  work = tmp_path / "work"
  # alone it takes ~11 s; on a loaded 2-core box much longer: jax's coordination timeouts (heartbeat 100 s by
  # default) are raised to the test's own bound, which also ends both processes as soon as one fails
  common = ["--config", os.path.join(ROOT, "configs", "cpu_debug.py"), "--workdir", str(work),
            "--config.task=toy", "--config.host_device_count=4", "--config.num_train_steps=4",
            "--config.checkpoint.every=2", "--config.tensorboard=False",
            f"--coordinator_address=localhost:{port}", "--num_processes=2", "--heartbeat_timeout_s=600",
            "--initialization_timeout_s=600", "--shutdown_timeout_s=600"]
  results = _run_together([common + [f"--process_id={i}"] for i in range(2)], str(tmp_path), timeout_s=600)
  outs = [out for _, out in results]
  for i, (code, out) in enumerate(results):
    lines = [l for l in out.splitlines() if not l.startswith(("I1", "W1"))]   # drop absl info/warning lines
    assert code == 0, f"process {i} (exit {code}):\n" + "\n".join(lines[:40] + ["..."] + lines[-20:])
    assert f"process {i} of 2" in out
  assert "done: step 4" in outs[0]
  assert os.path.isdir(work / "checkpoints" / "4")
