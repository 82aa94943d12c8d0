"""Wan DiT: configs, bad-input rules, time-embedding precision, sharding, remat, manifests."""

import json
import os

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax._src.ad_checkpoint import saved_residuals  # what print_saved_residuals prints, as a list
from jax._src.cudnn import fused_attention_stablehlo as cudnn_fa

from gen3r_jax.convert import check_manifest, load_torch_weights
from gen3r_jax.convert.tables.wan_dit import table
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.embed import sinusoidal_embedding
from gen3r_jax.models.wan_dit.inputs import pad_text
from gen3r_jax.models.wan_dit.transformer import abstract_model, scan_blocks
from gen3r_jax.nn.params import logical_axes
from gen3r_jax.nn.rope import rope_tables
from gen3r_jax.nn.stack import SAVED_NAMES, checkpointed, remat_policy
from gen3r_jax.parallel.rules import make_mesh, state_shardings
from gen3r_jax.testing.fixture import Fixture, fixtures_root
from tests.conftest import fixture_path

# shared/manifests sits beside shared/fixtures
MANIFESTS = os.path.join(os.path.dirname(os.path.abspath(fixtures_root())), "manifests")


def _inputs(cfg, b=1, f=2, h=4, w=8, seed=0, camera=True):
  r = np.random.RandomState(seed)
  x = r.randn(b, f, h, w, cfg.out_dim).astype(np.float32)
  y = r.randn(b, f, h, w, cfg.cond_dim).astype(np.float32)
  cam = r.randn(b, f, 8 * h, 8 * w, cfg.in_dim_control_adapter).astype(np.float32) if camera else None
  ctx = [r.randn(5 + i, cfg.text_dim).astype(np.float32) for i in range(b)]
  clip = r.randn(b, cfg.clip_tokens, cfg.clip_dim).astype(np.float32)
  t = np.full((b,), 500.25, np.float32)
  return dict(x=x, t=t, context=ctx, clip_fea=clip, y=y, y_camera=cam)


def _fixture_model(cfg=None):
  """The tiny model with the fixture's (official, converted) weights: no random-init compile on CPU."""
  fx = Fixture.open(fixture_path("wan_dit_tiny"))
  cfg = cfg or WanDiTConfig.from_fixture(fx.config)
  model = abstract_model(cfg)
  load_torch_weights(model, table(cfg), fx.weights_source())
  return model


@pytest.fixture(scope="module")
def tiny():
  """Abstract tiny model: the input rules fire before any parameter is touched, so nothing is allocated."""
  return abstract_model(WanDiTConfig.tiny())


def test_configs_match_official_sizes():
  fx = Fixture.open(fixture_path("wan_dit_tiny"))
  assert WanDiTConfig.from_fixture(fx.config) == WanDiTConfig.tiny()
  for name, ctor in (("wan_dit_1_3b_control_camera", WanDiTConfig.wan_1_3b),
                     ("wan_dit_14b_control_camera", WanDiTConfig.wan_14b)):
    with open(f"{MANIFESTS}/{name}.json") as f:
      assert WanDiTConfig.from_fixture(json.load(f)["config"]) == ctor()
  c = WanDiTConfig.wan_14b()
  assert (c.dim, c.ffn_dim, c.num_heads, c.num_layers, c.head_dim) == (5120, 13824, 40, 40, 128)
  c = WanDiTConfig.wan_1_3b()
  assert (c.dim, c.ffn_dim, c.num_heads, c.num_layers, c.in_dim, c.text_len) == (1536, 8960, 12, 30, 36, 512)
  with pytest.raises(Gen3RInputError, match="model_type='i2v'"):
    WanDiTConfig.from_fixture({**fx.config, "model_type": "t2v"})
  with pytest.raises(Gen3RInputError, match="remat must be one of"):
    WanDiTConfig.tiny(remat="everything")


def test_every_parameter_has_logical_axes(tiny):
  for path, var in nnx.to_flat_state(nnx.state(tiny, nnx.Param)):
    axes = logical_axes(var)
    assert axes is not None and len(axes) == var.get_value().ndim, path
    if path[0] == "blocks":
      assert axes[0] == "layers" and var.get_value().shape[0] == 2, path


@pytest.mark.parametrize("field,change,match", [
    ("x", lambda a: a[..., :15], "expected 16 latent channels"),
    ("x", lambda a: a[:, :, :3], "latent height and width must be even"),
    ("x", lambda a: a[:, :, :, :7], "latent height and width must be even"),
    ("y", lambda a: a[..., :16], r"y \(conditioning latents\): expected shape"),
    ("y", lambda a: None, "needs conditioning latents"),
    ("clip_fea", lambda a: None, "needs the CLIP image tokens"),
    ("clip_fea", lambda a: a[:, :256], "clip_fea: axis 1"),
    ("context", lambda a: [np.zeros((13, 24), np.float32)], "text has 13 tokens but the DiT takes at most "
                                                              "text_len=12"),
    ("y_camera", lambda a: a[:, :, :16], "y_camera: expected Plücker camera latents"),
    ("t", lambda a: np.zeros((3,), np.float32), "t: expected a scalar or"),
])
def test_bad_inputs_raise_clear_errors(tiny, field, change, match):
  kw = _inputs(tiny.cfg)
  if field == "x":  # keep y / y_camera consistent so the x rule is the one that fires
    kw["x"] = change(kw["x"])
    b, f, h, w, _ = kw["x"].shape
    kw["y"] = kw["y"][:, :f, :h, :w]
  else:
    kw[field] = change(kw[field])
  with pytest.raises(Gen3RInputError, match=match):
    tiny(**kw)


def test_non_square_grid_with_odd_width_is_rejected(tiny):
  kw = _inputs(tiny.cfg, h=4, w=6, camera=False)
  with pytest.raises(Gen3RInputError, match="needs an even token-grid width"):
    tiny(**kw)


def test_camera_input_without_adapter_is_rejected():
  model = abstract_model(WanDiTConfig.tiny(add_control_adapter=False, num_layers=1))
  with pytest.raises(Gen3RInputError, match="has no camera control adapter"):
    model(**_inputs(model.cfg))


def test_pixel_unshuffle_is_torch_channel_order():
  import torch
  from gen3r_jax.models.wan_dit.camera_adapter import pixel_unshuffle
  x = np.random.RandomState(0).randn(2, 3, 16, 24).astype(np.float32)  # N C H W
  ref = torch.nn.PixelUnshuffle(8)(torch.from_numpy(x)).numpy()         # channel c*64 + i*8 + j
  ours = np.asarray(pixel_unshuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), 8))
  np.testing.assert_array_equal(ours, ref.transpose(0, 2, 3, 1))


def test_sinusoid_matches_float64_without_x64():
  t = np.array([0.0, 1.0, 3.3, 17.77, 500.123, 712.25, 937.5, 999.0, 1000.0], np.float32)
  for dim in (32, 256):
    half = dim // 2
    s = np.outer(t.astype(np.float64), np.power(10000.0, -np.arange(half) / half))
    ref = np.concatenate([np.cos(s), np.sin(s)], axis=1)
    ours = np.asarray(jax.jit(sinusoidal_embedding, static_argnums=1)(jnp.asarray(t), dim))
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-6  # plain float32 t * f is off by ~4e-5 here


def test_text_padding_is_zero_rows_up_to_text_len():
  cfg = WanDiTConfig.tiny()
  rows = [np.random.RandomState(i).randn(n, cfg.text_dim).astype(np.float32) for i, n in enumerate((5, 9))]
  want = np.stack([np.pad(r, ((0, cfg.text_len - r.shape[0]), (0, 0))) for r in rows])
  np.testing.assert_array_equal(np.asarray(pad_text(rows, cfg)), want)
  np.testing.assert_array_equal(np.asarray(pad_text(jnp.asarray(want[:, :9]), cfg)), want)
  with pytest.raises(Gen3RInputError, match="context\\[1\\]: axis 1"):
    pad_text([rows[0], rows[1][:, :5]], cfg)


def test_remat_policies_agree_in_value_and_grad():
  """Same block parameters under every remat policy: identical loss and gradient of the scanned blocks."""
  cfg = WanDiTConfig.tiny()
  graphdef, state = nnx.split(_fixture_model(cfg).blocks)
  r = np.random.RandomState(0)
  x = jnp.asarray(r.randn(1, 16, cfg.dim), jnp.float32)
  e0 = jnp.asarray(r.randn(1, 6, cfg.dim), jnp.float32)
  txt = jnp.asarray(r.randn(1, cfg.text_len, cfg.dim), jnp.float32)
  img = jnp.asarray(r.randn(1, cfg.clip_tokens, cfg.dim), jnp.float32)
  rope = rope_tables((2, 2, 4), cfg.head_dim, concatenated=True)

  def loss(remat):
    def f(state, x):
      return jnp.sum(scan_blocks(graphdef, state, x, e0, rope, txt, img, remat=remat)[0] ** 2)
    return f

  ref_v, ref_g = jax.jit(jax.value_and_grad(loss("none"), argnums=1))(state, x)
  for remat in ("full", "attention"):
    v, g = jax.jit(jax.value_and_grad(loss(remat), argnums=1))(state, x)
    np.testing.assert_allclose(v, ref_v, rtol=1e-5)
    # float32 rounding of the recomputed forward (XLA fuses it differently): relative to the gradient's scale
    np.testing.assert_allclose(g, ref_g, rtol=1e-4, atol=1e-4 * float(np.abs(ref_g).max()))
  # "attention" keeps exactly the tagged [B, L, D]-sized values of every block (not the FFN hidden)
  block = nnx.merge(graphdef, jax.tree.map(lambda a: a[0], state))
  one = checkpointed(lambda x: jnp.sum(block(x, e0, rope, txt, img) ** 2), "attention")
  res = saved_residuals(one, x)
  saved = [d for _, d in res]
  for name in SAVED_NAMES:
    assert any(f"named '{name}'" in d for d in saved), (name, saved)
  computed = [a.shape for a, d in res if not d.startswith("from")]   # not the inputs, parameters or constants
  assert computed and not any(cfg.ffn_dim in shp for shp in computed), computed
  for remat in ("none", "dots", "dots_no_batch", "full", "attention"):
    jaxpr = str(jax.make_jaxpr(jax.grad(loss(remat), argnums=1))(state, x))
    assert ("remat" in jaxpr or "checkpoint" in jaxpr) == (remat != "none"), remat


def test_attention_policy_saves_the_cudnn_forward_outputs():
  """On GPUs the "attention" policy saves the cuDNN flash-attention forward (output + softmax stats), so the
  backward never reruns it; the primitive names are checked here because CPU runs take the XLA path."""
  policy = remat_policy("attention")
  for prim in (cudnn_fa._dot_product_attention_fwd_p, cudnn_fa._dot_product_attention_fwd_p_wrapper):
    assert policy(prim), prim.name
  for prim in (cudnn_fa._dot_product_attention_bwd_p, jax.lax.dot_general_p, jax.lax.exp_p):
    assert not policy(prim), prim.name


def test_sharded_forward_matches_unsharded():
  cfg = WanDiTConfig.tiny()
  kw = _inputs(cfg, b=2)
  graphdef, state = nnx.split(_fixture_model(cfg))
  fwd = lambda s, kw: nnx.merge(graphdef, s)(**kw)
  ref = np.asarray(jax.jit(fwd)(state, kw))
  mesh = make_mesh({"data": 2, "fsdp": 2, "context": 2})
  sharded = jax.device_put(state, state_shardings(state, mesh))
  kernel = sharded["blocks"]["ffn"]["fc1"]["kernel"].get_value()
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None), kernel.sharding
  kw = jax.device_put(kw, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  with jax.set_mesh(mesh):
    lowered = jax.jit(fwd).lower(sharded, kw)
    compiled = lowered.compile()
    with jax.transfer_guard("disallow"):  # the step moves nothing between host and devices
      out = compiled(sharded, kw)
  out = np.asarray(out)
  # activations constrained to (batch, length, embed) -> (data x fsdp, context, -) at the block boundaries
  assert lowered.as_text().count("sharding_constraint") >= 2
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def test_activation_constraint_drops_non_dividing_mesh_axes():
  from gen3r_jax.parallel.rules import constrain
  mesh = make_mesh({"data": 2, "fsdp": 4})
  specs = {}
  with jax.set_mesh(mesh):
    for b in (1, 2, 8):
      compiled = jax.jit(constrain).lower(jax.ShapeDtypeStruct((b, 16, 32), jnp.float32)).compile()
      spec = tuple(compiled.output_shardings.spec)
      specs[b] = spec + (None,) * (3 - len(spec))
  assert specs[8] == (("data", "fsdp"), None, None)
  assert specs[2] == ("data", None, None)  # batch 2 cannot use fsdp=4 as well
  assert specs[1] == (None, None, None)
  assert constrain(jnp.zeros((2, 4))).shape == (2, 4)  # no mesh: a no-op


@pytest.mark.parametrize("name", ["wan_dit_1_3b_control_camera", "wan_dit_14b_control_camera"])
def test_manifest_is_covered_exactly(name):
  ok, text = check_manifest.check(f"{MANIFESTS}/{name}.json")
  assert ok, text
  assert " 0 ignored, 0 unknown, 0 missing, 0 misshaped" in text
