"""Calibrate a MagCache schedule on your own checkpoint (``launch/calibrate_cache.py``'s library side).

    data = calibrate("ckpt/gen3r", "schedule.json", num_steps=50, seeds=(0, 1))
    # sample with: --config.cache=magcache --config.cache_schedule=schedule.json

Runs the sampler with every step computed (the block-cache programs of :mod:`gen3r_jax.sampling.cache` in
calibration mode, so nothing is skipped) once per seed, records the residual-magnitude ratio of the DiT's blocks
2..N between consecutive steps (per CFG row), averages over the seeds and writes the schedule JSON (atomically).
The schedule records the step count, shift, guidance scale and scheduler (its class and every setting) it was made
for, and the sampler refuses it for any other (``gen3r_jax.sampling.cache.check_schedule``, before anything
compiles), and what it was measured on (checkpoint path, weights label, prompt, images, seeds, device, date).
``num_steps`` must be at least 2 (a ratio compares two consecutive steps).

The ratios depend on the weights: a schedule made on random weights (``bench/accelerators.py`` does that, and
says so in the ``weights`` field) is not one for the released model.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Callable, Sequence

import jax
import numpy as np

from gen3r_jax.apps import demo
from gen3r_jax.apps.bundle import check_bundle, load_bundle
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.sampling import cache as step_cache
from gen3r_jax.sampling import inputs
from gen3r_jax.sampling.pipeline import SampleOptions, check_options, generate, make_scheduler

DEFAULT_PROMPT = "A wide view of a bright room with furniture, the camera moving slowly through the scene."


def _check_out(out: str) -> None:
  require(bool(out) and out.endswith(".json"), f"--out must name a .json file, got {out!r}.")
  folder = os.path.dirname(os.path.abspath(out))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise Gen3RInputError(f"cannot create the folder of --out {out!r} ({e.strerror}); pick a writable path.") from None
  require(os.access(folder, os.W_OK), f"cannot write into {folder!r} (--out); pick a writable path.")


def parse_seeds(values: Sequence[str]) -> list[int]:
  """``--seeds`` (absl list flag) -> integers >= 0, at least one."""
  seeds = [str(v).strip() for v in values]
  # isdecimal, not isdigit: "²" is a digit that int() refuses
  require(len(seeds) >= 1 and all(s.isdecimal() for s in seeds),
          f"--seeds must be one or more integers >= 0 like 0,1,2, got {','.join(map(str, values))!r}.")
  return [int(s) for s in seeds]


def calibrate(checkpoint: str | None, out: str, *, images: Sequence[str] = (), prompt: str = DEFAULT_PROMPT,
              seeds: Sequence[int] = (0,), num_steps: int = 50, shift: float = 5.0, scheduler: str = "",
              num_frames: int = 49, guidance_scale: float = 5.0, task: str = "1view", cameras: str = "zoom_out",
              dtype: str = "bfloat16", param_dtype: str = "", bundle=None, weights: str | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> dict:
  """Measure the ratios and write the schedule to ``out`` (module docstring); returns the schedule dict.

  ``images``: conditioning images (default: the built-in synthetic example image, repeated for the task).
  ``bundle``: an already loaded bundle (then ``checkpoint`` only labels the schedule); ``weights``: what the
  weights are (default: ``"checkpoint"``; the benchmark passes ``"random (benchmark proxy)"``).
  """
  ok = isinstance(num_steps, int) and not isinstance(num_steps, bool)
  require(ok and num_steps >= 2, f"--num_steps must be an integer >= 2 to calibrate (a ratio compares two "
                                 f"consecutive steps), got {num_steps!r}.")
  _check_out(out)
  require(len(seeds) >= 1, "--seeds: give at least one seed.")
  opts = SampleOptions(task=task, cameras=cameras, num_frames=num_frames, num_steps=num_steps,
                       guidance_scale=float(guidance_scale), shift=float(shift), seed=int(seeds[0]),
                       scheduler=scheduler or None, cache="first_block", cache_threshold=0.0)
  if images:
    views = inputs.load_control_images(list(images))
  else:
    views = (demo.example_image(0)[None] / 255.0).astype(np.float32)
    views = np.repeat(views, inputs.expected_views(task, num_frames), axis=0)
  check_options(opts, views.shape[0])
  if bundle is None:
    require(bool(checkpoint), "no checkpoint: pass --checkpoint=<converted bundle dir> (launch/convert.py).")
    check_bundle(checkpoint)
    bundle = load_bundle(checkpoint, dtype=dtype, param_dtype=param_dtype or None, log=log)
  sched = make_scheduler(opts, bundle.scheduler_config)
  sched_name = step_cache.scheduler_name(sched)
  runs = []
  for seed in seeds:
    log(f"[calibrate] seed {seed}: {num_steps} full steps")
    res = generate(bundle, views, prompt, dataclasses.replace(opts, seed=int(seed)), progress=progress,
                   calibrate_cache=True)
    runs.append(res["cache"])
  ratios = step_cache.calibration_ratios(runs)
  dev = jax.devices()[0]
  meta = {"checkpoint": os.path.abspath(checkpoint) if checkpoint else None, "weights": weights or "checkpoint",
          "prompt": prompt, "images": list(images) or ["built-in example image (gen3r_jax.apps.demo)"],
          "seeds": [int(s) for s in seeds], "task": task, "cameras": cameras, "num_frames": num_frames,
          "dtype": dtype, "device": str(getattr(dev, "device_kind", dev.platform)), "jax": jax.__version__,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  data = step_cache.write_schedule(out, ratios, num_steps=num_steps, shift=shift, scheduler=sched,
                                   guidance_scale=guidance_scale, meta=meta)
  knobs = step_cache.resolved(step_cache.CacheSettings("magcache"), num_steps)
  plan = step_cache.magcache_plan(ratios, threshold=knobs["threshold"], max_skips=knobs["max_skips"],
                                  warmup=knobs["warmup"])
  log(f"[calibrate] wrote {out}: {num_steps} steps, scheduler {sched_name}, shift {shift}; at the default "
      f"threshold {knobs['threshold']} it caches {sum(plan)} of {num_steps} steps")
  return data


__all__ = ("DEFAULT_PROMPT", "calibrate", "parse_seeds")
