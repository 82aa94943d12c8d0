"""Look at a sample or reconstruction in 3D: the coloured point cloud, the cameras textured with the frames, a frame
slider, the depth / confidence mask toggles, point size and a PLY download, in the browser (viser).

    python launch/view.py outputs/palace                         # then open http://localhost:8080
    python launch/view.py outputs/recon --port 8081 --max_points 2000000
    python launch/view.py outputs/palace --host 0.0.0.0          # reachable from other machines

On a remote GPU box keep the default ``--host 127.0.0.1`` and forward the port from your own machine:
``ssh -N -L 8080:localhost:8080 user@gpu-box``, then open http://localhost:8080 locally. The folder is what
``launch/sample.py`` (``--config.out``) or ``launch/reconstruct.py`` (``--out``) wrote; one missing any of the
four files the viewer needs (rgb.mp4, cameras.json, depth.npz and points.npz) is a one-line error, exit status 2, as
is a bad flag (``--max_points``, ``--point_size`` and ``--fps`` must be positive), before any server starts. Needs
the optional extra: ``pip install -e ".[viewer]"``. All logic lives in :mod:`gen3r_jax.apps.viewer`.
"""

from __future__ import annotations

import sys

from absl import app, flags

_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to serve on (0.0.0.0: every interface)")
_PORT = flags.DEFINE_integer("port", 8080, "port to serve on (the next free one if it is taken)")
_MAX_POINTS = flags.DEFINE_integer("max_points", 1_000_000, "at most this many points go to the browser")
_POINT_SIZE = flags.DEFINE_float("point_size", None, "initial point size in scene units (default: from the extent)")
_FPS = flags.DEFINE_float("fps", 8.0, "frames per second of the play toggle")


def main(argv) -> int:
  from gen3r_jax.apps.cli import run_tool
  from gen3r_jax.apps.viewer import view
  if len(argv) != 2:
    print("error: pass one output directory: python launch/view.py <output dir> (the folder launch/sample.py or "
          "launch/reconstruct.py wrote).", file=sys.stderr)
    return 2
  return run_tool(view, argv[1], host=_HOST.value, port=_PORT.value, max_points=_MAX_POINTS.value,
                  point_size=_POINT_SIZE.value, fps=_FPS.value, compilation_cache=False)

if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
