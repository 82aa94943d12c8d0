"""umT5 text encoder (encoder only), as Wan / VideoX-Fun's ``WanT5EncoderModel``.

    ids [B, L] ─► token_embedding ─► N × (x += attn(rms1(x), bias_i, mask); x += ffn(rms2(x))) ─► rms ─► [B, L, D]

* Pre-norm blocks with T5 RMS norm (no mean, no bias, eps 1e-6) and no embedding scaling.
* Attention has NO ``1/sqrt(d)`` scale; each layer owns a relative-position bias table ``[buckets, heads]``
  (umT5, ``shared_pos=False``) indexed by bidirectional log buckets of ``key_pos - query_pos``.
* The padding mask only masks keys: it overwrites the logits with ``float32.min`` (padded queries are still
  computed and returned).
* FFN: ``fc2(fc1(x) * gelu_tanh(gate(x)))``.

The full-size model is umT5-XXL (:meth:`UMT5Config.umt5_xxl`); checkpoint names in
``gen3r_jax/convert/tables/umt5.py``; the tokenizer in :mod:`gen3r_jax.models.umt5.tokenizer`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gen3r_jax.errors import Gen3RInputError, check_array, require
from gen3r_jax.models.checkpoint import CheckpointMixin
from gen3r_jax.models.config import ModelConfig, dtype_of
from gen3r_jax.nn.attention import IMPLEMENTATIONS, attention
from gen3r_jax.nn.linear import Dense
from gen3r_jax.nn.norms import RMSNorm
from gen3r_jax.nn.params import make_param
from gen3r_jax.nn.stack import REMAT_POLICIES, scan_layers, stack


@dataclasses.dataclass(frozen=True)
class UMT5Config(ModelConfig):
  """Constructor values of ``WanT5EncoderModel`` plus compute settings."""
  vocab: int = 256384
  dim: int = 4096
  dim_attn: int = 4096
  dim_ffn: int = 10240
  num_heads: int = 64
  num_layers: int = 24
  num_buckets: int = 32
  max_distance: int = 128       # T5RelativeEmbedding.max_dist
  eps: float = 1e-6
  dtype: str = "float32"        # compute dtype
  param_dtype: str = "float32"
  attention: str = "auto"       # gen3r_jax.nn.attention implementation
  remat: str = "none"           # gen3r_jax.nn.stack.REMAT_POLICIES

  def __post_init__(self):
    require(self.dim_attn % self.num_heads == 0,
            f"UMT5Config: dim_attn {self.dim_attn} must be divisible by num_heads {self.num_heads}")
    require(self.num_layers >= 1, "UMT5Config: num_layers must be >= 1")
    self.require_choice("attention", IMPLEMENTATIONS)
    self.require_choice("remat", REMAT_POLICIES)

  @property
  def head_dim(self) -> int:
    return self.dim_attn // self.num_heads

  @classmethod
  def umt5_xxl(cls, **kw) -> "UMT5Config":
    """umT5-XXL encoder as used by Wan2.1 / Gen3R (5.68 B parameters)."""
    return cls(**kw)

  @classmethod
  def tiny(cls, **kw) -> "UMT5Config":
    base = dict(vocab=64, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2, num_buckets=32)
    return cls(**{**base, **kw})

  @classmethod
  def from_fixture(cls, cfg: dict[str, Any], **kw) -> "UMT5Config":
    """From ``WanT5EncoderModel`` constructor kwargs (fixture ``config``, ``text_encoder/config.json``)."""
    if cfg.get("shared_pos", False):
      raise Gen3RInputError("UMT5Config: shared_pos=True (one bias table for all layers, plain T5) is not "
                            "supported; umT5 / Wan use shared_pos=False")
    # dropout_p only matters in training mode; the encoder is frozen in Gen3R, so it is accepted and ignored.
    names = ("vocab", "dim", "dim_attn", "dim_ffn", "num_heads", "num_layers", "num_buckets")
    return cls(**{k: int(cfg[k]) for k in names if k in cfg}, **kw)


@functools.lru_cache(maxsize=32)
def relative_position_buckets(lq: int, lk: int, num_buckets: int = 32, max_distance: int = 128,
                              bidirectional: bool = True) -> np.ndarray:
  """``T5RelativeEmbedding._relative_position_bucket`` of ``rel[i, j] = j - i`` as an int32 ``[lq, lk]``.

  Computed on the host with PyTorch's float32 arithmetic (the log term is truncated toward zero), so the
  bucket boundaries at |rel| = 16, 32, 64 land exactly where the reference puts them.
  """
  rel = np.arange(lk, dtype=np.int64)[None, :] - np.arange(lq, dtype=np.int64)[:, None]
  if bidirectional:
    nb = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * nb
    rel = np.abs(rel)
  else:
    nb = num_buckets
    buckets = np.zeros_like(rel)
    rel = -np.minimum(rel, 0)
  max_exact = nb // 2
  with np.errstate(divide="ignore"):
    logs = (np.log(rel.astype(np.float32) / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
            * np.float32(nb - max_exact))
  large = max_exact + np.where(rel < max_exact, 0, logs).astype(np.int64)
  large = np.minimum(large, nb - 1)
  buckets = buckets + np.where(rel < max_exact, rel, large)
  return buckets.astype(np.int32)


def position_bias(table: jax.Array, buckets: np.ndarray) -> jax.Array:
  """``[buckets, heads]`` table + ``[Lq, Lk]`` buckets -> ``[1, heads, Lq, Lk]`` bias."""
  return jnp.transpose(jnp.take(table, jnp.asarray(buckets), axis=0), (2, 0, 1))[None]


class T5Attention(nnx.Module):
  """Bias-free q/k/v/o projections, unscaled logits + relative bias, key padding mask."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(use_bias=False, dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    self.q = Dense(cfg.dim, cfg.dim_attn, axes=("embed", "heads"), **kw)
    self.k = Dense(cfg.dim, cfg.dim_attn, axes=("embed", "heads"), **kw)
    self.v = Dense(cfg.dim, cfg.dim_attn, axes=("embed", "heads"), **kw)
    self.o = Dense(cfg.dim_attn, cfg.dim, axes=("heads", "embed"), **kw)

  def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array | None) -> jax.Array:
    b, l, _ = x.shape
    h, d = self.cfg.num_heads, self.cfg.head_dim
    q = self.q(x).reshape(b, l, h, d)  # [B, L, H, Dh]
    k = self.k(x).reshape(b, l, h, d)
    v = self.v(x).reshape(b, l, h, d)
    y = attention(q, k, v, implementation=self.cfg.attention, scale=1.0, bias=bias, mask=mask)
    return self.o(y.reshape(b, l, h * d))  # [B, L, D]


class T5FeedForward(nnx.Module):
  """Gated GELU (tanh approximation): ``fc2(fc1(x) * gelu_tanh(gate(x)))``."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    kw = dict(use_bias=False, dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype), rngs=rngs)
    self.gate = Dense(cfg.dim, cfg.dim_ffn, axes=("embed", "mlp"), **kw)
    self.fc1 = Dense(cfg.dim, cfg.dim_ffn, axes=("embed", "mlp"), **kw)
    self.fc2 = Dense(cfg.dim_ffn, cfg.dim, axes=("mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(self.fc1(x) * jax.nn.gelu(self.gate(x), approximate=True))


class T5Block(nnx.Module):
  """One encoder layer with its own relative-position table ``pos_embedding [buckets, heads]``."""

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    pd = dtype_of(cfg.param_dtype)
    self.norm1 = RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pd)
    self.attn = T5Attention(cfg, rngs=rngs)
    self.norm2 = RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pd)
    self.ffn = T5FeedForward(cfg, rngs=rngs)
    std = (2 * cfg.num_buckets * cfg.num_heads) ** -0.5
    self.pos_embedding = make_param(rngs, nnx.initializers.normal(std), (cfg.num_buckets, cfg.num_heads),
                                    (None, "heads"), pd)

  def __call__(self, x: jax.Array, buckets: np.ndarray, mask: jax.Array | None) -> jax.Array:
    bias = position_bias(self.pos_embedding[...], buckets)  # [1, H, L, L]
    x = x + self.attn(self.norm1(x), bias, mask)
    return x + self.ffn(self.norm2(x))  # [B, L, D]


class UMT5Encoder(CheckpointMixin, nnx.Module):
  """``input_ids [B, L]`` (+ ``attention_mask [B, L]``, 1 = token) -> last hidden state ``[B, L, dim]``."""

  Config = UMT5Config

  def __init__(self, cfg: UMT5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pd = dtype_of(cfg.param_dtype)
    self.token_embedding = make_param(rngs, nnx.initializers.normal(1.0), (cfg.vocab, cfg.dim),
                                      ("vocab", "embed"), pd)
    self.blocks = stack(lambda r: T5Block(cfg, rngs=r), cfg.num_layers, rngs)
    self.norm = RMSNorm(cfg.dim, eps=cfg.eps, rngs=rngs, param_dtype=pd)

  def buckets(self, length: int) -> np.ndarray:
    """Relative-position buckets ``[L, L]`` for a sequence of ``length`` tokens."""
    return relative_position_buckets(length, length, self.cfg.num_buckets, self.cfg.max_distance)

  def layer_position_bias(self, layer: int, length: int) -> jax.Array:
    """Relative-position bias ``[1, H, L, L]`` of one layer (debug / parity)."""
    return position_bias(self.blocks.pos_embedding[layer], self.buckets(length))

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    _check_ids(input_ids, attention_mask, self.cfg.vocab)
    length = input_ids.shape[1]
    buckets = self.buckets(length)
    mask = None if attention_mask is None else (attention_mask != 0)[:, None, None, :]  # [B, 1, 1, L]
    x = jnp.take(self.token_embedding[...], input_ids, axis=0).astype(dtype_of(self.cfg.dtype))  # [B, L, D]
    x = scan_layers(self.blocks, x, buckets, mask, remat=self.cfg.remat)
    return self.norm(x)  # [B, L, D]


def _check_ids(input_ids, attention_mask, vocab: int) -> None:
  check_array(input_ids, "input_ids", ndim=2, layout="[B, L]")
  require(jnp.issubdtype(input_ids.dtype, jnp.integer),
          f"input_ids: expected integer token ids, got dtype {input_ids.dtype}; tokenize the prompt first "
          "(gen3r_jax.models.umt5.tokenizer.UMT5Tokenizer)")
  if attention_mask is not None:
    check_array(attention_mask, "attention_mask", ndim=2, layout="[B, L]")
    require(tuple(attention_mask.shape) == tuple(input_ids.shape),
            f"attention_mask: shape {tuple(attention_mask.shape)} must equal input_ids' shape "
            f"{tuple(input_ids.shape)}")
  if not isinstance(input_ids, jax.core.Tracer):
    ids = np.asarray(input_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
      raise Gen3RInputError(
          f"input_ids: token ids must lie in [0, {vocab}) for this encoder, got range [{ids.min()}, "
          f"{ids.max()}]; use the tokenizer that ships with the text encoder checkpoint")


@nnx.jit(graph_updates=False)  # return no parameter copies (they would double device memory)
def _encode(model: UMT5Encoder, input_ids, attention_mask):
  return model(input_ids, attention_mask)


def encode_prompts(model: UMT5Encoder, input_ids: np.ndarray, attention_mask: np.ndarray
                   ) -> list[jax.Array]:
  """The pipeline's ``_get_t5_prompt_embeds``: run on all ``L`` positions, trim each row to its mask length.

  Returns one ``[len_i, dim]`` array per prompt (eos included, padding removed).
  """
  _check_ids(input_ids, attention_mask, model.cfg.vocab)
  hidden = _encode(model, jnp.asarray(input_ids), jnp.asarray(attention_mask))  # [B, L, D]
  lengths = np.asarray(attention_mask).astype(bool).sum(axis=1)
  return [hidden[i, :int(n)] for i, n in enumerate(lengths)]


__all__: Sequence[str] = ("UMT5Config", "UMT5Encoder", "relative_position_buckets", "encode_prompts")
