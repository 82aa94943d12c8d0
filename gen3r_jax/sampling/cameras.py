"""Camera trajectories for sampling: the built-in trajectories of ``infer.py``, user camera files, and the
pose normalisation of ``gen3r.utils.data_utils.preprocess_poses``. Host-side numpy (``[F, 4, 4]`` matrices).

Built-in trajectories (``get_poses``, camera-to-world, first camera = identity, OpenCV axes: x right, y down,
z forward):

* ``zoom_in`` / ``zoom_out``: translation ``z = linspace(0, +-scene_scale, F)`` (zoom_in moves along +z).
* ``arc_left`` / ``arc_right``: rotation about y by ``linspace(0, -+15 deg, F)``, no translation
  (``R_y = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``; arc_right has the positive angle).
* ``translate_up`` / ``translate_down``: despite the name a pure TILT about x by ``linspace(0, +-15 deg, F)``
  (``R_x = [[1, 0, 0], [0, c, -s], [0, s, c]]``).
* ``free``: all identity (the Plücker map is then replaced by zeros, see ``conditioning.py``).

``linspace`` is float32 with PyTorch's CPU formula (:func:`torch_linspace_f32`); cos/sin are taken in float64 of the float32 angle and
rounded to float32, as the reference does. In ``infer.py`` the scene scale is ``0.8 * median(VGGT depth)``
(:func:`scene_scale_from_depth`) and the intrinsics are VGGT's estimate for frame 0 repeated for every frame
(:func:`trajectory_intrinsics`); the VGGT call itself lives with the VGGT model.

Camera JSON file (the format ``infer.py --cameras path.json`` reads and the format it writes as
``cameras.json``)::

    {
      "extrinsics": [[[r00, r01, r02, tx], [r10, r11, r12, ty], [r20, r21, r22, tz], [0, 0, 0, 1]], ...],
      "intrinsics": [[[fx, 0, cx], [0, fy, cy], [0, 0, 1]], ...]
    }

* ``extrinsics``: one WORLD-TO-CAMERA matrix per frame (OpenCV convention), ``4x4`` (or ``3x4``, the bottom
  row ``[0, 0, 0, 1]`` is then added). Instead of ``extrinsics`` the file may give ``"c2w"``: the same
  matrices as CAMERA-TO-WORLD (give exactly one of the two keys).
* ``intrinsics``: one ``3x3`` pinhole matrix per frame, in pixels of the model's input frames (560 x 560 after
  the resize + centre crop of ``infer.py``).
* At least ``num_frames`` cameras; as in ``infer.py`` the first ``num_frames`` are used. Values are read in
  float64 (as ``np.array`` of the JSON lists), poses are made relative to the first camera.
* The 3x3 block of each used pose must be a rotation (``max |R^T R - I|`` and ``|det R - 1|`` at most
  ``ROTATION_TOL`` = 1e-3): a scaled, sheared or mirrored matrix is refused, naming the frame
  (:func:`check_rotations`; ``infer.py`` accepts it silently).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from gen3r_jax.errors import Gen3RInputError, fmt_list, require

BUILTIN_TRAJECTORIES = ("zoom_in", "zoom_out", "arc_left", "arc_right", "translate_up", "translate_down", "free")
ROTATION_TOL = 1e-3   # max |R^T R - I| and |det R - 1| of a camera file's rotations (check_rotations)


def check_num_frames(num_frames) -> int:
  """``num_frames`` must be ``1 + 4k`` (the Wan VAE's temporal compression), e.g. 49."""
  ok = isinstance(num_frames, (int, np.integer)) and not isinstance(num_frames, bool) and num_frames >= 1
  require(ok and (int(num_frames) - 1) % 4 == 0,
          f"num_frames must be 1 + 4k (1, 5, 9, ..., 49), got {num_frames!r}; the video VAE compresses time by 4 "
          "after the first frame.")
  return int(num_frames)


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  """``torch.linspace(start, end, steps, dtype=torch.float32)`` on CPU, bit for bit.

  PyTorch's serial kernel counts the first half up from ``start`` (``start + step * i``) and the second half
  down from ``end`` (``end - step * (steps - 1 - i)``); its AVX2 build contracts each into one fused
  multiply-add (a single float32 rounding), which float64 reproduces exactly (the product of two float32
  values is exact in float64). Checked against torch for 1..256 steps.
  """
  start32, end32 = np.float32(start), np.float32(end)
  if steps == 1:
    return np.array([start32], np.float32)
  step = np.float64(np.float32((end32 - start32) / np.float32(steps - 1)))
  idx = np.arange(steps, dtype=np.float64)
  up = np.float64(start32) + step * idx
  down = np.float64(end32) - step * (steps - 1 - idx)
  return np.where(idx < steps // 2, up, down).astype(np.float32)


def _rot_y(theta: float) -> np.ndarray:
  c, s = math.cos(theta), math.sin(theta)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], np.float32)


def _rot_x(theta: float) -> np.ndarray:
  c, s = math.cos(theta), math.sin(theta)
  return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], np.float32)


def check_trajectory(cam_type: str) -> str:
  if cam_type not in BUILTIN_TRAJECTORIES:
    raise Gen3RInputError(
        f"unknown camera trajectory {cam_type!r}: choose one of {fmt_list(BUILTIN_TRAJECTORIES)}, "
        "or pass the path of a cameras JSON file (see gen3r_jax.sampling.cameras).")
  return cam_type


def get_poses(cam_type: str, num_frames: int, scene_scale: float = 1.0) -> np.ndarray:
  """Camera-to-world matrices ``[F, 4, 4]`` float32 of a built-in trajectory (``infer.get_poses``)."""
  check_trajectory(cam_type)
  require(isinstance(num_frames, (int, np.integer)) and num_frames > 0,
          f"num_frames must be a positive integer, got {num_frames!r}.")
  f = int(num_frames)
  poses = np.tile(np.eye(4, dtype=np.float32), (f, 1, 1))
  if cam_type in ("zoom_in", "zoom_out"):
    end = float(scene_scale) * (1.0 if cam_type == "zoom_in" else -1.0)
    poses[:, 2, 3] = torch_linspace_f32(0.0, end, f)
  elif cam_type in ("arc_left", "arc_right", "translate_up", "translate_down"):
    end = math.radians(15.0) * (1.0 if cam_type in ("arc_right", "translate_up") else -1.0)
    rot = _rot_y if cam_type.startswith("arc") else _rot_x
    for i, a in enumerate(torch_linspace_f32(0.0, end, f)):
      poses[i, :3, :3] = rot(float(a))
  return poses


def preprocess_poses(c2ws) -> np.ndarray:
  """Poses relative to the first camera: ``rel_i = inv(c2w_0) @ c2w_i``, ``rel_0 = I`` exactly.

  Computed in float64 and returned in the input's float dtype. ``c2ws``: ``[F, 4, 4]``.
  """
  c2ws = np.asarray(c2ws)
  require(c2ws.ndim == 3 and c2ws.shape[1:] == (4, 4),
          f"preprocess_poses: expected camera-to-world matrices [F, 4, 4], got shape {c2ws.shape}.")
  out_dtype = c2ws.dtype if np.issubdtype(c2ws.dtype, np.floating) else np.float32
  c64 = c2ws.astype(np.float64)
  rel = np.linalg.inv(c64[0]) @ c64
  rel[0] = np.eye(4)
  return rel.astype(out_dtype)


def scene_scale_from_depth(depth) -> float:
  """``0.8 * torch.median(depth)`` of ``infer.py``: the LOWER of the two middle values, over all elements."""
  flat = np.asarray(depth, np.float32).ravel()
  require(flat.size > 0, "scene_scale_from_depth: the depth map is empty.")
  k = (flat.size - 1) // 2
  return 0.8 * float(np.partition(flat, k)[k])


def trajectory_intrinsics(k0, num_frames: int) -> np.ndarray:
  """The intrinsics of the first frame repeated for every frame: ``[3, 3] -> [F, 3, 3]``."""
  k0 = np.asarray(k0)
  require(k0.shape == (3, 3), f"intrinsics of the first frame must be [3, 3], got shape {k0.shape}.")
  return np.repeat(k0[None], int(num_frames), axis=0)


# ---- camera files ----

def _as_matrices(value: Any, key: str, shapes: tuple[tuple[int, int], ...]) -> np.ndarray:
  try:
    arr = np.array(value, dtype=np.float64)
  except (TypeError, ValueError):
    raise Gen3RInputError(
        f"cameras JSON: {key!r} must be a list of {' or '.join(f'{a}x{b}' for a, b in shapes)} number "
        "matrices (one per frame); it has ragged or non-numeric entries.") from None
  if arr.ndim != 3 or arr.shape[1:] not in shapes:
    raise Gen3RInputError(
        f"cameras JSON: {key!r} must have shape [F, {' or '.join(f'{a}, {b}' for a, b in shapes)}], "
        f"got {list(arr.shape)}.")
  if not np.all(np.isfinite(arr)):
    raise Gen3RInputError(f"cameras JSON: {key!r} contains NaN or infinite values.")
  return arr


def _to_4x4(m: np.ndarray, key: str) -> np.ndarray:
  if m.shape[1:] == (3, 4):
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (m.shape[0], 1, 4))
    m = np.concatenate([m, bottom], axis=1)
  bad = np.where(np.any(np.abs(m[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])) > 1e-6, axis=1))[0]
  require(bad.size == 0, f"cameras JSON: {key!r} matrix {bad[:1].tolist()} has bottom row "
                         f"{m[bad[0], 3].tolist() if bad.size else ''}; it must be [0, 0, 0, 1].")
  return m


def check_rotations(m: np.ndarray, key: str, tol: float = ROTATION_TOL) -> None:
  """Each pose ``[F, 4, 4]`` must be a rotation + translation: ``max |R^T R - I|`` and ``|det R - 1|`` <= ``tol``.

  A scaled, sheared or mirrored 3x3 block is not a camera pose: ``preprocess_poses`` and the Plücker rays would use
  it as given and condition the model on a camera that cannot exist. The official example cameras (float32 values
  written as JSON) are orthonormal to 4e-7.
  """
  r = m[:, :3, :3]
  det = np.linalg.det(r)
  sing = np.where(np.abs(det) < 1e-8)[0]
  require(sing.size == 0, f"cameras JSON: {key!r} frame {sing[0] if sing.size else ''} is singular (its 3x3 "
                          "rotation block has zero determinant).")
  err = np.abs(np.einsum("fji,fjk->fik", r, r) - np.eye(3)).max(axis=(1, 2))
  bad = np.where((err > tol) | (np.abs(det - 1.0) > tol))[0]
  if bad.size:
    i = int(bad[0])
    what = ("a mirror (det < 0)" if det[i] < 0 else "scaled" if np.abs(np.abs(det[i]) - 1.0) > tol
            else "sheared or not orthogonal")
    raise Gen3RInputError(
        f"cameras JSON: {key!r} frame {i} is not a rotation + translation: its 3x3 block is {what} "
        f"(max |R^T R - I| = {err[i]:.3g}, det R = {det[i]:.6g}; tolerance {tol:g})"
        + (f", and so are {bad.size - 1} more frames" if bad.size > 1 else "")
        + "; give orthonormal rotations with det +1 (scale belongs in the translation or the intrinsics).")


def parse_cameras(data: Any, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Validate a decoded cameras JSON object. Returns ``(c2ws [F, 4, 4], Ks [F, 3, 3])`` float64, absolute."""
  f = check_num_frames(num_frames)
  require(isinstance(data, dict),
          f"cameras JSON: the top level must be an object with 'extrinsics' (or 'c2w') and 'intrinsics', "
          f"got {type(data).__name__}.")
  has_ext, has_c2w = "extrinsics" in data, "c2w" in data
  require(has_ext != has_c2w, "cameras JSON: give exactly one of 'extrinsics' (world-to-camera) or 'c2w' "
                              f"(camera-to-world); found keys {sorted(data)}.")
  require("intrinsics" in data, f"cameras JSON: missing 'intrinsics' (one 3x3 matrix per frame); found keys "
                                f"{sorted(data)}.")
  key = "extrinsics" if has_ext else "c2w"
  poses = _to_4x4(_as_matrices(data[key], key, ((4, 4), (3, 4))), key)
  ks = _as_matrices(data["intrinsics"], "intrinsics", ((3, 3),))
  require(poses.shape[0] == ks.shape[0],
          f"cameras JSON: {poses.shape[0]} {key!r} matrices but {ks.shape[0]} 'intrinsics'; give one of each "
          "per frame.")
  require(poses.shape[0] >= f, f"cameras JSON: {poses.shape[0]} cameras, but num_frames={f} needs at least {f}.")
  poses, ks = poses[:f], ks[:f]
  check_rotations(poses, key)
  bad = np.where((ks[:, 0, 0] <= 0) | (ks[:, 1, 1] <= 0))[0]
  require(bad.size == 0, f"cameras JSON: 'intrinsics' {bad[:1].tolist()} has a non-positive focal length "
                         "(fx = K[0][0] and fy = K[1][1] must be > 0, in pixels).")
  c2ws = np.linalg.inv(poses) if has_ext else poses
  return c2ws, ks


def load_cameras_json(path: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Read a cameras JSON file (format in the module docstring): ``(c2ws [F, 4, 4], Ks [F, 3, 3])`` float64."""
  require(os.path.isfile(path), f"cameras file {path!r} not found.")
  try:
    with open(path, encoding="utf-8") as fh:
      data = json.load(fh)
  except json.JSONDecodeError as e:
    raise Gen3RInputError(f"cameras file {path!r} is not valid JSON: {e.msg} at line {e.lineno} column "
                          f"{e.colno}.") from None
  return parse_cameras(data, num_frames)


def resolve_cameras(cameras: str | dict, num_frames: int, *, intrinsics=None,
                    scene_scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``infer.py``'s camera set-up: relative camera-to-world ``[F, 4, 4]`` and intrinsics ``[F, 3, 3]``.

  Args:
    cameras: a built-in trajectory name, the path of a cameras JSON file, or its decoded contents (a dict).
    num_frames: ``1 + 4k``.
    intrinsics: built-in trajectories only: the ``[3, 3]`` intrinsics of the first frame (VGGT's estimate).
    scene_scale: built-in trajectories only: e.g. :func:`scene_scale_from_depth` of VGGT's depth.
  """
  f = check_num_frames(num_frames)
  if cameras in BUILTIN_TRAJECTORIES:
    require(intrinsics is not None and scene_scale is not None,
            f"camera trajectory {cameras!r} needs the first frame's intrinsics and a scene scale (estimated "
            "with VGGT from the control images).")
    c2ws, ks = get_poses(cameras, f, scene_scale), trajectory_intrinsics(intrinsics, f)
  elif isinstance(cameras, dict):
    c2ws, ks = parse_cameras(cameras, f)
  elif isinstance(cameras, str) and (cameras.endswith(".json") or os.path.isfile(cameras)):
    c2ws, ks = load_cameras_json(cameras, f)
  else:
    check_trajectory(cameras)  # raises with the list of names
  return preprocess_poses(c2ws), ks
