"""Stage-2 loss pieces: per-mode condition masks, camera drop, the clipped loss (also under a mesh), the
timestep table, the zeros geometry condition, draws and config checks, and the pre-encoded batch giving the
online loss for the same key (tiny models from the training_stage2_tiny fixture's weights: no random-init
compile)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.clip.model import CLIPVision, CLIPVisionConfig
from gen3r_jax.models.init import random_params
from gen3r_jax.models.umt5.t5 import UMT5Config, UMT5Encoder
from gen3r_jax.parallel.rules import make_mesh, state_shardings
from gen3r_jax.sampling import conditioning as cond
from gen3r_jax.testing.cases import training_stage2 as case
from gen3r_jax.testing.fixture import Fixture
from gen3r_jax.training import stage2 as S
from tests.conftest import fixture_path

CFG = S.Stage2Config()


@pytest.fixture(scope="module")
def models():
  """(transformer, frozen) with the fixture's tiny weights (VGGT aggregator, adapter / Wan encoders, DiT)."""
  return case.build(Fixture.open(fixture_path("training_stage2_tiny")))


def _dit_inputs(transformer, b=1, f=2, h=4, w=4, seed=0):
  """Small joint-layout DiT inputs (``2w`` wide latents)."""
  c = transformer.cfg
  r = np.random.RandomState(seed)
  return dict(x0=r.randn(b, f, h, 2 * w, c.out_dim).astype(np.float32),
              y=r.randn(b, f, h, 2 * w, c.cond_dim).astype(np.float32),
              context=r.randn(b, c.text_len, c.text_dim).astype(np.float32),
              clip_fea=r.randn(b, c.clip_tokens, c.clip_dim).astype(np.float32),
              y_camera=r.randn(b, f, 8 * h, 16 * w, c.in_dim_control_adapter).astype(np.float32),
              t_index=np.arange(b, dtype=np.int32) * 300 + 100,
              noise=r.randn(b, f, h, 2 * w, c.out_dim).astype(np.float32))


def _loss(transformer, kw, cfg=CFG):
  return S.flow_matching_loss(transformer, kw["x0"], kw["y"], kw["context"], kw["clip_fea"], kw["y_camera"],
                              kw["t_index"], kw["noise"], cfg)


def test_condition_masks_and_control_frames_per_mode():
  f, hw = 9, (2, 3)
  mode = jnp.asarray([S.MODES.index(m) for m in ("first", "all", "first_last")], jnp.int32)
  masks = np.asarray(S.condition_masks(mode, f, hw))                           # [3, 3, 2, 6, 4]
  for i, n in enumerate((1, f, 2)):                                             # the pipeline's 1 / all / 2 images
    np.testing.assert_array_equal(masks[i], np.asarray(cond.control_masks(n, f, hw))[0])
  assert not masks[..., hw[1]:, :].any()                                        # geometry half never conditioned
  frames = jnp.asarray(np.random.RandomState(0).rand(3, f, 4, 4, 3).astype(np.float32)) + 0.1
  kept = np.asarray(S.control_frames(frames, mode)).reshape(3, f, -1).any(-1)
  np.testing.assert_array_equal(kept, [[1] + [0] * 8, [1] * 9, [1] + [0] * 7 + [1]])
  kept_values = np.asarray(S.control_frames(frames, mode))[2, [0, f - 1]]
  np.testing.assert_array_equal(kept_values, np.asarray(frames)[2, [0, f - 1]])


def test_official_mode_thresholds():
  u = np.array([0.0, 1 / 3 - 1e-12, 1 / 3, 0.5, 2 / 3, 2 / 3 + 1e-12, 0.9999])
  ch = S.choices_from_uniforms(u, u, 0.3, np.zeros(len(u)), CFG)
  assert [S.MODES[m] for m in np.asarray(ch["mode"])] == [
      "first", "first", "all", "all", "all", "first_last", "first_last"]
  np.testing.assert_array_equal(np.asarray(ch["text_drop"]), u < 0.2)
  assert np.asarray(ch["camera_drop"]).all()                                   # one draw 0.3 < 0.5 for the batch


def test_camera_map_drop_gives_zeros_per_example():
  rng = np.random.RandomState(1)
  c2ws = np.tile(np.eye(4, dtype=np.float32), (2, 5, 1, 1))
  c2ws[..., :3, 3] = rng.randn(2, 5, 3)
  ks = np.tile(np.array([[10, 0, 4], [0, 11, 4], [0, 0, 1]], np.float32), (2, 5, 1, 1))
  out = np.asarray(S.camera_map(jnp.asarray(c2ws), jnp.asarray(ks), 8, 8, jnp.asarray([False, True])))
  assert out.shape == (2, 2, 8, 16, 24)
  assert not out[1].any()
  ref = cond.camera_latents(cond.plucker(c2ws[0], ks[0], 8, 8)[None])[0]
  np.testing.assert_allclose(out[0], np.asarray(ref), rtol=1e-6, atol=1e-7)
  assert np.abs(out[0]).max() > 0.1


def test_timestep_table_is_diffusers_float32():
  for shift in (2.0, 5.0):
    cfg = S.Stage2Config(shift=shift)
    idx = np.arange(1000, dtype=np.int32)
    t, sigma = (np.asarray(v) for v in S.timesteps(idx, cfg))
    # FlowMatchEulerDiscreteScheduler.__init__ (diffusers 0.33.1), torch float32 ops
    s = torch.from_numpy(np.linspace(1, 1000, 1000, dtype=np.float32)[::-1].copy()) / 1000
    s = shift * s / (1 + (shift - 1) * s)
    np.testing.assert_array_equal(sigma, s.numpy())
    np.testing.assert_array_equal(t, (s * 1000).numpy())
    assert sigma[0] == 1.0 and t[0] == 1000.0 and np.all(np.diff(t) < 0)
    s64 = (1000 - idx) / 1000
    np.testing.assert_allclose(sigma, shift * s64 / (1 + (shift - 1) * s64), rtol=3e-7)


def test_draws_per_example_and_per_batch():
  key = jax.random.key(3)
  ex = S.draw_choices(key, 256, CFG)
  batch = S.draw_choices(key, 256, dataclasses.replace(CFG, camera_drop="batch"))
  assert 0.3 < float(np.mean(ex["camera_drop"])) < 0.7
  assert len(set(np.asarray(batch["camera_drop"]).tolist())) == 1
  assert set(np.asarray(ex["mode"]).tolist()) == {0, 1, 2}
  assert 0.1 < float(np.mean(ex["text_drop"])) < 0.3
  t = np.asarray(ex["t_index"])
  assert t.dtype == np.int32 and t.min() >= 0 and t.max() < 1000 and len(set(t.tolist())) > 100


@pytest.mark.parametrize("change, message", [
    (dict(camera_drop="rank"), "camera_drop must be one of"),
    (dict(geometry_condition="vggt"), "geometry_condition must be one of"),
    (dict(noise_dtype="float16"), "noise_dtype must be one of"),
    (dict(text_drop_prob=1.5), "text_drop_prob must be a probability"),
    (dict(loss_clip=0.0), "loss_clip must be a number > 0"),
])
def test_bad_config_is_a_clear_error(change, message):
  with pytest.raises(Gen3RInputError, match=message):
    dataclasses.replace(CFG, **change).validate()


def test_bad_batch_is_a_clear_error(models):
  transformer, frozen = models
  with pytest.raises(Gen3RInputError, match="pre-encoded stage-2 batch lacks"):
    S.stage2_loss(transformer, frozen, {"wan_mean": np.zeros((1, 2, 4, 4, 16), np.float32)}, jax.random.key(0))
  frames = np.zeros((1, 4, 16, 16, 3), np.float32)
  batch = dict(frames=frames, c2ws=np.zeros((1, 4, 4, 4)), Ks=np.zeros((1, 4, 3, 3)), context=np.zeros((1, 8, 12)))
  with pytest.raises(Gen3RInputError, match="num_frames must be 1 \\+ 4k"):
    S.stage2_loss(transformer, frozen, batch, jax.random.key(0))


def test_loss_clip_masks_large_errors_and_runs_under_a_mesh(models):
  """The clipped loss (huge targets dropped, not squared), x_t and the target; then the same loss with the
  parameters sharded on a data x fsdp x context mesh."""
  transformer, _ = models
  kw = _dit_inputs(transformer, b=2)
  kw["noise"][0, 0, 0, :3, 0] = [300.0, -400.0, 500.0]      # targets far beyond any prediction
  graphdef, state = nnx.split(transformer)
  loss_fn = jax.jit(lambda state, kw: _loss(nnx.merge(graphdef, state), kw))
  loss, aux = loss_fn(state, kw)
  diff = np.asarray(aux["pred"], np.float64) - np.asarray(aux["target"], np.float64)
  keep = np.abs(diff) <= CFG.loss_clip
  assert int(aux["n_masked_out"]) == int((~keep).sum()) >= 3
  np.testing.assert_allclose(float(loss), np.mean(np.where(keep, diff ** 2, 0.0)), rtol=1e-5)
  assert float(loss) < 10.0
  np.testing.assert_allclose(np.asarray(aux["target"]), kw["noise"] - kw["x0"], rtol=1e-6)
  s = np.asarray(aux["sigma"])[:, None, None, None, None]
  np.testing.assert_allclose(np.asarray(aux["noisy"]), (1 - s) * kw["x0"] + s * kw["noise"], rtol=1e-5, atol=1e-5)

  mesh = make_mesh({"data": 2, "fsdp": 2, "context": 2})
  sharded = jax.device_put(state, state_shardings(state, mesh))
  kw = jax.device_put(kw, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  with jax.set_mesh(mesh):
    m_loss, m_aux = loss_fn(sharded, kw)
  np.testing.assert_allclose(float(m_loss), float(loss), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(m_aux["pred"]), np.asarray(aux["pred"]), rtol=1e-5, atol=2e-5)


def test_zeros_geometry_condition_skips_vggt_and_zeroes_the_geometry_half(models):
  _, frozen = models
  wan_only = S.Stage2Frozen(None, None, frozen.wan_vae)                      # no VGGT / adapter to run
  r = np.random.RandomState(2)
  frames = jnp.asarray(r.rand(2, 5, 16, 16, 3).astype(np.float32))
  mode = jnp.asarray([S.MODES.index("first"), S.MODES.index("first_last")], jnp.int32)
  eps = jnp.asarray(r.randn(2, 2, 2, 2, 2, 16).astype(np.float32))
  cfg = dataclasses.replace(CFG, geometry_condition="zeros")
  y = np.asarray(nnx.jit(lambda fz, fr, m, e: S.control_latents(fz, fr, m, e, cfg))(wan_only, frames, mode, eps))
  assert y.shape == (2, 2, 2, 4, 20)
  assert not y[:, :, :, 2:, :16].any()
  ctrl = S.control_frames(frames, mode)
  wan = frozen.wan_vae.encode(jnp.clip(ctrl * 2 - 1, -1, 1)).sample(eps=eps[:, 1])
  np.testing.assert_allclose(y[:, :, :, :2, :16], np.asarray(wan), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(y[..., 16:], np.asarray(S.condition_masks(mode, 5, (2, 2))))


def test_text_context_zeroes_padding_and_drop_selects_empty_caption():
  enc = random_params(UMT5Encoder, UMT5Config.tiny(dim=12, dim_attn=12, num_heads=2, dim_ffn=16))
  ids = np.array([[3, 4, 5, 1, 0, 0], [7, 1, 0, 0, 0, 0]], np.int32)
  mask = (np.arange(6)[None] < np.array([[4], [2]])).astype(np.int32)
  frozen = S.Stage2Frozen(None, None, None, text_encoder=enc)
  ctx = np.asarray(nnx.jit(S.text_context)(frozen, ids, mask))
  full = np.asarray(enc(jnp.asarray(ids), jnp.asarray(mask)))
  np.testing.assert_allclose(ctx[0, :4], full[0, :4], rtol=1e-6)
  np.testing.assert_allclose(ctx[1, :2], full[1, :2], rtol=1e-6)
  assert not ctx[0, 4:].any() and not ctx[1, 2:].any() and np.abs(full[1, 2:]).max() > 0
  empty = np.arange(4 * 12, dtype=np.float32).reshape(4, 12)
  out = np.asarray(S.select_context(jnp.asarray(ctx), empty, jnp.asarray([False, True])))
  np.testing.assert_array_equal(out[0], ctx[0])
  np.testing.assert_array_equal(out[1, :4], empty)
  assert not out[1, 4:].any()


def test_preencoded_batch_gives_the_online_loss(models):
  """Same key -> same choices, eps and noise: the loss from stored posteriors equals the online loss, for a
  key of each condition mode. The online batch goes through the text encoder and CLIP."""
  transformer, frozen = models
  tc = transformer.cfg
  frozen = S.Stage2Frozen(
      frozen.vggt, frozen.geo_adapter, frozen.wan_vae,
      text_encoder=random_params(UMT5Encoder, UMT5Config.tiny(dim=tc.text_dim, dim_attn=tc.text_dim, num_heads=2,
                                                             dim_ffn=16)),
      clip=random_params(CLIPVision, CLIPVisionConfig(dim=tc.clip_dim, num_heads=2, num_layers=2)),
      empty_context=np.random.RandomState(3).randn(tc.text_len, tc.text_dim))
  r = np.random.RandomState(4)
  # 112 x 112 frames: an 8 x 8 VGGT grid, which the adapter's x1.75 resampling turns into the Wan VAE's 14 x 14
  frames = jnp.asarray(r.randint(0, 256, (1, 5, 112, 112, 3)).astype(np.float32) / 255)
  c2ws = np.tile(np.eye(4, dtype=np.float32), (1, 5, 1, 1))
  c2ws[..., :3, 3] = r.randn(1, 5, 3) * 0.3
  ks = np.tile(np.array([[100, 0, 56], [0, 102, 56], [0, 0, 1]], np.float32), (1, 5, 1, 1))
  ids = np.array([[5, 9, 2, 1, 0, 0, 0, 0]], np.int32)
  mask = (ids > 0).astype(np.int32)
  online = dict(frames=frames, c2ws=c2ws, Ks=ks, text_ids=ids, text_mask=mask)
  pre = dict(S.encode_posteriors(frozen, frames), c2ws=c2ws, Ks=ks,
             context=nnx.jit(S.text_context)(frozen, ids, mask), clip_fea=nnx.jit(S.clip_features)(frozen, frames))
  assert set(pre) >= {f"ctrl_{m}_{n}_{p}" for m in S.PARTIAL_MODES for n in ("wan", "geo") for p in ("mean", "logvar")}
  assert pre["geo_mean"].shape == pre["wan_mean"].shape == (1, 2, 14, 14, 16)
  loss_fn = nnx.jit(S.stage2_loss, static_argnames=("cfg",))
  keys, seen = [], set()
  for i in range(60):                                           # the cheap pre-encoded loss finds one key per mode
    _, m = loss_fn(transformer, frozen, pre, jax.random.key(i), CFG)
    mode = next(j for j, name in enumerate(S.MODES) if float(m[f"mode_{name}_frac"]) == 1.0)
    if mode not in seen:
      seen.add(mode)
      keys.append(jax.random.key(i))
    if len(seen) == len(S.MODES):
      break
  assert len(seen) == len(S.MODES)
  losses = []
  for key in keys:
    lp, mp = loss_fn(transformer, frozen, pre, key, CFG)
    lo, mo = loss_fn(transformer, frozen, online, key, CFG)
    np.testing.assert_allclose(float(lo), float(lp), rtol=2e-5)
    assert {k: float(v) for k, v in mo.items() if "frac" in k} == {k: float(v) for k, v in mp.items() if "frac" in k}
    losses.append(float(lo))
  assert len(set(losses)) == len(losses) and all(np.isfinite(losses))
