"""COLMAP text model writer: ``cameras.txt``, ``images.txt``, ``points3D.txt`` (COLMAP's documented text format,
https://colmap.github.io/format.html), as COLMAP, pycolmap, gsplat and the 3D Gaussian-splatting trainers read it.

    write_colmap_text("scene/sparse/0", c2w=c2w, K=K, width=W, height=H, image_names=names,
                      points=xyz, colors=rgb, pixels=fvu)

* ``cameras.txt``: ``PINHOLE`` cameras (``fx fy cx cy``, no distortion); one camera shared by every image when
  all intrinsics are equal, else one per image.
* ``images.txt``: per image ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``: the world-to-camera pose (OpenCV
  camera axes, :mod:`gen3r_jax.camera_axes`) as a unit quaternion with ``QW >= 0`` and a translation; then its
  2D observations ``X Y POINT3D_ID`` (empty line without ``pixels``).
* ``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK[]``. With ``pixels`` (frame, row, column of the pixel each
  point was unprojected from) every point has a one-element track ``(IMAGE_ID, POINT2D_IDX)`` and the image lists
  the point at its projection through the written camera, so the model is consistent (reprojection error 0, the
  ``ERROR`` written). Ids start at 1, as COLMAP's.

Intrinsics are written as given: ``K`` holds the principal point in the convention of the data the models were
trained on (VGGT predicts ``cx = W / 2``); see ``docs/cameras.md`` for the half-pixel note. No model runs here.
"""

from __future__ import annotations

import os

import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.camera_axes import as_4x4, invert_rigid, rotmat_to_qvec
from gen3r_jax.errors import require
from gen3r_jax.ply import to_uint8


FILES = ("cameras.txt", "images.txt", "points3D.txt")


def _write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(text)


def _rows(fmt: str, *cols) -> str:
  """One formatted line per row of the columns (numpy formats the numbers; ~1 s per million rows)."""
  if len(cols[0]) == 0:
    return ""
  return "\n".join(fmt % t for t in zip(*(c.tolist() for c in cols))) + "\n"


def shared_intrinsics(K: np.ndarray) -> bool:
  """Whether one camera describes every image (all ``K`` equal)."""
  return bool(np.all(K == K[:1]))


def write_colmap_text(folder: str, *, c2w, K, width: int, height: int, image_names, points=None, colors=None,
                      pixels=None) -> dict[str, int]:
  """Write the model into ``folder`` (created); returns ``{"cameras", "images", "points"}`` counts.

  Args:
    c2w: ``[F, 4, 4]`` (or ``[F, 3, 4]``) camera-to-world, OpenCV axes; K: ``[F, 3, 3]``.
    image_names: ``F`` file names (as stored under the project's ``images/``).
    points: ``[N, 3]`` world points; colors ``[N, 3]`` uint8 (or float in [0, 1]); pixels: ``[N, 3]`` int
      ``(frame, row, column)`` of each point (optional: the tracks).
  """
  c2w = as_4x4(c2w)
  K = np.asarray(K, np.float64)
  n_img = c2w.shape[0]
  require(K.shape == (n_img, 3, 3) and len(image_names) == n_img,
          f"COLMAP export: {n_img} poses need K [{n_img}, 3, 3] and {n_img} image names, got {K.shape} and "
          f"{len(image_names)}.")
  pts = np.zeros((0, 3)) if points is None else np.asarray(points, np.float64).reshape(-1, 3)
  col = np.zeros((len(pts), 3), np.uint8) if colors is None else to_uint8(np.asarray(colors).reshape(-1, 3),
                                                                          "COLMAP colours")
  require(len(col) == len(pts), f"COLMAP export: {len(pts)} points but {len(col)} colours.")
  os.makedirs(folder, exist_ok=True)

  shared = shared_intrinsics(K)
  cam_k = K[:1] if shared else K
  cam_ids = np.arange(1, len(cam_k) + 1)
  _write_text(os.path.join(folder, "cameras.txt"),
              "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
              f"# Number of cameras: {len(cam_k)}\n"
              + _rows(f"%d PINHOLE {int(width)} {int(height)} %.17g %.17g %.17g %.17g", cam_ids, cam_k[:, 0, 0],
                      cam_k[:, 1, 1], cam_k[:, 0, 2], cam_k[:, 1, 2]))

  w2c = invert_rigid(c2w)
  q = rotmat_to_qvec(w2c[:, :3, :3])
  t = w2c[:, :3, 3]
  pid = np.arange(1, len(pts) + 1)
  obs_lines = [""] * n_img
  track_img = track_idx = None
  if pixels is not None and len(pts):
    pix = np.asarray(pixels, np.int64).reshape(-1, 3)
    require(len(pix) == len(pts) and pix[:, 0].min() >= 0 and pix[:, 0].max() < n_img,
            f"COLMAP export: pixels must be [N, 3] (frame, row, column) with frames in [0, {n_img}).")
    order = np.argsort(pix[:, 0], kind="stable")
    starts = np.searchsorted(pix[order, 0], np.arange(n_img))
    track_idx = np.empty(len(pts), np.int64)
    track_idx[order] = np.arange(len(pts)) - starts[pix[order, 0]]     # rank within its image
    track_img = pix[:, 0] + 1
    cam = np.einsum("nij,nj->ni", w2c[pix[:, 0], :3, :3], pts) + w2c[pix[:, 0], :3, 3]
    kk = K[pix[:, 0]]
    xy = np.stack([kk[:, 0, 0] * cam[:, 0] / cam[:, 2] + kk[:, 0, 2],
                   kk[:, 1, 1] * cam[:, 1] / cam[:, 2] + kk[:, 1, 2]], -1)
    for f in range(n_img):
      sel = order[starts[f]:starts[f + 1] if f + 1 < n_img else len(order)]
      obs_lines[f] = " ".join(f"{x:.6f} {y:.6f} {p}" for (x, y), p in zip(xy[sel].tolist(), pid[sel].tolist()))
  lines = ["# Image list with two lines of data per image:",
           "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
           "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {n_img}"]
  for i in range(n_img):
    cid = 1 if shared else i + 1
    lines.append(f"{i + 1} " + " ".join(f"{v:.17g}" for v in (*q[i], *t[i])) + f" {cid} {image_names[i]}")
    lines.append(obs_lines[i])
  _write_text(os.path.join(folder, "images.txt"), "\n".join(lines) + "\n")

  head = ("# 3D point list with one line of data per point:\n"
          "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
          f"# Number of points: {len(pts)}\n")
  if track_img is not None:
    body = _rows("%d %.9g %.9g %.9g %d %d %d 0 %d %d", pid, pts[:, 0], pts[:, 1], pts[:, 2], col[:, 0], col[:, 1],
                 col[:, 2], track_img, track_idx)
  else:
    body = _rows("%d %.9g %.9g %.9g %d %d %d 0", pid, pts[:, 0], pts[:, 1], pts[:, 2], col[:, 0], col[:, 1],
                 col[:, 2])
  _write_text(os.path.join(folder, "points3D.txt"), head + body)
  return {"cameras": int(len(cam_k)), "images": int(n_img), "points": int(len(pts))}


__all__ = ("FILES", "write_colmap_text", "shared_intrinsics")
