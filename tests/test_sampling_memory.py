"""Placement of the bundle's weights while sampling. Sequential placement (weights in host memory, each model on
the device for its stage only) gives the resident bundle's outputs exactly; between stages no model's weights stay
on the device; per-stage stats are returned; no jitted entry point copies its parameters; the numpy fallback (no
host memory space) works; a DiT loaded sharded over a (fsdp 2 x context 2) mesh, host-resident, runs the whole
pipeline with context-parallel attention; bad placement / dtype fail before loading."""

import dataclasses

import jax
import numpy as np
import pytest

from gen3r_jax.apps import demo
from gen3r_jax.apps.bundle import load_bundle
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.sampling import placement as pl, stages
from gen3r_jax.sampling.pipeline import SampleOptions, generate

OPTS = SampleOptions(task="1view", cameras="zoom_out", num_frames=1, num_steps=2, seed=5, posterior="sample")
FIELDS = ("text_encoder", "clip", "transformer", "vae", "geo_adapter", "vggt")
STAGE_MODELS = {"text": ("text_encoder",), "clip": ("clip",), "cameras": ("vggt",), "vae_encode": ("vae",),
                "denoise": ("transformer",), "vae_decode": ("vae",), "geometry_decode": ("geo_adapter", "vggt")}
OUTPUTS = ("rgb", "depth", "points", "pcds", "masks", "extrinsics", "intrinsics", "c2w", "latents")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
  return demo.ensure_demo_bundle(str(tmp_path_factory.mktemp("demo")), log=lambda *a: None)


@pytest.fixture(scope="module")
def image():
  return demo.example_image(1)[None].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def reference(bundle_dir, image):
  return generate(load_bundle(bundle_dir), image, "a palace", OPTS, progress=False)


def _kind(a):
  return "numpy" if isinstance(a, np.ndarray) else a.sharding.memory_kind


def test_sequential_equals_resident_and_holds_one_stage_at_a_time(bundle_dir, image, reference):
  ref = reference

  bundle = load_bundle(bundle_dir, placement="sequential")
  host = pl.host_memory_kind()
  assert host in pl.HOST_KINDS
  for f in FIELDS:
    assert {_kind(a) for a in pl.param_leaves(getattr(bundle, f))} == {host}, f
  seen, previous = [], []

  def probe(name, models):
    seen.append(name)
    live = {id(a) for a in jax.live_arrays() if a.sharding.memory_kind == "device"}
    # the bundle itself never holds device weights
    for f in FIELDS:
      assert pl.on_host(getattr(bundle, f)), (name, f)
    # every weight the stage placed is a live device array
    placed = [m for m in models if m is not None]
    assert len(placed) == len(STAGE_MODELS[name])
    current = []
    for m in placed:
      leaves = pl.param_leaves(m)
      on_dev = [a for a in leaves if not isinstance(a, np.ndarray) and a.sharding.memory_kind == "device"]
      current += on_dev
      assert all(id(a) in live for a in on_dev), name
      if m is not placed[-1] or name != "geometry_decode":
        assert len(on_dev) == len(leaves), name           # the whole model is on the device
    if name == "geometry_decode":                         # VGGT: heads only, the aggregator stays on the host
      vggt = placed[1]
      assert pl.on_host(vggt.aggregator) and not pl.on_host(vggt.depth_head)
      assert all(not pl.on_host(getattr(vggt, h)) for h in stages.VGGT_HEADS)
    # the weights of every earlier stage are gone from the device
    assert all(a.is_deleted() for a in previous), name
    assert not any(id(a) in live for a in previous), name
    previous.extend(current)

  out = generate(bundle, image, "a palace", OPTS, progress=False, probe=probe)
  assert seen == list(STAGE_MODELS)
  assert previous and all(a.is_deleted() for a in previous)
  for k in OUTPUTS:
    np.testing.assert_array_equal(out[k], ref[k], err_msg=k)

  st = out["stats"]["stages"]
  assert list(st) == list(STAGE_MODELS)
  for name, fields in STAGE_MODELS.items():
    assert st[name]["seconds"] > 0
    # no jitted entry point returned (copied) its parameters, in either placement
    assert st[name]["params_replaced"] == 0 and ref["stats"]["stages"][name]["params_replaced"] == 0, name
    full = sum(pl.param_bytes(getattr(bundle, f)) for f in fields)
    if name == "geometry_decode":
      heads = sum(pl.param_bytes(getattr(bundle.vggt, h)) for h in stages.VGGT_HEADS)
      assert st[name]["weights_bytes"] == pl.param_bytes(bundle.geo_adapter) + heads < full
    else:
      assert st[name]["weights_bytes"] == full, name
  assert set(out["timings"]) >= set(STAGE_MODELS) | {"denoise_compile", "denoise_steps"}


def test_generate_with_a_sharded_host_resident_dit(bundle_dir, image, reference):
  from gen3r_jax.parallel.rules import make_mesh
  mesh = make_mesh({"fsdp": 2, "context": 2}, devices=jax.devices()[:4])
  bundle = load_bundle(bundle_dir)
  bundle.transformer = load_bundle(bundle_dir, components=["transformer"], mesh=mesh,
                                   placement="sequential").transformer
  kernel = bundle.transformer.blocks.ffn.fc1.kernel.get_value()
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None)
  assert kernel.sharding.memory_kind == pl.host_memory_kind() and pl.mesh_of(bundle.transformer) == mesh
  out = generate(bundle, image, "a palace", OPTS, progress=False, context_parallel="ring")
  assert out["stats"]["stages"]["denoise"]["params_replaced"] == 0
  np.testing.assert_allclose(out["latents"], reference["latents"], atol=1e-4, rtol=1e-4)
  for k in ("rgb", "depth", "extrinsics", "intrinsics"):
    np.testing.assert_allclose(out[k], reference[k], atol=2e-3, rtol=1e-3, err_msg=k)


def test_generate_cfg_parallel_equals_single_device(bundle_dir, image, reference):
  # the whole tiny bundle on a cfg=2 mesh: every model replicated over the two groups, the DiT's CFG pair split
  from gen3r_jax.parallel.rules import make_mesh
  assert OPTS.guidance_scale > 1
  mesh = make_mesh({"cfg": 2}, devices=jax.devices()[:2])
  bundle = load_bundle(bundle_dir, mesh=mesh)
  kernel = bundle.transformer.blocks.ffn.fc1.kernel.get_value()
  assert kernel.sharding.mesh == mesh and kernel.sharding.is_fully_replicated
  out = generate(bundle, image, "a palace", OPTS, progress=False)
  np.testing.assert_allclose(out["latents"], reference["latents"], atol=1e-4, rtol=1e-4)
  for k in ("rgb", "depth", "extrinsics", "intrinsics"):
    np.testing.assert_allclose(out[k], reference[k], atol=2e-3, rtol=1e-3, err_msg=k)
  with pytest.raises(Gen3RInputError, match="mesh cfg=2 runs the unconditional and conditional branches"):
    generate(bundle, image, "a palace", dataclasses.replace(OPTS, guidance_scale=1.0), progress=False)


def test_numpy_fallback_and_offload(bundle_dir, monkeypatch):
  bundle = load_bundle(bundle_dir, components=["clip_image_encoder"])
  views = (demo.example_image(2)[None, None] / 255.0).astype(np.float32)
  ref = np.asarray(stages.clip_context(bundle.clip, views))
  monkeypatch.setattr(pl, "host_memory_kind", lambda device=None: None)   # a backend without host memory
  device_leaves = pl.param_leaves(bundle.clip)
  pl.offload_bundle(bundle)
  assert all(isinstance(a, np.ndarray) for a in pl.param_leaves(bundle.clip))
  assert all(a.is_deleted() for a in device_leaves)
  with pl.staged(bundle.clip) as (clip,):
    placed = pl.param_leaves(clip)
    assert all(a.sharding.memory_kind == "device" for a in placed)
    out = np.asarray(stages.clip_context(clip, views))
  assert all(a.is_deleted() for a in placed)
  np.testing.assert_array_equal(out, ref)


def test_stage_stats_flag_jitted_calls_that_copy_parameters():
  """``nnx.jit`` with graph updates returns every parameter as an output (an XLA copy: twice the model's memory);
  the stage stats count such swapped parameters, and the sampler's entry points use ``graph_updates=False``."""
  from flax import nnx
  model = nnx.Linear(8, 8, rngs=nnx.Rngs(0))
  x = jax.numpy.ones((2, 8))
  stats = pl.StageStats()
  for name, jit in (("copies", nnx.jit(lambda m, x: m(x))), ("no_copies", nnx.jit(lambda m, x: m(x),
                                                                                    graph_updates=False))):
    with stats.stage(name, model) as (m,):
      jit(m, x).block_until_ready()
  assert stats.stages["copies"]["params_replaced"] == 2 and stats.stages["no_copies"]["params_replaced"] == 0


@pytest.mark.parametrize("kw, message", [
    (dict(placement="offload"), "placement must be one of \\('resident', 'sequential'\\)"),
    (dict(param_dtype="float64"), "param_dtype 'float64' is not supported"),
    (dict(dtype="int8"), "dtype 'int8' is not supported"),
])
def test_bad_load_options(tmp_path, kw, message):
  with pytest.raises(Gen3RInputError, match=message):
    load_bundle(str(tmp_path), **kw)                       # checked before the directory is even read


def _sample_config(**change):
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "sample.py")
  spec = importlib.util.spec_from_file_location("gen3r_sample_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config()
  cfg.out, cfg.prompt = "/tmp/unused", "a palace"
  cfg.update(change)
  return cfg


@pytest.mark.parametrize("change, message", [
    (dict(placement="offload"), "placement must be one of"),
    (dict(mesh="fsdp:2"), "mesh 'fsdp:2': expected comma-separated axis=size"),
    (dict(mesh="pipeline=2"), "axes among \\('cfg', 'data', 'fsdp', 'context', 'tensor'\\)"),
    (dict(param_dtype="fp8"), "param_dtype 'fp8' is not supported"),
    (dict(context_parallel="tree"), "context_parallel must be one of"),
    (dict(mesh="cfg=2", guidance_scale=1.0), "mesh cfg=2 runs the unconditional and conditional branches on two "
                                             "device groups, but guidance_scale 1 <= 1"),
    (dict(mesh="cfg=4"), "mesh cfg=4: the cfg axis splits"),
])
def test_bad_sampling_config(change, message):
  from gen3r_jax.apps.sample import check_config, parse_mesh
  assert parse_mesh("fsdp=2, context=2") == {"fsdp": 2, "context": 2} and parse_mesh("") is None
  with pytest.raises(Gen3RInputError, match=message):
    check_config(_sample_config(**change), "unused_checkpoint", ["unused.png"])  # before any file is read
