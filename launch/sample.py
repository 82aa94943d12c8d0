"""Sample a 3D scene with Gen3R: conditioning image(s) + prompt + camera trajectory -> video, depth, points, cameras.

    python launch/sample.py --config configs/sample.py --config.checkpoint=ckpt/gen3r --config.task=1view \\
        --config.images=first.png --config.prompt="A palace on Crete" --config.cameras=zoom_out \\
        --config.out=outputs/palace [--config.seed=0 --config.num_frames=49 --config.num_steps=50 \\
        --config.guidance_scale=5 --config.shift=5 --config.scheduler=unipc --config.dtype=bfloat16]
    python launch/sample.py --config configs/sample.py --config.checkpoint=ckpt/gen3r --config.task=allview \\
        --config.images=examples/all-view/garden.mp4 --config.prompt=examples/all-view/prompts.txt \\
        --config.out=outputs/garden          # a video or a folder of frames; the first num_frames are used
    python launch/sample.py --config configs/demo_tiny.py --config.out=/tmp/gen3r_demo   # CPU demo, no download
    # one process per GPU (docs/multi_gpu.md): the same command in every process, plus
    CUDA_VISIBLE_DEVICES=$i python launch/sample.py ... --config.mesh=cfg=2 \
        --coordinator_address=localhost:12345 --num_processes=2 --process_id=$i

All logic lives in :mod:`gen3r_jax.apps.sample` (checks, loading, generation, export). With several processes
every process reads the same inputs and runs the sampler over the global mesh; only process 0 writes the outputs.
Bad input prints a one-line ``error: ...`` naming the fix and exits with status 2, before any model is loaded or compiled; the
output directory is created and probed for writing first. Inputs used in a way you may not expect (a prompt cut
at 512 tokens, a small or very elongated image, frames left out of a long video, a previous run's outputs about
to be replaced) print one ``warning: ...`` line each on stderr. The options carry ``SampleOptions``' field names;
an old name (``--config.steps``, ``trajectory``, ``guidance``, ``resolution``) exits with status 2 and one line
naming the new one (``configs/renamed.py``).
"""

from __future__ import annotations

import os
import sys

from absl import app
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import renamed  # noqa: E402  (after the path: the repository's configs package)
from launch.distributed import setup_distributed  # noqa: E402  (defines the multi-process flags)

_CONFIG = config_flags.DEFINE_config_file("config", None, "sampling config (configs/sample.py, configs/demo_tiny.py)")


def main(argv) -> int:
  del argv
  renamed.exit_on_renamed((), renamed.SAMPLE, _CONFIG.value)   # a config file still setting an old name
  setup_distributed()
  from gen3r_jax.apps.cli import run_tool
  from gen3r_jax.apps.sample import sample_from_config
  return run_tool(sample_from_config, _CONFIG.value)


if __name__ == "__main__":
  renamed.exit_on_renamed(sys.argv, renamed.SAMPLE)   # old flag names: one line naming the new one, exit 2
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=renamed.parse_flags)
