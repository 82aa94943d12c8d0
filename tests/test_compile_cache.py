"""The persistent compilation cache: a program compiled by one process is a cache hit in the next (JAX's own
monitoring events, not timing), through both entry points (``cli.run_tool`` for the launchers and
``gen3r_jax.enable_compilation_cache()`` for library users), and ``GEN3R_JAX_CACHE=off`` turns it off."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))

def work():
  f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0 + 1.0)
  return float(f(jnp.arange(12.0).reshape(3, 4)))

mode = sys.argv[1]
if mode == "tool":                     # what every launch/ script does
  from gen3r_jax.apps.cli import run_tool
  out = {}
  assert run_tool(lambda: out.setdefault("value", work())) == 0
  value, where = out["value"], jax.config.jax_compilation_cache_dir
else:                                  # a library user; something compiled before the call
  jnp.ones(3).block_until_ready()
  import gen3r_jax
  where = gen3r_jax.enable_compilation_cache()
  value = work()
hits = events.count("/jax/compilation_cache/cache_hits")
misses = events.count("/jax/compilation_cache/cache_misses")
print("RESULT " + json.dumps(dict(value=value, where=where, hits=hits, misses=misses)))
"""


def _run(mode, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", GEN3R_JAX_CACHE=cache)
  env.pop("XLA_FLAGS", None)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  r = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):]), r.stdout


def _entries(path):
  return sorted(f for _, _, files in os.walk(path) for f in files)


def test_second_process_hits_the_cache(tmp_path):
  cache = str(tmp_path / "xla")
  first, stdout = _run("tool", cache)
  assert f"XLA compilation cache: {cache}" in stdout            # the launchers say where it is
  assert first["where"] == cache and first["hits"] == 0 and first["misses"] >= 1
  written = _entries(cache)
  assert written, "the first process wrote no cache entry"
  second, _ = _run("library", cache)
  assert second["where"] == cache
  assert second["hits"] >= 1, second                           # the jitted function came from the cache
  assert second["value"] == first["value"]


def test_off_disables_the_cache(tmp_path):
  out, _ = _run("library", "off")
  assert out["where"] is None and out["hits"] == 0 and out["misses"] == 0
  assert not os.path.exists(tmp_path / "xla")
