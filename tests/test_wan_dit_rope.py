"""3D RoPE (``gen3r_jax.nn.rope``) against the official complex-number definition, computed in numpy."""

import numpy as np
import jax.numpy as jnp

from gen3r_jax.nn.rope import apply_rope, axis_pairs, freqs_table, rope_tables
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path


def _official_rope(x, grid, head_dim, concatenated):
  """numpy transcription of ``rope_apply`` / ``rope_apply_concatenated`` (complex128) for one sample."""
  f, h, w = grid
  real, imag = freqs_table(1024, head_dim)
  freqs = real + 1j * imag
  nt, nh, nw = axis_pairs(head_dim)
  ft, fh, fw = freqs[:, :nt], freqs[:, nt:nt + nh], freqs[:, nt + nh:]
  wtab = np.tile(fw[:w // 2], (2, 1)) if concatenated else fw[:w]
  table = np.concatenate([
      np.broadcast_to(ft[:f, None, None], (f, h, w, nt)),
      np.broadcast_to(fh[None, :h, None], (f, h, w, nh)),
      np.broadcast_to(wtab[None, None, :], (f, h, w, nw))], axis=-1).reshape(f * h * w, 1, -1)
  l, n, d = x.shape
  xc = x.astype(np.float64).reshape(l, n, d // 2, 2)
  out = (xc[..., 0] + 1j * xc[..., 1]) * table
  return np.stack([out.real, out.imag], axis=-1).reshape(l, n, d)


def test_axis_split_is_wan_split():
  assert axis_pairs(128) == (22, 21, 21)  # 14B / 1.3B head_dim 128: [c - 2(c//3), c//3, c//3], c = 64
  assert axis_pairs(16) == (4, 2, 2)


def test_table_matches_fixture_freqs():
  fx = Fixture.open(fixture_path("wan_dit_tiny"))
  head_dim = fx.config["dim"] // fx.config["num_heads"]
  real, imag = freqs_table(64, head_dim)
  np.testing.assert_allclose(real, fx.tensor("rope_freqs_real"), atol=1e-7)
  np.testing.assert_allclose(imag, fx.tensor("rope_freqs_imag"), atol=1e-7)


def test_apply_rope_matches_complex_product_plain_and_concatenated():
  head_dim = 16
  rs = np.random.RandomState(0)
  for grid, concat in (((2, 3, 3), False), ((2, 2, 6), True), ((3, 4, 8), True)):
    l = int(np.prod(grid))
    x = rs.randn(2, l, 3, head_dim).astype(np.float32)
    cos, sin = rope_tables(grid, head_dim, concatenated=concat)
    ours = np.asarray(apply_rope(jnp.asarray(x), cos, sin))
    for b in range(2):
      np.testing.assert_allclose(ours[b], _official_rope(x[b], grid, head_dim, concat), atol=2e-6)


def test_concatenated_halves_share_width_phases():
  f, h, w = 2, 2, 6
  cos, sin = (np.asarray(a).reshape(f, h, w, -1) for a in rope_tables((f, h, w), 16, concatenated=True))
  np.testing.assert_array_equal(cos[:, :, :3], cos[:, :, 3:])
  np.testing.assert_array_equal(sin[:, :, :3], sin[:, :, 3:])
  plain, _ = (np.asarray(a).reshape(f, h, w, -1) for a in rope_tables((f, h, w), 16))
  assert not np.array_equal(plain[:, :, :3], plain[:, :, 3:])
