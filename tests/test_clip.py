"""CLIP ViT-H/14 image encoder: the pipeline's CLIP path from the checkpoint, batching, configs, bad input."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gen3r_jax.convert import load_torch_weights, open_source
from gen3r_jax.convert.check_manifest import check
from gen3r_jax.convert.tables.clip import table
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.clip.model import CLIPVision, CLIPVisionConfig, encode_videos
from gen3r_jax.nn.params import abstract_module, logical_axes
from gen3r_jax.testing.fixture import Fixture
from tests.conftest import fixture_path

MANIFEST = os.path.join(os.path.dirname(fixture_path("clip_vision_tiny")), "..", "manifests",
                        "clip_xlm_roberta_vit_h_14.json")


def _load(cfg, source):
  model = abstract_module(lambda: CLIPVision(cfg, rngs=nnx.Rngs(0)))
  return model, load_torch_weights(model, table(cfg), source)


@pytest.fixture(scope="module")
def tiny():
  fx = Fixture.open(fixture_path("clip_vision_tiny"))
  cfg = CLIPVisionConfig.from_fixture(fx.config, attention="xla", remat="full")
  return fx, _load(cfg, fx.weights_source())[0]


def test_pipeline_clip_context_from_checkpoint():
  """First control frame -> uint8 truncation -> [-1, 1] -> CLIP (560 -> 224 bicubic) == pipeline clip_context."""
  fx = Fixture.open(fixture_path("pipeline_tiny"))
  enc_dir = os.path.join(fx.path, "checkpoint", "clip_image_encoder")
  with open(os.path.join(enc_dir, "config.json")) as f:
    cfg = CLIPVisionConfig.from_fixture(json.load(f), attention="xla")
  assert (cfg.image_size, cfg.num_tokens, cfg.num_blocks) == (224, 257, 2)
  model, report = _load(cfg, open_source(enc_dir))
  reasons = {v["reason"] for v in report.keys.values() if v["fate"] == "ignored"}
  assert any("text tower" in r for r in reasons) and any("use_31_block" in r for r in reasons)
  frame = np.transpose(fx.tensor("control_images")[0, 0].astype(np.float32), (1, 2, 0))  # [H, W, 3] in [0, 1]
  u8 = (frame * np.float32(255)).astype(np.uint8)  # PIL conversion truncates
  image = (u8.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
  ours = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(image[None]))
  tol = fx.meta["tolerance"]["float32_tensors"]["clip"]
  np.testing.assert_allclose(np.asarray(ours), fx.tensor("clip_context"), atol=tol["atol"], rtol=tol["rtol"])


def test_videos_of_different_sizes_and_remat(tiny):
  """Each clip is resized on its own (non-square, several frames) and the frames are concatenated."""
  fx, model = tiny
  assert logical_axes(model.blocks.attn.to_qkv.kernel) == ("layers", "embed", "heads")
  assert model.blocks.attn.to_qkv.kernel.shape[0] == fx.config["vision"]["num_layers"] - 1
  rng = np.random.default_rng(0)
  a = rng.uniform(-1, 1, (2, 20, 37, 3)).astype(np.float32)
  b = np.transpose(fx.tensor("video0"), (1, 2, 3, 0))  # [T, H, W, 3]
  out = encode_videos(model, [a, b])
  assert out.shape == (3, 5, 32)
  np.testing.assert_allclose(out[2:], fx.tensor("clip_context"), atol=9.1e-5, rtol=1.7e-5)
  assert not np.allclose(out[0], out[1])


def test_configs():
  full = CLIPVisionConfig.vit_h_14()
  assert (full.num_tokens, full.dim, full.num_blocks, full.mlp_dim) == (257, 1280, 31, 5120)
  manifest = {"image_size": 224, "patch_size": 14, "vision_dim": 1280, "vision_mlp_ratio": 4, "vision_heads": 16,
              "vision_layers": 32, "vision_pool": "token", "vision_pre_norm": True, "activation": "gelu"}
  assert CLIPVisionConfig.from_fixture(manifest) == full
  with pytest.raises(Gen3RInputError, match="only pool_type='token' with pre_norm=True"):
    CLIPVisionConfig.from_fixture({**manifest, "vision_pool": "attn_pool"})
  with pytest.raises(Gen3RInputError, match="image_size 30 must be a multiple of patch_size 14"):
    CLIPVisionConfig.tiny(image_size=30)
  with pytest.raises(Gen3RInputError, match="1 layer\\(s\\) leave no block to run"):
    CLIPVisionConfig.tiny(num_layers=1)


def test_bad_input_messages(tiny):
  _, model = tiny
  with pytest.raises(Gen3RInputError, match=r"images: expected a rank-4 array \[B, H, W, 3\]"):
    model(np.zeros((28, 28, 3), np.float32))
  with pytest.raises(Gen3RInputError, match=r"expected 3 \(RGB\) channels last.*must be transposed first"):
    model(np.zeros((1, 3, 28, 28), np.float32))
  with pytest.raises(Gen3RInputError, match="expected a floating-point array"):
    model(np.zeros((1, 28, 28, 3), np.uint8))
  with pytest.raises(Gen3RInputError, match=r"videos\[1\]: expected a rank-4 array"):
    encode_videos(model, [np.zeros((1, 28, 28, 3), np.float32), np.zeros((3, 28, 28), np.float32)])
  with pytest.raises(Gen3RInputError, match="non-empty list"):
    encode_videos(model, [])
  with pytest.raises(Gen3RInputError, match=r"pixels: axis 1 of shape \(1, 30, 30, 3\)"):
    model.visual(np.zeros((1, 30, 30, 3), np.float32))


def test_full_size_manifest():
  ok, text = check(MANIFEST)
  assert ok, text
  assert "377 mapped, 407 ignored" in text
