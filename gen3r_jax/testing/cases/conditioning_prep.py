"""Parity case for the ``conditioning_prep`` fixture: trajectories, pose normalisation, rays / Plücker,
camera-latent and mask layouts, zero-filled control video and the CLIP input.

Our functions are channels-last; the fixture is PyTorch order, so this case transposes. Pure data movement
(poses, layouts, masks, control video) is compared exactly.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from gen3r_jax.sampling import cameras as cam
from gen3r_jax.sampling import conditioning as cond
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.testing.parity import Check


def run(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  del dtype
  cfg = fx.config
  f, scale = int(cfg["num_frames"]), float(cfg["scene_scale"])
  h, w = (int(v) for v in cfg["image_hw"])
  lh, lw = (int(v) for v in cfg["latent_hw"])

  for name in cfg["trajectories"]:
    yield Check(f"poses.{name}", cam.get_poses(name, f, scale), kind="exact")

  rel = {"random": cam.preprocess_poses(fx.tensor("abs_c2ws")),
         "arc_right": cam.preprocess_poses(cam.get_poses("arc_right", f, scale))}
  for key, c2ws in rel.items():
    yield Check(f"preprocess_poses.{key}", c2ws)

  K = fx.tensor("K")
  for key, c2ws in rel.items():
    o, d = cond.compute_rays(c2ws, K, h, w)                              # [F, H, W, 3]
    p = cond.plucker(c2ws, K, h, w)                                      # [F, H, W, 6]
    yield Check(f"rays_o.{key}", np.transpose(np.asarray(o), (0, 3, 1, 2)))
    yield Check(f"rays_d.{key}", np.transpose(np.asarray(d), (0, 3, 1, 2)))
    yield Check(f"plucker.{key}", np.transpose(np.asarray(p), (0, 3, 1, 2)))

  # layout only: fed with the reference Plücker map so the comparison is exact
  p_ref = np.transpose(fx.tensor("plucker.random"), (0, 2, 3, 1))[None]  # [1, F, H, W, 6]
  lat = cond.camera_latents(p_ref)                                      # [1, f, H, 2W, 24]
  yield Check("control_camera_latents.random", np.transpose(np.asarray(lat), (0, 4, 1, 2, 3)), kind="exact")

  frames = np.transpose(fx.tensor("frames"), (0, 1, 3, 4, 2))           # [1, F, H, W, 3]
  picks = {"1view": frames[:, :1], "2view": frames[:, [0, -1]], "allview": frames}
  for task, imgs in picks.items():
    m = cond.control_masks(imgs.shape[1], f, (lh, lw), batch=frames.shape[0])   # [B, f, h, 2w, 4]
    yield Check(f"masks.{task}", np.transpose(np.asarray(m), (0, 4, 1, 2, 3)), kind="exact")
    v = cond.control_video(imgs, f)                                     # [B, F, H, W, 3]
    yield Check(f"control_images.{task}", np.transpose(np.asarray(v), (0, 1, 4, 2, 3)), kind="exact")

  clip = cond.clip_image_input(frames[:, 0])                             # [1, H, W, 3]
  yield Check("clip_image_input", np.transpose(np.asarray(clip), (3, 0, 1, 2)))
