"""umT5 encoder + tokenizer: the pipeline's prompt path, conversion, scan/remat, checkpoints, bad input."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from gen3r_jax.convert import load_torch_weights, open_source
from gen3r_jax.convert.check_manifest import check
from gen3r_jax.convert.tables.umt5 import table
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.checkpoint import read_config
from gen3r_jax.models.umt5.t5 import UMT5Config, UMT5Encoder, encode_prompts
from gen3r_jax.models.umt5.tokenizer import UMT5Tokenizer
from gen3r_jax.nn.linear import Dense
from gen3r_jax.nn.params import abstract_module, logical_axes
from gen3r_jax.nn.stack import scan, stack
from gen3r_jax.parallel.rules import make_mesh
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path

MANIFEST = os.path.join(os.path.dirname(fixture_path("umt5_tiny")), "..", "manifests", "umt5_xxl_encoder.json")


@pytest.fixture(scope="module")
def pipeline():
  return Fixture.open(fixture_path("pipeline_tiny"))


@pytest.fixture(scope="module")
def tokenizer(pipeline):
  return UMT5Tokenizer.from_pretrained(os.path.join(pipeline.path, "checkpoint", "tokenizer"))


@pytest.fixture(scope="module")
def tiny():
  """The umt5_tiny fixture model (abstract build + strict conversion) and its inputs."""
  fx = Fixture.open(fixture_path("umt5_tiny"))
  cfg = UMT5Config.from_fixture(fx.config, attention="xla")
  model = abstract_module(lambda: UMT5Encoder(cfg, rngs=nnx.Rngs(0)))
  load_torch_weights(model, table(cfg), fx.weights_source())
  return fx, model


def test_tokenizer_matches_pipeline_ids(pipeline, tokenizer):
  run = pipeline.config["run"]
  for text, name in ((run["prompt"], "prompt"), (run["negative_prompt"], "negative_prompt")):
    out = tokenizer([text], max_length=run["max_sequence_length"])
    np.testing.assert_array_equal(out["input_ids"], pipeline.tensor(f"{name}_input_ids"))
    np.testing.assert_array_equal(out["attention_mask"], pipeline.tensor(f"{name}_attention_mask"))
  assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 1, 2)


def test_tokenizer_truncation_and_special_tokens(tokenizer):
  text = "The palace of Knossos " * 20
  out = tokenizer(text, max_length=16)
  assert out["input_ids"].shape == (1, 16) and out["attention_mask"].all()
  assert out["input_ids"][0, -1] == tokenizer.eos_id
  np.testing.assert_array_equal(out["input_ids"][0, :15], tokenizer.encode(text)[:15])
  # an explicit eos at the end is not duplicated (HF T5Tokenizer behaviour)
  ids = tokenizer("bad detailed</s>")["input_ids"][0]
  np.testing.assert_array_equal(ids[:8], tokenizer("bad detailed")["input_ids"][0, :8])
  assert ids[8] == tokenizer.pad_id


def test_tokenizer_too_long_without_truncation(tokenizer):
  with pytest.raises(Gen3RInputError, match=r"prompts\[0\] has \d+ tokens .* max_length is 16; shorten the prompt"):
    tokenizer("The palace of Knossos " * 20, max_length=16, truncation=False)


def test_tokenizer_needs_spiece_model(tmp_path):
  (tmp_path / "tokenizer.json").write_text("{}")
  with pytest.raises(Gen3RInputError, match="no spiece.model found.*only a HF tokenizer.json"):
    UMT5Tokenizer.from_pretrained(str(tmp_path))
  with pytest.raises(Gen3RInputError, match="expected a string"):
    UMT5Tokenizer.from_pretrained(os.path.join(fixture_path("pipeline_tiny"), "checkpoint", "tokenizer"))([3])


def test_pipeline_prompt_embeds_from_checkpoint(pipeline, tokenizer):
  """tokenizer + text_encoder folder (config.json + safetensors) -> trimmed prompt embeddings."""
  enc_dir = os.path.join(pipeline.path, "checkpoint", "text_encoder")
  cfg = UMT5Config.from_fixture(read_config(enc_dir), attention="xla")
  model = abstract_module(lambda: UMT5Encoder(cfg, rngs=nnx.Rngs(0)))
  report = load_torch_weights(model, table(cfg), open_source(enc_dir))
  assert report.ok and report.counts()["ignored"] == 0
  tol = pipeline.meta["tolerance"]["float32_tensors"]["text"]
  run = pipeline.config["run"]
  toks = tokenizer([run["negative_prompt"], run["prompt"]])
  neg, pos = encode_prompts(model, toks["input_ids"], toks["attention_mask"])
  for ours, name in ((pos, "prompt_embeds"), (neg, "negative_prompt_embeds")):
    np.testing.assert_allclose(np.asarray(ours), pipeline.tensor(name), atol=tol["atol"], rtol=tol["rtol"])


def test_scan_remat_and_logical_axes(tiny):
  fx, model = tiny
  assert logical_axes(model.blocks.attn.q.kernel) == ("layers", "embed", "heads")
  assert logical_axes(model.blocks.pos_embedding) == ("layers", None, "heads")
  assert model.blocks.pos_embedding.shape == (fx.config["num_layers"], 32, fx.config["num_heads"])
  remat = nnx.merge(*nnx.split(model))
  remat.cfg = model.cfg.replace(remat="dots")
  out = nnx.jit(lambda m, i, a: m(i, a))(remat, jnp.asarray(fx.tensor("input_ids")),
                                         jnp.asarray(fx.tensor("attention_mask")))
  np.testing.assert_allclose(out, fx.tensor("hidden_states"), atol=1.1e-5, rtol=1e-5)


class _ToyBlock(nnx.Module):
  def __init__(self, rngs):
    self.fc = Dense(4, 4, rngs=rngs)

  def __call__(self, x):
    return x + jnp.tanh(self.fc(x))


def test_stack_scan_matches_loop_with_remat():
  """gen3r_jax.nn.stack: stacked init + scan == a python loop over the layers, gradients included."""
  blocks = stack(_ToyBlock, 3, nnx.Rngs(0))
  assert blocks.fc.kernel.shape == (3, 4, 4) and logical_axes(blocks.fc.kernel) == ("layers", "embed", "mlp")
  assert not np.allclose(blocks.fc.kernel[0], blocks.fc.kernel[1])  # independent draws per layer
  x = jnp.linspace(-1, 1, 8).reshape(2, 4)
  graphdef, state = nnx.split(blocks)

  def loop(s):
    m, y = nnx.merge(graphdef, s), x
    for i in range(3):
      y = y + jnp.tanh(y @ m.fc.kernel[i] + m.fc.bias[i])
    return jnp.sum(y ** 2)

  def scanned(s, policy):
    return jnp.sum(scan(nnx.merge(graphdef, s), lambda b, h: b(h), x, remat=policy) ** 2)

  g_loop = jax.jit(jax.grad(loop))(state)
  for policy in ("none", "full", "dots"):
    g_scan = jax.jit(jax.grad(scanned), static_argnums=1)(state, policy)
    np.testing.assert_allclose(g_scan["fc"]["kernel"][...], g_loop["fc"]["kernel"][...], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="remat policy must be one of"):
    scan(blocks, lambda b, h: b(h), x, remat="everything")


def test_checkpoint_round_trip_sharded(tiny, tmp_path):
  """Orbax save -> restore straight onto a (fsdp 4, tensor 2) mesh of fake devices == the unsharded reference."""
  fx, model = tiny
  model.save_checkpoint(str(tmp_path / "ckpt"))
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  back = UMT5Encoder.from_checkpoint(str(tmp_path / "ckpt"), mesh=mesh)
  assert back.cfg == model.cfg
  q = back.blocks.attn.q.kernel[...]
  assert q.sharding.spec == P(None, "fsdp", "tensor")  # [layers, embed, heads]
  ids, mask = fx.tensor("input_ids"), fx.tensor("attention_mask")
  out = nnx.jit(lambda m, i, a: m(i, a))(back, jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(out, fx.tensor("hidden_states"), atol=1.1e-5, rtol=1e-5)


def test_bad_input_messages(tiny):
  _, model = tiny
  ids = np.zeros((2, 10), np.int32)
  with pytest.raises(Gen3RInputError, match=r"input_ids: expected a rank-2 array \[B, L\]"):
    model(ids[0])
  with pytest.raises(Gen3RInputError, match="expected integer token ids.*tokenize the prompt first"):
    model(ids.astype(np.float32))
  with pytest.raises(Gen3RInputError, match=r"attention_mask: shape \(2, 9\) must equal input_ids' shape"):
    model(ids, np.ones((2, 9), np.int32))
  with pytest.raises(Gen3RInputError, match=r"token ids must lie in \[0, 64\).*use the tokenizer"):
    model(ids + 64)
  with pytest.raises(Gen3RInputError, match="shared_pos=True .* not supported"):
    UMT5Config.from_fixture({**UMT5Config.tiny().to_dict(), "shared_pos": True})
  with pytest.raises(Gen3RInputError, match="dim_attn 30 must be divisible by num_heads 4"):
    UMT5Config.tiny(dim_attn=30)


def test_full_size_manifest():
  ok, text = check(MANIFEST)
  assert ok, text
  assert "242 mapped, 0 ignored" in text
