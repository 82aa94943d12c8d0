"""A coloured point cloud as a binary glTF (``.glb``): what the web app's 3D panel (gradio ``Model3D``) and most
3D tools open. (``Model3D`` reads a ``.ply`` as a Gaussian splat, so ``points.ply`` cannot be shown there.)

    write_point_cloud_glb("cloud.glb", points, colors)      # points [N, 3] float, colors [N, 3] uint8

One mesh with one ``POINTS`` primitive: ``POSITION`` float32 VEC3 and ``COLOR_0`` normalised uint8 VEC4 (RGBA:
a 4-byte stride, as glTF requires of vertex attributes). glTF is y-up, so the points are turned from OpenCV
world axes (y down, z forward of the first camera) by a half turn about x, and centred on ``centre``.
numpy only; written atomically.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.errors import require

GLB_MAGIC = b"glTF"
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])     # a half turn about x: y down -> y up, z forward -> z backward
_ARRAY_BUFFER, _FLOAT, _UNSIGNED_BYTE, _POINTS = 34962, 5126, 5121, 0


def _pad(data: bytes, fill: bytes) -> bytes:
  return data + fill * (-len(data) % 4)


def point_cloud_glb(points, colors, *, centre=None) -> bytes:
  """The ``.glb`` file of ``points [N, 3]`` (OpenCV world axes) coloured by ``colors [N, 3]`` uint8."""
  p = np.asarray(points, np.float64).reshape(-1, 3)
  c = np.asarray(colors).reshape(-1, 3)
  require(len(p) == len(c) and len(p) > 0, f"glb: need one colour per point and at least one point, got {len(p)} "
                                           f"points and {len(c)} colours.")
  require(bool(np.isfinite(p).all()), "glb: the points must be finite (drop NaN / inf first).")
  centre = np.zeros(3) if centre is None else np.asarray(centre, np.float64)
  xyz = ((p - centre) @ OPENCV_TO_GLTF.T).astype("<f4")
  rgba = np.concatenate([c.astype(np.uint8), np.full((len(c), 1), 255, np.uint8)], 1)
  pos_bytes, col_bytes = xyz.tobytes(), rgba.tobytes()
  doc = {
      "asset": {"version": "2.0", "generator": "gen3r_jax"},
      "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
      "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": _POINTS}]}],
      "buffers": [{"byteLength": len(pos_bytes) + len(col_bytes)}],
      "bufferViews": [
          {"buffer": 0, "byteOffset": 0, "byteLength": len(pos_bytes), "target": _ARRAY_BUFFER},
          {"buffer": 0, "byteOffset": len(pos_bytes), "byteLength": len(col_bytes), "target": _ARRAY_BUFFER}],
      "accessors": [
          {"bufferView": 0, "componentType": _FLOAT, "count": len(xyz), "type": "VEC3",
           "min": xyz.min(0).astype(float).tolist(), "max": xyz.max(0).astype(float).tolist()},
          {"bufferView": 1, "componentType": _UNSIGNED_BYTE, "normalized": True, "count": len(rgba),
           "type": "VEC4"}],
  }
  js = _pad(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
  binary = _pad(pos_bytes + col_bytes, b"\0")
  total = 12 + 8 + len(js) + 8 + len(binary)
  return (struct.pack("<4sII", GLB_MAGIC, 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
          + struct.pack("<I4s", len(binary), b"BIN\0") + binary)


def write_point_cloud_glb(path: str, points, colors, *, centre=None) -> str:
  """:func:`point_cloud_glb` written atomically to ``path``; returns it."""
  data = point_cloud_glb(points, colors, centre=centre)
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(data)
  return path


__all__ = ("GLB_MAGIC", "OPENCV_TO_GLTF", "point_cloud_glb", "write_point_cloud_glb")
