"""3D rotary position embedding (Wan DiT), real arithmetic, phases in float32.

Wan splits the ``c = head_dim / 2`` channel pairs ``(2k, 2k+1)`` of every head into
``[c - 2 (c // 3), c // 3, c // 3]`` pairs for the (frame, height, width) axes. Axis ``a`` with ``n_a`` pairs
rotates pair ``j`` by ``pos * theta^(-2j / (2 n_a))``. The official code multiplies complex numbers in complex128;
here the per-axis phase tables are built on the host in float64 (the grid is static), rounded once to float32
``cos``/``sin`` tables, broadcast over the token grid inside the jitted function and applied as a real 2x2
rotation (which XLA fuses with its neighbours).

"Concatenated" grids (Gen3R's appearance | geometry latents side by side along width): both width halves get
the *same* width phases, positions ``0 .. w/2 - 1`` repeated twice (the official code uses it whenever the token
grid is not square).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
  """Channel pairs per axis (frame, height, width) for ``head_dim``: ``[c - 2 (c//3), c//3, c//3]``."""
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
  c = head_dim // 2
  return (c - 2 * (c // 3), c // 3, c // 3)


def inv_freqs(pairs: int, theta: float = 10000.0) -> np.ndarray:
  """``theta^(-2j / (2 pairs))`` for ``j < pairs`` in float64 (``rope_params(L, 2 * pairs)``)."""
  return 1.0 / np.power(theta, np.arange(0, 2 * pairs, 2, dtype=np.float64) / (2 * pairs))


def axis_phases(positions: np.ndarray, pairs: int, theta: float = 10000.0) -> np.ndarray:
  """``[len(positions), pairs]`` float64 phases of one axis."""
  return np.outer(np.asarray(positions, np.float64), inv_freqs(pairs, theta))


def freqs_table(max_len: int, head_dim: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
  """The official ``model.freqs`` table as ``(real, imag)`` ``[max_len, head_dim/2]`` float64 (for checks)."""
  pos = np.arange(max_len)
  ph = np.concatenate([axis_phases(pos, n, theta) for n in axis_pairs(head_dim)], axis=1)
  return np.cos(ph), np.sin(ph)


def grid_positions(grid: tuple[int, int, int], concatenated: bool) -> tuple[np.ndarray, ...]:
  """Positions along (frame, height, width); concatenated grids repeat ``0..w/2-1`` twice along width."""
  f, h, w = grid
  if concatenated:
    if w % 2:
      raise ValueError(f"concatenated RoPE needs an even token-grid width, got grid {grid}")
    wpos = np.tile(np.arange(w // 2), 2)
  else:
    wpos = np.arange(w)
  return np.arange(f), np.arange(h), wpos


def rope_tables(grid: tuple[int, int, int], head_dim: int, *, concatenated: bool = False,
                theta: float = 10000.0) -> tuple[jax.Array, jax.Array]:
  """``(cos, sin)`` of shape ``[f*h*w, head_dim/2]`` float32 for a token grid in f-major, h, w order.

  The three small per-axis tables are host constants; the broadcast to the full grid happens on device (so a
  large grid never becomes a large HLO constant).
  """
  f, h, w = grid
  pos = grid_positions(grid, concatenated)
  tabs = [axis_phases(p, n, theta) for p, n in zip(pos, axis_pairs(head_dim))]
  shapes = [(f, 1, 1, -1), (1, h, 1, -1), (1, 1, w, -1)]
  cos_parts, sin_parts = [], []
  for tab, shp in zip(tabs, shapes):
    full = (f, h, w, tab.shape[1])
    cos_parts.append(jnp.broadcast_to(jnp.asarray(np.cos(tab), jnp.float32).reshape(shp), full))
    sin_parts.append(jnp.broadcast_to(jnp.asarray(np.sin(tab), jnp.float32).reshape(shp), full))
  c = head_dim // 2
  cos = jnp.concatenate(cos_parts, axis=-1).reshape(f * h * w, c)  # [L, D/2]
  sin = jnp.concatenate(sin_parts, axis=-1).reshape(f * h * w, c)  # [L, D/2]
  return cos, sin


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotate channel pairs ``(2k, 2k+1)`` of ``x`` ``[B, L, H, D]`` by ``cos/sin`` ``[L, D/2]``; float32 out."""
  b, l, nh, d = x.shape
  xf = x.astype(jnp.float32).reshape(b, l, nh, d // 2, 2)
  xr, xi = xf[..., 0], xf[..., 1]                   # [B, L, H, D/2]
  c = cos[None, :, None, :]
  s = sin[None, :, None, :]
  out = jnp.stack([xr * c - xi * s, xr * s + xi * c], axis=-1)  # [B, L, H, D/2, 2]
  return out.reshape(b, l, nh, d)
