"""Gen3R in the browser: control image(s), task, prompt, trajectory, steps, guidance and seed in; progress per
stage and per step; the RGB and depth videos, the point cloud in 3D and every output file out (gradio).

    python launch/app.py                                   # the tiny demo bundle (random weights, CPU is fine)
    python launch/app.py --checkpoint ckpt/gen3r           # a converted bundle (launch/convert.py)
    python launch/app.py --checkpoint ckpt/gen3r --placement sequential --param_dtype bfloat16   # 24 GiB GPUs
    python launch/app.py --host 0.0.0.0 --port 7861        # reachable from other machines

Then open the printed URL (default http://localhost:7860). On a remote GPU box keep ``--host 127.0.0.1`` and
forward the port: ``ssh -N -L 7860:localhost:7860 user@gpu-box``. Each Generate writes a run folder under
``--out`` (the sampler's output directory: ``python launch/view.py <run folder>`` shows it with cameras and
masks). Needs the optional extra: ``pip install -e ".[app]"``. All logic lives in :mod:`gen3r_jax.apps.webapp`;
sampling is :func:`gen3r_jax.apps.sample.sample_from_config`, as ``launch/sample.py``. Bad flags (a missing
checkpoint folder, a taken port) print a one-line error and exit with status 2 before the server starts.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

_CKPT = flags.DEFINE_string("checkpoint", "", "converted bundle folder (launch/convert.py); empty: the tiny demo")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to serve on (0.0.0.0: every interface)")
_PORT = flags.DEFINE_integer("port", 7860, "port to serve on")
_OUT = flags.DEFINE_string("out", os.path.join("outputs", "app"), "folder for the run folders")
_DTYPE = flags.DEFINE_string("dtype", "", "compute dtype (default: the config's: bfloat16, float32 on the demo)")
_PARAM_DTYPE = flags.DEFINE_string("param_dtype", "", "stored weights' dtype: '' as converted, or bfloat16")
_PLACEMENT = flags.DEFINE_enum("placement", "resident", ["resident", "sequential"], "resident | sequential "
                               "(weights in host memory, one model on the device at a time)")
_GLB_POINTS = flags.DEFINE_integer("glb_points", 300_000, "at most this many points in the 3D panel (points.glb)")
_DEMO_CACHE = flags.DEFINE_string("demo_cache", "", "where the demo bundle is written once (default: a temp dir)")


def base_config():
  from configs import demo_tiny, sample
  from gen3r_jax.apps.sample import DTYPES
  from gen3r_jax.apps.webapp import resolve_checkpoint
  from gen3r_jax.errors import require
  for name, value in (("dtype", _DTYPE.value), ("param_dtype", _PARAM_DTYPE.value)):
    require(value in ("",) + DTYPES, f"--{name} {value!r}: use one of {', '.join(DTYPES)} (or leave it empty).")
  checkpoint = resolve_checkpoint(_CKPT.value)
  cfg = sample.get_config() if checkpoint else demo_tiny.get_config()
  if checkpoint:
    cfg.checkpoint = checkpoint
  elif _DEMO_CACHE.value:
    cfg.demo.cache_dir = _DEMO_CACHE.value
  cfg.dtype = _DTYPE.value or cfg.dtype
  cfg.param_dtype = _PARAM_DTYPE.value
  cfg.placement = _PLACEMENT.value
  return cfg


def main(argv) -> int:
  del argv
  from gen3r_jax.apps.cli import run_tool
  from gen3r_jax.apps.webapp import run_app
  return run_tool(lambda: run_app(base_config(), host=_HOST.value, port=_PORT.value, out_root=_OUT.value,
                                          glb_points=_GLB_POINTS.value))

if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
