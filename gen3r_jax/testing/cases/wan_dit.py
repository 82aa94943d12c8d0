"""Parity case ``wan_dit_tiny``: the i2v Control-Camera DiT, calls a (joint layout + intermediates), b (CFG
batch 2, two text lengths), c (square grid), d (no camera), and the RoPE table."""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
from flax import nnx

from gen3r_jax.convert.core import load_torch_weights
from gen3r_jax.convert.tables.wan_dit import table
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import abstract_model
from gen3r_jax.nn.rope import axis_pairs, rope_tables
from gen3r_jax.testing.parity import Check


def _cl(a: np.ndarray) -> np.ndarray:
  """PyTorch ``B C F H W`` -> ``B F H W C``."""
  return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _pt(a) -> np.ndarray:
  """``B F H W C`` -> PyTorch ``B C F H W``."""
  return np.moveaxis(np.asarray(a), -1, 1)


def rope_table_checks(head_dim: int, rows: int) -> Iterator[Check]:
  """Rebuild the official ``freqs[:rows]`` columns [t | h | w] from the device tables the model uses."""
  cols_cos, cols_sin = [], []
  for axis in range(3):
    grid = tuple(rows if a == axis else 1 for a in range(3))
    cos, sin = rope_tables(grid, head_dim)                 # [rows, head_dim/2], all three axes' columns
    cols_cos.append(np.asarray(cos))
    cols_sin.append(np.asarray(sin))
  c = head_dim // 2
  nt, nh, _ = axis_pairs(head_dim)
  pick = [slice(0, nt), slice(nt, nt + nh), slice(nt + nh, c)]
  real = np.concatenate([cols_cos[a][:, pick[a]] for a in range(3)], axis=1)
  imag = np.concatenate([cols_sin[a][:, pick[a]] for a in range(3)], axis=1)
  yield Check("rope_freqs_real", real)
  yield Check("rope_freqs_imag", imag)


def run(fx, dtype: str) -> Iterator[Check]:
  cfg = WanDiTConfig.from_fixture(fx.config, dtype=dtype)
  model = abstract_model(cfg)  # filled (strictly, every parameter) by the converter: no random init
  load_torch_weights(model, table(cfg), fx.weights_source())
  graphdef, state = nnx.split(model)

  @jax.jit
  def fwd(state, x, t, ctx, clip, y, ycam):
    return nnx.merge(graphdef, state).forward(x, t, ctx, clip_fea=clip, y=y, y_camera=ycam,
                                              intermediates=True)

  ref = fx.tensor("rope_freqs_real")
  yield from rope_table_checks(cfg.head_dim, ref.shape[0])

  for call in fx.calls:
    n = call["name"]
    get = lambda k: fx.tensor(f"{n}.{k}")
    ctx = [get(k.split(".", 1)[1]) for k in call["inputs"] if k.split(".", 1)[1].startswith("context")]
    ycam = _cl(get("y_camera")) if f"{n}.y_camera" in call["inputs"] else None
    out, ex = fwd(state, _cl(get("x")), get("t"), ctx, get("clip_fea"), _cl(get("y")), ycam)
    yield Check(f"{n}.out", _pt(out))
    outputs = set(call["outputs"])
    if f"{n}.control_adapter_out" in outputs:
      yield Check(f"{n}.control_adapter_out", _pt(ex["control_adapter_out"]))
    if f"{n}.patch_embedding_out" in outputs:
      yield Check(f"{n}.patch_embedding_out", _pt(ex["patch_embedding_out"][:1]))
    for k in ("text_embedding_out", "img_emb_out", "time_embedding_out", "time_projection_out"):
      if f"{n}.{k}" in outputs:
        yield Check(f"{n}.{k}", np.asarray(ex[k]))
    for i in range(cfg.num_layers):
      if f"{n}.block{i}_out" in outputs:
        yield Check(f"{n}.block{i}_out", np.asarray(ex["blocks_out"][i]))
