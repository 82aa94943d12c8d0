"""Calibrate the MagCache step schedule on your own checkpoint (for ``--config.cache=magcache``).

    python launch/calibrate_cache.py --checkpoint ckpt/gen3r --out schedule.json
    python launch/calibrate_cache.py --checkpoint ckpt/gen3r --out schedule.json --num_steps 30 --seeds 0,1,2 \\
        --images first.png --prompt "A palace on Crete"
    python launch/sample.py --config configs/sample.py ... --config.cache=magcache \\
        --config.cache_schedule=schedule.json [--config.cache_threshold=0.12]

Runs the full sampler (every step computed) once per seed and writes the per-step residual-magnitude ratios of
the DiT with the step count, scheduler, shift and guidance they were measured for; sampling with another setting
is a one-line error. Use the settings you sample with (flags named as ``SampleOptions`` and ``configs/sample.py``
name them: ``--num_steps``, ``--guidance_scale``, ``--cameras``; ``--trajectory`` is refused, exit status 2).
Without ``--images`` the built-in example image is used.
All logic lives in :mod:`gen3r_jax.apps.calibrate_cache` (docs/sampling.md "Accelerators").
"""

from __future__ import annotations

import sys

from absl import app, flags

from configs import renamed

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "converted bundle directory (launch/convert.py)")
_OUT = flags.DEFINE_string("out", None, "where to write the schedule JSON")
_IMAGES = flags.DEFINE_list("images", [], "conditioning images (default: the built-in example image)")
_PROMPT = flags.DEFINE_string("prompt", None, "prompt (default: a generic scene description)")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "one calibration run per seed; the ratios are averaged")
_STEPS = flags.DEFINE_integer("num_steps", 50, "denoising steps (must match sampling; at least 2)")
_SHIFT = flags.DEFINE_float("shift", 5.0, "timestep shift (must match sampling)")
_SCHEDULER = flags.DEFINE_string("scheduler", "", "'' = the checkpoint's scheduler; unipc | dpmpp | euler")
_FRAMES = flags.DEFINE_integer("num_frames", 49, "frames (1 + 4k)")
_GUIDANCE = flags.DEFINE_float("guidance_scale", 5.0, "classifier-free guidance scale (must match sampling)")
_TASK = flags.DEFINE_string("task", "1view", "1view | 2view | allview")
_CAMERAS = flags.DEFINE_string("cameras", "zoom_out", "built-in camera trajectory or cameras JSON path")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "compute dtype")
_PARAM_DTYPE = flags.DEFINE_string("param_dtype", "", "'' = as converted; bfloat16 halves the weights")


def _calibrate():
  from gen3r_jax.apps.calibrate_cache import DEFAULT_PROMPT, calibrate, parse_seeds
  calibrate(_CHECKPOINT.value, _OUT.value or "", images=_IMAGES.value, prompt=_PROMPT.value or DEFAULT_PROMPT,
            seeds=parse_seeds(_SEEDS.value), num_steps=_STEPS.value, shift=_SHIFT.value,
            scheduler=_SCHEDULER.value, num_frames=_FRAMES.value, guidance_scale=_GUIDANCE.value, task=_TASK.value,
            cameras=_CAMERAS.value, dtype=_DTYPE.value, param_dtype=_PARAM_DTYPE.value)


def main(argv) -> int:
  del argv
  from gen3r_jax.apps.cli import run_tool
  return run_tool(_calibrate)


if __name__ == "__main__":
  renamed.exit_on_renamed(sys.argv, renamed.CALIBRATE, flag="")   # old flag names: one line naming the new one
  app.run(lambda argv: sys.exit(main(argv)))
