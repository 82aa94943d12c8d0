"""Device memory of the full 1.3B sampling pipeline per stage (issue 10: "fits in 24 GiB with sequential placement").

    XLA_PYTHON_CLIENT_MEM_FRACTION=0.30 python -m bench.run --what sample_memory          # 24 GiB of an 80 GB H100
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.30 python -m bench.run --what sample_memory --kw task=allview
    python -m bench.run --what sample_memory --kw placement=resident                      # for comparison
    python -m bench.run --what sample_memory --size tiny --dtype float32                  # CPU smoke

A random full-size bundle (``bench.sample.bundle_configs``, weights drawn on device by ``bench.common.device_random``)
is built model by model; with ``placement="sequential"`` each model goes to host memory
(``gen3r_jax.sampling.placement.to_host``) right after it is drawn, so building never holds more than one model on
the device. Then ``generate`` runs once (49 frames at 560x560, ``num_steps`` denoising steps: memory does not depend on
the step count) and the row reports its per-stage ``stats``: ``stage_peak_gib`` (``peak_bytes_in_use`` after each
stage: the process peak so far, so a stage's own peak shows where it grows), ``stage_in_use_gib`` (bytes in use at
the end of the stage with its weights still on the device), ``stage_weights_gib``, ``stage_s``; ``peak_gib`` (the
run's peak, the build included), ``build_peak_gib`` (the peak before sampling) and ``limit_gib`` (the allocator's
limit: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` x the device). Never run in CI.
"""

from __future__ import annotations

import datetime
import importlib
import os
import shutil
import tempfile
import time

TINY = dict(num_frames=1, num_steps=1)


def run(size: str = "full", dtype: str = "bfloat16", param_dtype: str | None = "bfloat16",
        placement: str = "sequential", task: str = "1view", num_frames: int = 49, num_steps: int = 2,
        seed: int = 0) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from bench.common import device_random
  from bench.sample import FIELDS, bundle_configs
  from gen3r_jax.apps.bundle import COMPONENTS, Gen3RBundle
  from gen3r_jax.models.umt5.tokenizer import UMT5Tokenizer
  from gen3r_jax.apps import demo
  from gen3r_jax.sampling import placement as pl
  from gen3r_jax.sampling.inputs import expected_views
  from gen3r_jax.sampling.pipeline import SampleOptions, generate
  pl.check_placement(placement)
  if size == "tiny":
    num_frames, num_steps = TINY["num_frames"], TINY["num_steps"]
  cfgs = bundle_configs(size, dtype, param_dtype or dtype)
  tmp = tempfile.mkdtemp(prefix="gen3r_bench_memory_")
  try:
    t0 = time.perf_counter()
    bundle = Gen3RBundle()
    for i, (comp, (_, cls_path)) in enumerate(COMPONENTS.items()):
      mod, name = cls_path.split(":")
      model = device_random(getattr(importlib.import_module(mod), name), cfgs[comp], seed=seed + i)
      if comp == "vggt":                                   # keep the random field of view positive (demo.py)
        fc2 = model.camera_head.pose_branch.fc2
        fc2.kernel[...] = fc2.kernel[...].at[:, 7:].multiply(0.05)
        fc2.bias[...] = fc2.bias[...].at[7:].set(jnp.asarray(0.3, fc2.bias[...].dtype))
      if placement == "sequential":
        model = pl.to_host(model)
      setattr(bundle, FIELDS[comp], model)
    bundle.tokenizer = UMT5Tokenizer.from_pretrained(demo.train_tokenizer(os.path.join(tmp, "tok")))
    bundle.scheduler_config = {"_class_name": "FlowUniPCMultistepScheduler", "num_train_timesteps": 1000,
                               "shift": 1.0, "solver_order": 2, "solver_type": "bh2",
                               "prediction_type": "flow_prediction", "predict_x0": True,
                               "lower_order_final": True, "final_sigmas_type": "zero"}
    build_s = time.perf_counter() - t0
    build = pl.memory_stats() or {}
    img = (demo.example_image(0) / 255.0).astype(np.float32)
    views = expected_views(task, num_frames)
    images = np.stack([np.roll(img, 8 * k, axis=1) for k in range(views)])
    opts = SampleOptions(task=task, cameras="zoom_out", num_frames=num_frames, num_steps=num_steps, seed=seed)
    t0 = time.perf_counter()
    out = generate(bundle, images, "a palace on a hill, seen from the air", opts, progress=False, log=print)
    sample_s = time.perf_counter() - t0
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  st = out["stats"]["stages"]
  gib = lambda v: None if v is None else v / 2 ** 30                                   # noqa: E731
  final = pl.memory_stats() or {}
  dev = jax.devices()[0]
  return {"bench": "sample_memory", "name": f"sample memory {placement} {size} {task} {dtype}/{param_dtype}",
          "device": f"{dev.platform}:{getattr(dev, 'device_kind', '?')}", "jax": jax.__version__,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "size": size, "dtype": dtype, "param_dtype": param_dtype, "placement": placement, "task": task,
          "num_frames": num_frames, "num_steps": num_steps, "build_s": build_s, "median_s": sample_s,
          "peak_gib": gib(final.get("peak_bytes_in_use")), "build_peak_gib": gib(build.get("peak_bytes_in_use")),
          "limit_gib": gib(final.get("bytes_limit")),
          "stage_peak_gib": {k: gib(v["peak_bytes_in_use"]) for k, v in st.items()},
          "stage_in_use_gib": {k: gib(v["bytes_in_use"]) for k, v in st.items()},
          "stage_weights_gib": {k: gib(v["weights_bytes"]) for k, v in st.items()},
          "stage_s": {k: v["seconds"] for k, v in st.items()},
          "params_replaced": {k: v["params_replaced"] for k, v in st.items()},
          "finite": bool(np.isfinite(out["rgb"]).all() and np.isfinite(out["depth"]).all())}
