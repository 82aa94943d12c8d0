"""User-facing errors.

Every check on user input raises :class:`Gen3RInputError` *before* anything is traced or compiled, with a
message that names what was wrong and how to fix it. Tests match on these messages.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class Gen3RInputError(ValueError):
  """Bad user input (shapes, sizes, dtypes, files, configs). The message says how to fix it."""


def require(cond: bool, msg: str) -> None:
  """Raise :class:`Gen3RInputError` with ``msg`` unless ``cond`` holds."""
  if not cond:
    raise Gen3RInputError(msg)


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | None = None,
    layout: str | None = None,
    floating: bool = False,
    dims: dict[int, int] | None = None,
) -> None:
  """Validate rank, float dtype and fixed dimensions of an array-like input.

  Args:
    x: the array (anything with ``.shape`` and ``.dtype``).
    name: how the user knows this argument (used in the message).
    ndim: required rank.
    layout: human-readable layout, e.g. ``"[B, T, H, W, C]"`` (used in the message).
    floating: require a floating-point dtype.
    dims: ``{axis: size}`` that must match exactly.
  """
  shape = tuple(getattr(x, "shape", ()))
  where = f" {layout}" if layout else ""
  if not hasattr(x, "shape"):
    raise Gen3RInputError(f"{name}: expected an array{where}, got {type(x).__name__}.")
  if ndim is not None and len(shape) != ndim:
    raise Gen3RInputError(
        f"{name}: expected a rank-{ndim} array{where}, got shape {shape} (rank {len(shape)}).")
  if floating and not np.issubdtype(np.dtype(x.dtype), np.floating) and str(x.dtype) != "bfloat16":
    raise Gen3RInputError(
        f"{name}: expected a floating-point array, got dtype {x.dtype}; convert it first, "
        "e.g. x.astype(jnp.float32) (video in [-1, 1]).")
  for axis, size in (dims or {}).items():
    if shape[axis] != size:
      raise Gen3RInputError(
          f"{name}: axis {axis} of shape {shape}{where} must be {size}, got {shape[axis]}.")


def fmt_list(items: Sequence[Any], limit: int = 20) -> str:
  """Format a list for an error message, truncated after ``limit`` items."""
  items = list(items)
  head = ", ".join(str(i) for i in items[:limit])
  return head + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")
