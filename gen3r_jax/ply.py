"""The point-cloud file both the sampler's export (:mod:`gen3r_jax.sampling.export`) and the evaluation
(:mod:`gen3r_jax.eval.io`) write and read: binary little-endian PLY, ``x y z`` float32 + ``red green blue`` uchar
per vertex. numpy only; a file format, no model.

Colours are uint8, or float in [0, 1] (scaled by 255 and rounded: :func:`to_uint8`, the rule every writer of the
project follows). :func:`read_ply` reads exactly this layout (property names and types checked; ``comment`` lines
allowed anywhere in the header) and raises a one-line :class:`Gen3RInputError` for anything else, including a
file cut short (a full disk, an interrupted copy)."""

from __future__ import annotations


import numpy as np

from gen3r_jax.atomic import atomic_path
from gen3r_jax.errors import Gen3RInputError, require


PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


# numpy field type -> PLY property type (the ones our files use)
_PLY_TYPES = {"<f4": "float", "|u1": "uchar", "<f8": "double", "<i4": "int", "<u4": "uint"}
# PLY property type names (both spellings of the format) -> numpy type
_PLY_NAMES = {"float": "<f4", "float32": "<f4", "uchar": "|u1", "uint8": "|u1", "double": "<f8", "float64": "<f8",
              "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4"}


def to_uint8(rgb, name: str = "rgb") -> np.ndarray:
  """``[..., 3]`` uint8, or float in [0, 1] (clipped, rounded) -> uint8. Floats far outside [0, 1] are an error."""
  x = np.asarray(rgb)
  require(x.ndim >= 1 and x.shape[-1] == 3, f"{name}: expected channels-last RGB [..., 3], got shape {x.shape}.")
  if x.dtype == np.uint8:
    return x
  require(np.issubdtype(x.dtype, np.floating) or str(x.dtype) == "bfloat16",
          f"{name}: expected uint8 or float in [0, 1], got dtype {x.dtype}.")
  x = x.astype(np.float32)
  require(bool(np.isfinite(x).all()), f"{name}: contains NaN or inf.")
  if x.size:
    lo, hi = float(x.min()), float(x.max())
    require(lo >= -0.05 and hi <= 1.05,
            f"{name}: float values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; a decoder output in [-1, 1] "
            "needs (x + 1) / 2 first.")
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def vertex_ply_bytes(vertices: np.ndarray, comments=()) -> bytes:
  """A binary little-endian PLY of one ``vertex`` element whose properties are the fields of the structured
  array ``vertices`` (names and types as given); ``comments``: header ``comment`` lines (one line each)."""
  header = ["ply", "format binary_little_endian 1.0"] + [f"comment {' '.join(str(c).split())}" for c in comments]
  header += [f"element vertex {len(vertices)}"]
  header += [f"property {_PLY_TYPES[vertices.dtype[n].str]} {n}" for n in vertices.dtype.names] + ["end_header"]
  return ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes()


def ply_bytes(points: np.ndarray, colors: np.ndarray, comments=()) -> bytes:
  """The whole file: header + one vertex per row of ``points [N, 3]`` (float32) and ``colors [N, 3]`` (uint8, or
  float in [0, 1]: :func:`to_uint8`)."""
  p = np.asarray(points, np.float32).reshape(-1, 3)
  c = to_uint8(np.asarray(colors).reshape(-1, 3), "PLY colours")
  require(len(p) == len(c), f"PLY: {len(p)} points but {len(c)} colours.")
  v = np.empty(p.shape[0], PLY_DTYPE)
  v["x"], v["y"], v["z"] = p.T
  v["red"], v["green"], v["blue"] = c.T
  return vertex_ply_bytes(v, comments)


def write_ply(path: str, points: np.ndarray, colors: np.ndarray) -> int:
  """Write the finite points of ``points [..., 3]`` with their ``colors [..., 3]`` (uint8, or float in [0, 1])
  atomically (a temporary file beside ``path``, flushed, then renamed over it). Returns the vertex count."""
  p = np.asarray(points, np.float32).reshape(-1, 3)
  c = to_uint8(np.asarray(colors).reshape(-1, 3), "PLY colours")
  require(len(p) == len(c), f"PLY: {len(p)} points but {len(c)} colours.")
  keep = np.isfinite(p).all(-1)
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(ply_bytes(p[keep], c[keep]))
  return int(keep.sum())


def read_header(data: bytes, path: str) -> tuple[list[str], list[tuple[str, str]], int, int]:
  """``(comments, [(type, name)] of the vertex properties, vertex count, offset of the body)`` of a binary
  little-endian PLY whose first element is ``vertex``; a one-line :class:`Gen3RInputError` otherwise."""
  end = data.find(b"end_header\n")
  require(data.startswith(b"ply\n") and end > 0, f"{path}: not a PLY file (no 'ply' ... 'end_header' header).")
  try:
    lines = [ln.strip() for ln in data[:end].decode("ascii").split("\n")]
  except UnicodeDecodeError:
    raise Gen3RInputError(f"{path}: not a PLY file (its header is not ASCII).") from None
  require("format binary_little_endian 1.0" in lines, f"{path}: only binary little-endian PLY is supported.")
  comments = [ln[len("comment"):].strip() for ln in lines if ln.startswith("comment")]
  elements, props = [], []
  for ln in lines:
    parts = ln.split()
    if parts[:1] == ["element"]:
      require(len(parts) == 3 and parts[2].isdigit(), f"{path}: malformed PLY header line {ln!r}.")
      elements.append((parts[1], int(parts[2])))
    elif parts[:1] == ["property"] and len(elements) == 1:
      require(len(parts) == 3, f"{path}: unsupported PLY property {ln!r} (lists are not read here).")
      props.append((parts[1], parts[2]))
  require(bool(elements) and elements[0][0] == "vertex", f"{path}: expected the 'vertex' element first, got "
                                                         f"{[e[0] for e in elements]}.")
  return comments, props, elements[0][1], end + len(b"end_header\n")


def read_ply(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Read a PLY written as above -> (xyz float32 ``[N, 3]``, rgb uint8 ``[N, 3]``)."""
  with open(path, "rb") as f:
    data = f.read()
  _, props, n, start = read_header(data, path)
  names = [p[1] for p in props]
  require(names == list(PLY_DTYPE.names), f"{path}: expected properties {list(PLY_DTYPE.names)}, got {names}.")
  types = [_PLY_NAMES.get(t) for t, _ in props]
  want = [PLY_DTYPE[nm].str for nm in PLY_DTYPE.names]
  require(types == want, f"{path}: expected property types float x y z and uchar red green blue, got "
                         f"{', '.join(f'{t} {nm}' for t, nm in props)}.")
  body = len(data) - start
  require(body >= n * PLY_DTYPE.itemsize, f"{path}: truncated PLY: the header declares {n} vertices "
                                          f"({n * PLY_DTYPE.itemsize} bytes) but {body} bytes follow; write or copy "
                                          "the file again.")
  v = np.frombuffer(data, PLY_DTYPE, count=n, offset=start)
  return np.stack([v["x"], v["y"], v["z"]], 1), np.stack([v["red"], v["green"], v["blue"]], 1)


__all__ = ("PLY_DTYPE", "to_uint8", "vertex_ply_bytes", "ply_bytes", "write_ply", "read_header", "read_ply")
