"""Synthetic scenes in the official layout, ray cast with numpy, with exact depth.

``python -m gen3r_jax.data.synthetic --out <dir> --scenes N [--frames F] [--size S | --width W --height H]
[--datasets re10k,waymo] [--test-scenes K] [--seed 0]``

Each scene is a box room with procedurally textured walls (checkers, stripes, colours drawn per scene) holding
a few spheres and boxes, seen along a random smooth camera path. Shading is Lambertian (view-independent), so
the frames are multi-view consistent. Per scene we write ``images/frameNNNNN.png``, ``captions.txt`` (two
lines, captioner style), ``transforms.json`` (per-frame w, h, fl_x, fl_y, cx, cy, file_path and the OpenCV
camera-to-world ``transform_matrix``) and, as our extension, ``depths/frameNNNNN.npy``: float32 ``[H, W]``
z-depth along the optical axis at pixel centres ``(u + 0.5, v + 0.5)`` (the convention of ``compute_rays``).

List files: ``<out>/<dataset>/train_*.txt`` per dataset, ``<out>/train_*.txt`` (all train scenes) and
``<out>/test_*.txt`` (``--test-scenes`` extra scenes per dataset), with absolute paths as the official code
expects (it opens them from the working directory).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image
import numpy as np

from gen3r_jax.errors import require


ROOM = np.array([2.0, 1.2, 2.0])  # half extents of the room box: x, y (down), z
OBJECT_WORDS = {"sphere": "ball", "box": "crate"}


def _random_objects(rng: np.random.Generator) -> list[dict]:
  """2–4 spheres / boxes standing near the walls, away from the camera region around the centre."""
  objs = []
  for _ in range(int(rng.integers(2, 5))):
    ang = rng.uniform(0, 2 * np.pi)
    rad = rng.uniform(1.1, 1.5)
    size = rng.uniform(0.25, 0.5)
    center = np.array([rad * np.cos(ang), ROOM[1] - size, rad * np.sin(ang)])  # resting on the floor (+y)
    kind = "sphere" if rng.random() < 0.5 else "box"
    objs.append(dict(kind=kind, center=center, size=size, color=rng.uniform(0.2, 1.0, 3),
                     freq=rng.uniform(3, 8)))
  return objs


def _camera_path(rng: np.random.Generator, n: int) -> np.ndarray:
  """``[n, 4, 4]`` OpenCV c2w along a smooth random path in the room centre, looking around the room."""
  t = np.linspace(0, 1, n)
  amp, ph = rng.uniform(0.1, 0.4, 3), rng.uniform(0, 2 * np.pi, 3)
  pos = amp * np.sin(2 * np.pi * 0.5 * t[:, None] + ph) * np.array([1.0, 0.3, 1.0])  # [n, 3]
  yaw = rng.uniform(0, 2 * np.pi) + rng.uniform(-1.0, 1.0) * t
  pitch = rng.uniform(0.1, 0.4) + 0.1 * np.sin(2 * np.pi * t + ph[0])
  fwd = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(pitch), np.sin(yaw) * np.cos(pitch)], -1)
  down = np.array([0.0, 1.0, 0.0])
  x = np.cross(down, fwd)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  y = np.cross(fwd, x)
  c2w = np.tile(np.eye(4), (n, 1, 1))
  c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, fwd, pos
  return c2w


def _wall_texture(p: np.ndarray, axis: np.ndarray, face: np.ndarray, palette: np.ndarray,
                  scale: float) -> np.ndarray:
  """Checker / stripe texture of the room walls at hit points ``p`` [P, 3]; wall axis and face (0..5) [P]."""
  u = np.where(axis == 0, p[:, 2], p[:, 0])
  v = np.where(axis == 1, p[:, 2], p[:, 1])
  checker = (np.floor(u / scale) + np.floor(v / scale)) % 2
  stripes = 0.5 + 0.5 * np.sin(7.0 * (u + 0.5 * v))
  col = palette[face] * (0.55 + 0.45 * checker)[:, None]
  return col * (0.8 + 0.2 * stripes)[:, None]


def render(c2w: np.ndarray, K: np.ndarray, hw: tuple[int, int], scene: dict) -> tuple[np.ndarray, np.ndarray]:
  """Ray cast one view. Returns rgb ``[H, W, 3]`` uint8 and z-depth ``[H, W]`` float32."""
  h, w = hw
  v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
  d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
  d = d_cam @ c2w[:3, :3].T  # [P, 3]; ray parameter t == camera z-depth since d_cam.z == 1
  o = c2w[:3, 3]
  safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
  t_wall = (np.sign(safe) * ROOM - o) / safe  # [P, 3] exit distance per axis
  axis = np.argmin(t_wall, -1)
  t = t_wall[np.arange(len(d)), axis]
  hit_p = o + t[:, None] * d
  face = 2 * axis + (safe[np.arange(len(d)), axis] > 0)
  color = _wall_texture(hit_p, axis, face, scene["palette"], scene["scale"])
  normal = np.zeros_like(d)
  normal[np.arange(len(d)), axis] = -np.sign(safe[np.arange(len(d)), axis])
  for obj in scene["objects"]:
    c, s = obj["center"], obj["size"]
    if obj["kind"] == "sphere":
      oc = o - c
      a, b, cc = (d * d).sum(-1), 2 * (d @ oc), oc @ oc - s * s
      disc = b * b - 4 * a * cc
      t_obj = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    else:
      t0, t1 = (c - s - o) / safe, (c + s - o) / safe
      tn, tf = np.minimum(t0, t1).max(-1), np.maximum(t0, t1).min(-1)
      t_obj = np.where((tn < tf) & (tn > 0), tn, np.inf)
    closer = (t_obj > 1e-6) & (t_obj < t)
    if not closer.any():
      continue
    t = np.where(closer, t_obj, t)
    p = o + t[:, None] * d
    if obj["kind"] == "sphere":
      n = (p - c) / s
      pattern = 0.6 + 0.4 * (np.sin(obj["freq"] * np.arctan2(n[:, 2], n[:, 0])) > 0)
    else:
      q = (p - c) / s
      ax = np.argmax(np.abs(q), -1)
      n = np.zeros_like(q)
      n[np.arange(len(q)), ax] = np.sign(q[np.arange(len(q)), ax])
      pattern = 0.6 + 0.4 * ((np.floor(q * obj["freq"] / 2).sum(-1) % 2) > 0)
    color = np.where(closer[:, None], obj["color"] * pattern[:, None], color)
    normal = np.where(closer[:, None], n, normal)
  shade = 0.45 + 0.55 * np.clip(normal @ scene["light"], 0, 1)
  rgb = np.clip(color * shade[:, None], 0, 1)
  return (rgb.reshape(h, w, 3) * 255 + 0.5).astype(np.uint8), t.reshape(h, w).astype(np.float32)


def _captions(rng: np.random.Generator, scene: dict) -> list[str]:
  words = sorted({OBJECT_WORDS[o["kind"]] for o in scene["objects"]})
  things = " and ".join(f"{w}s" for w in words)
  tone = ["warm", "pale", "colourful", "bright"][int(rng.integers(4))]
  return [f"The image shows a {tone} room with checkered walls and {things} on the floor.",
          f"The scene depicts an empty hall holding a few {things}, seen by a slowly turning camera."]


def _random_scene(rng: np.random.Generator) -> dict:
  return dict(palette=rng.uniform(0.25, 1.0, (6, 3)), scale=rng.uniform(0.3, 0.7),
              objects=_random_objects(rng), light=np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5]))


def _intrinsics(hw: tuple[int, int], fov_deg: float) -> np.ndarray:
  h, w = hw
  fl = 0.5 * w / np.tan(np.deg2rad(fov_deg) / 2)
  return np.array([[fl, 0, w / 2], [0, fl, h / 2], [0, 0, 1.0]])


def render_clip(seed: int = 0, frames: int = 9, hw: tuple[int, int] = (64, 64), fov_deg: float = 75.0):
  """One synthetic clip in memory: ``(rgb [F, H, W, 3] uint8, depth [F, H, W], c2w [F, 4, 4], K [3, 3])``."""
  rng = np.random.default_rng(seed)
  scene = _random_scene(rng)
  K = _intrinsics(hw, fov_deg)
  c2ws = _camera_path(rng, frames)
  views = [render(c2w, K, hw, scene) for c2w in c2ws]
  return (np.stack([v[0] for v in views]), np.stack([v[1] for v in views]).astype(np.float32), c2ws, K)


def make_scene(folder: Path, rng: np.random.Generator, frames: int, hw: tuple[int, int],
               fov_deg: float = 75.0) -> None:
  """Render and write one scene folder in the official layout (plus ``depths/``)."""
  h, w = hw
  scene = _random_scene(rng)
  K = _intrinsics(hw, fov_deg)
  fl = K[0, 0]
  c2ws = _camera_path(rng, frames)
  (folder / "images").mkdir(parents=True, exist_ok=True)
  (folder / "depths").mkdir(exist_ok=True)
  meta = {"camera_model": "OPENCV", "frames": []}
  for i, c2w in enumerate(c2ws):
    rgb, depth = render(c2w, K, hw, scene)
    Image.fromarray(rgb).save(folder / "images" / f"frame{i:05d}.png")
    np.save(folder / "depths" / f"frame{i:05d}.npy", depth)
    meta["frames"].append(dict(file_path=f"images/frame{i:05d}.png", w=w, h=h, fl_x=fl, fl_y=fl, cx=w / 2,
                               cy=h / 2, transform_matrix=c2w.tolist()))
  (folder / "transforms.json").write_text(json.dumps(meta, indent=1))
  (folder / "captions.txt").write_text("\n".join(_captions(rng, scene)) + "\n")


def _write_lists(folder: Path, split: str, scenes: list[Path]) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for kind, rel in (("videos_dirs", "images"), ("cameras_paths", "transforms.json"),
                    ("captions_paths", "captions.txt")):
    (folder / f"{split}_{kind}.txt").write_text("".join(f"{(s / rel).resolve()}\n" for s in scenes))


def generate(out: str | Path, scenes: int = 2, *, frames: int = 16, height: int = 36, width: int = 48,
             datasets: tuple[str, ...] = ("re10k", "waymo"), test_scenes: int = 1, seed: int = 0) -> Path:
  """Write a synthetic dataset root: ``scenes`` train + ``test_scenes`` test scenes per dataset."""
  require(scenes >= 1 and frames >= 1 and test_scenes >= 0, "need scenes >= 1, frames >= 1, test_scenes >= 0.")
  require(height >= 8 and width >= 8, f"image size must be at least 8x8, got {width}x{height}.")
  require(len(datasets) >= 1 and len(set(datasets)) == len(datasets), f"bad dataset names {datasets}.")
  out = Path(out)
  rng = np.random.default_rng(seed)
  all_train, all_test = [], []
  for ds in datasets:
    train = [out / ds / f"scene_{i:04d}" for i in range(scenes)]
    test = [out / ds / f"test_scene_{i:04d}" for i in range(test_scenes)]
    for s in train + test:
      make_scene(s, rng, frames, (height, width))
    _write_lists(out / ds, "train", train)
    all_train += train
    all_test += test
  _write_lists(out, "train", all_train)
  if all_test:
    _write_lists(out, "test", all_test)
  return out


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description="Write synthetic Gen3R scenes in the official layout.")
  p.add_argument("--out", required=True)
  p.add_argument("--scenes", type=int, default=2, help="train scenes per dataset")
  p.add_argument("--test-scenes", type=int, default=1, help="test scenes per dataset")
  p.add_argument("--frames", type=int, default=16)
  p.add_argument("--size", type=int, default=None, help="square images of this size (overrides width/height)")
  p.add_argument("--width", type=int, default=48)
  p.add_argument("--height", type=int, default=36)
  p.add_argument("--datasets", default="re10k,waymo", help="comma-separated dataset folder names")
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  h, w = (a.size, a.size) if a.size else (a.height, a.width)
  out = generate(a.out, a.scenes, frames=a.frames, height=h, width=w, datasets=tuple(a.datasets.split(",")),
                 test_scenes=a.test_scenes, seed=a.seed)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
