"""The point-cloud file both the sampler's export (:mod:`gen3r_jax.sampling.export`) and the evaluation
(:mod:`gen3r_jax.eval.io`) write and read: binary little-endian PLY, ``x y z`` float32 + ``red green blue`` uchar
per vertex. numpy only; a file format, no model."""

from __future__ import annotations


import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.errors import require


PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


# numpy field type -> PLY property type (the ones our files use)
_PLY_TYPES = {"<f4": "float", "|u1": "uchar", "<f8": "double", "<i4": "int", "<u4": "uint"}


def vertex_ply_bytes(vertices: np.ndarray) -> bytes:
  """A binary little-endian PLY of one ``vertex`` element whose properties are the fields of the structured
  array ``vertices`` (names and types as given)."""
  header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}"]
  header += [f"property {_PLY_TYPES[vertices.dtype[n].str]} {n}" for n in vertices.dtype.names] + ["end_header"]
  return ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes()


def ply_bytes(points: np.ndarray, colors: np.ndarray) -> bytes:
  """The whole file: header + one vertex per row of ``points [N, 3]`` (float32) and ``colors [N, 3]`` (uint8)."""
  p = np.asarray(points, np.float32).reshape(-1, 3)
  c = np.asarray(colors, np.uint8).reshape(-1, 3)
  require(len(p) == len(c), f"PLY: {len(p)} points but {len(c)} colours.")
  v = np.empty(p.shape[0], PLY_DTYPE)
  v["x"], v["y"], v["z"] = p.T
  v["red"], v["green"], v["blue"] = c.T
  return vertex_ply_bytes(v)


def write_ply(path: str, points: np.ndarray, colors: np.ndarray) -> int:
  """Write the finite points of ``points [..., 3]`` with their ``colors [..., 3]`` (uint8) atomically (a temporary
  file beside ``path``, flushed, then renamed over it). Returns the vertex count."""
  p = np.asarray(points, np.float32).reshape(-1, 3)
  c = np.asarray(colors).reshape(-1, 3).astype(np.uint8)
  keep = np.isfinite(p).all(-1)
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(ply_bytes(p[keep], c[keep]))
  return int(keep.sum())


def read_ply(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Read a PLY written as above -> (xyz float32 ``[N, 3]``, rgb uint8 ``[N, 3]``)."""
  with open(path, "rb") as f:
    data = f.read()
  end = data.find(b"end_header\n")
  require(data.startswith(b"ply") and end > 0, f"{path}: not a PLY file.")
  header = data[:end].decode("ascii").split("\n")
  require("format binary_little_endian 1.0" in header, f"{path}: only binary little-endian PLY is supported.")
  props = [ln.split()[-1] for ln in header if ln.startswith("property")]
  require(props == list(PLY_DTYPE.names), f"{path}: expected properties {PLY_DTYPE.names}, got {props}.")
  n = int(next(ln.split()[-1] for ln in header if ln.startswith("element vertex")))
  v = np.frombuffer(data[end + len(b"end_header\n"):], PLY_DTYPE, count=n)
  return np.stack([v["x"], v["y"], v["z"]], 1), np.stack([v["red"], v["green"], v["blue"]], 1)


__all__ = ("PLY_DTYPE", "vertex_ply_bytes", "ply_bytes", "write_ply", "read_ply")
