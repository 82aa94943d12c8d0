"""Parity case ``pipeline_tiny``: the whole Gen3R pipeline from the official checkpoint directory.

The fixture's ``checkpoint/`` is converted with the production converter (:func:`convert_bundle`, strict, the
fixture's per-component configs as ``overrides``) into a temporary directory, loaded with :func:`load_bundle`, and
run through :func:`gen3r_jax.sampling.pipeline.generate` with the fixture's control images, its ``latents_init``
and the settings of ``config.run`` (task, cameras, frames, steps, guidance, shift; the VAE posterior MODE, as the
golden run). Every recorded stage is compared with the group tolerance of ``tolerance.float32_tensors``;
float16-stored tensors use the float16 tolerance, point masks may flip on a few pixels (percentile thresholds).
A 2view / allview variant of the fixture (same layout, other ``run.task`` and control images) runs unchanged.

Cameras from a cameras file (``run.cameras`` is then not a built-in trajectory name, as ``infer.py --cameras
path.json``): the fixture stores them in ``inputs.safetensors`` as ``c2ws_raw`` ``[F, 4, 4]`` (the inverse of the
file's world-to-camera ``extrinsics`` at the frames used) and ``Ks`` ``[1, F, 3, 3]``, and records no VGGT
estimate. The case writes them back out as a cameras JSON file in the official format (``extrinsics`` =
``inv(c2ws_raw)``, ``intrinsics``) and passes its path, the way a user's file reaches the sampler.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Iterator

import numpy as np

from gen3r_jax.apps.bundle import COMPONENTS, convert_bundle, load_bundle
from gen3r_jax.sampling.cameras import BUILTIN_TRAJECTORIES
from gen3r_jax.sampling.pipeline import SampleOptions, generate
from gen3r_jax.testing.parity import Check

# fixture output -> tolerance group of ``tolerance.float32_tensors``
GROUPS = {
    "prompt_embeds": "text", "negative_prompt_embeds": "text", "clip_context": "clip",
    "control_latents": "control_latents", "latents_step0": "latents", "latents_step1": "latents",
    "latents_step2": "latents", "final_latents": "latents", "scheduler_sigmas": "latents",
    "extrinsics": "cameras", "intrinsics": "cameras", "vggt_est_pose_enc": "vggt_pre",
    "vggt_est_intrinsics": "vggt_pre", "scene_scale": "vggt_pre", "c2ws_trajectory_raw": "vggt_pre",
    "c2ws": "vggt_pre", "Ks": "vggt_pre",
}


def overrides(fx) -> dict[str, dict]:
  """The fixture's per-component configs as :func:`convert_bundle` overrides (the fixture names VGGT's shared DPT
  settings ``dpt_heads``; the VGGT config reads them as ``dpt_common``)."""
  out = {c: dict(fx.config[c]) for c in COMPONENTS if c in fx.config}
  if "vggt" in out and "dpt_heads" in out["vggt"]:
    out["vggt"]["dpt_common"] = out["vggt"].pop("dpt_heads")
  return out


def options(fx) -> SampleOptions:
  run = fx.config["run"]
  return SampleOptions(task=run["task"], cameras=run["cameras"], num_frames=int(run["num_frames"]),
                       num_steps=int(run["num_inference_steps"]), guidance_scale=float(run["guidance_scale"]),
                       shift=float(run["shift"]), negative_prompt=run.get("negative_prompt", "bad detailed"),
                       posterior="mode", min_max_depth_mask=bool(run.get("min_max_depth_mask", True)),
                       max_sequence_length=int(run.get("max_sequence_length", 512)), size=int(run["height"]))


def uses_cameras_file(fx) -> bool:
  """True for the cameras-file variant: ``run.cameras`` is not a built-in trajectory name."""
  cams = fx.config["run"]["cameras"]
  return not (isinstance(cams, str) and cams in BUILTIN_TRAJECTORIES)


def write_cameras_file(fx, path: str) -> str:
  """The variant's stored cameras as a cameras JSON file in the official format (``infer.py --cameras``):
  ``extrinsics`` world-to-camera ``[F, 4, 4]`` (the inverse of ``c2ws_raw``) and ``intrinsics`` ``[F, 3, 3]``."""
  for name in ("c2ws_raw", "Ks"):
    if not fx.has(name):
      raise KeyError(f"{fx.name}: run.cameras {fx.config['run']['cameras']!r} is not a built-in trajectory, so "
                     f"the fixture must store the cameras ({name!r} is missing; see README-pipeline.md, Variants)")
  c2ws = np.asarray(fx.tensor("c2ws_raw"), np.float64).reshape(-1, 4, 4)
  ks = np.asarray(fx.tensor("Ks"), np.float64).reshape(-1, 3, 3)
  with open(path, "w") as f:
    json.dump({"extrinsics": np.linalg.inv(c2ws).tolist(), "intrinsics": ks.tolist()}, f)
  return path


def pt_latents(a) -> np.ndarray:
  """``[B, f, h, w, C]`` -> PyTorch ``[B, C, f, h, w]``."""
  return np.moveaxis(np.asarray(a), -1, 1)


def run_pipeline(fx, dtype: str = "float32", workdir: str | None = None) -> dict:
  """Convert + load + generate with recording; returns the pipeline output."""
  with tempfile.TemporaryDirectory(dir=workdir) as tmp:
    ckpt = os.path.join(tmp, "bundle")
    convert_bundle(os.path.join(fx.path, "checkpoint"), ckpt, overrides=overrides(fx), log=lambda *a: None)
    bundle = load_bundle(ckpt, dtype=dtype)
    opts = options(fx)
    if uses_cameras_file(fx):
      opts = dataclasses.replace(opts, cameras=write_cameras_file(fx, os.path.join(tmp, "cameras.json")))
    images = np.moveaxis(fx.tensor("control_images")[0].astype(np.float32), 1, -1)    # [V, H, W, 3]
    latents = np.moveaxis(fx.tensor("latents_init").astype(np.float32), 1, -1)        # [1, f, h, 2w, 16]
    return generate(bundle, images, fx.config["run"]["prompt"], opts, latents=latents, record=True,
                    progress=False)


def run(fx, dtype: str) -> Iterator[Check]:
  tol = fx.meta["tolerance"]["float32_tensors"]
  out = run_pipeline(fx, dtype)
  st = out["stages"]

  def check(name, ours, **kw):
    if not fx.has(name):
      return None
    if name in GROUPS and "kind" not in kw:
      g = tol[GROUPS[name]]
      kw.update(atol=g["atol"], rtol=g["rtol"])
    return Check(name, np.asarray(ours), **kw)

  dec = st["decode"]
  est = st.get("estimate")
  checks = [
      check("prompt_input_ids", st["prompt_ids"].astype(np.int64), kind="exact"),
      check("prompt_attention_mask", st["prompt_mask"].astype(np.int64), kind="exact"),
      check("negative_prompt_input_ids", st["negative_ids"].astype(np.int64), kind="exact"),
      check("negative_prompt_attention_mask", st["negative_mask"].astype(np.int64), kind="exact"),
      check("prompt_embeds", st["prompt_embeds"]),
      check("negative_prompt_embeds", st["negative_embeds"]),
      check("timesteps", st["timesteps"].astype(np.float32), kind="exact"),
      check("scheduler_sigmas", st["sigmas"]),
  ]
  if est is not None:
    checks += [
        check("vggt_est_pose_enc", est["pose_enc"]),
        check("vggt_est_intrinsics", est["intrinsics"]),
        check("vggt_est_depth_sub4", est["depth"][:, :, 1::4, 1::4]),
        check("scene_scale", np.asarray([est["scene_scale"]], np.float32)),
        check("c2ws_trajectory_raw", st["c2ws_raw"]),
    ]
  checks += [
      check("c2ws", st["c2ws"][None]),
      check("Ks", st["Ks"][None]),
      check("plucker_embeddings_sub8", np.moveaxis(np.asarray(st["plucker"]), -1, 2)[..., 3::8, 3::8]),
      check("camera_latents_sub8_left",
            pt_latents(st["camera_latents"])[..., 3::8, 3::8][..., : st["camera_latents"].shape[3] // 16]),
      check("control_latents", pt_latents(st["control_latents"])),
      check("clip_context", st["clip_context"]),
  ]
  hist = st["latents_per_step"]
  for k in range(hist.shape[0] - 1):
    checks.append(check(f"latents_step{k}", pt_latents(hist[k])))
  checks += [
      check("final_latents", pt_latents(hist[-1])),
      check("rgbs", dec["rgb"]),
      check("depth_maps", dec["depth"]),
      check("point_maps_sub4", np.asarray(dec["points"])[:, :, 1::4, 1::4]),
      check("pcds_sub4", dec["pcds"][:, :, 1::4, 1::4]),
      check("point_masks", dec["masks"].astype(np.uint8), kind="mask", mask_fraction=1e-4),
      check("extrinsics", dec["extrinsics"]),
      check("intrinsics", dec["intrinsics"]),
  ]
  yield from (c for c in checks if c is not None)


__all__ = ("run", "run_pipeline", "overrides", "options", "uses_cameras_file", "write_cameras_file", "GROUPS")
