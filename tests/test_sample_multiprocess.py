"""``launch/sample.py`` in two processes (``jax.distributed`` on CPU, gloo), one device each, the DiT CFG-parallel
over ``mesh=cfg=2`` (one guidance branch per process): the tiny demo sample equals the single-process one, and only
process 0 writes the outputs."""

import os
import socket
import subprocess
import sys

import numpy as np

from configs import demo_tiny
from gen3r_jax.apps import demo
from gen3r_jax.apps.sample import sample_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_sample_cfg_parallel_like_one(tmp_path):
  cache = str(tmp_path / "cache")
  demo.ensure_demo_bundle(cache, log=lambda *a: None)         # made once here (the processes then only read it)
  common = ["--config", os.path.join(ROOT, "configs", "demo_tiny.py"), f"--config.demo.cache_dir={cache}",
            "--config.num_frames=1", "--config.num_steps=2", "--config.progress=False"]
  ref_cfg = demo_tiny.get_config()
  ref_cfg.update(dict(out=str(tmp_path / "ref"), num_frames=1, num_steps=2, progress=False))
  ref_cfg.demo.cache_dir = cache
  sample_from_config(ref_cfg, log=lambda *a: None)

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = tmp_path / "out"
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "launch", "sample.py"), *common, f"--config.out={out}",
                             "--config.mesh=cfg=2", f"--coordinator_address=localhost:{port}", "--num_processes=2",
                             f"--process_id={i}", "--heartbeat_timeout_s=600", "--initialization_timeout_s=600",
                             "--shutdown_timeout_s=600"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    logs = [p.communicate(timeout=600)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f"process {i} (exit {p.returncode}):\n{log[-4000:]}"
  assert "mesh {'cfg': 2" in logs[0] and "[sample] wrote " in logs[0]
  assert "process 1 of 2: done; process 0 writes the outputs" in logs[1] and "wrote" not in logs[1]
  assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "ref"))
  got, want = (np.load(d / "latents.npz")["latents"] for d in (out, tmp_path / "ref"))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
