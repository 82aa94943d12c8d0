"""The converter framework: strictness, report, sources, stacked rows, Orbax round trip with sharding."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from gen3r_jax.convert import ConversionError, TableBuilder, convert, load_torch_weights, param_targets
from gen3r_jax.convert import transforms as T
from gen3r_jax.convert.sources import SafetensorsSource, open_source
from gen3r_jax.models.checkpoint import CheckpointMixin
from gen3r_jax.models.config import ModelConfig
from gen3r_jax.nn.linear import Conv, Dense
from gen3r_jax.nn.params import make_param, torch_uniform
from gen3r_jax.parallel.rules import make_mesh


@dataclasses.dataclass(frozen=True)
class ToyConfig(ModelConfig):
  dim: int = 8
  layers: int = 3


class Toy(nnx.Module, CheckpointMixin):
  Config = ToyConfig

  def __init__(self, cfg, *, rngs):
    self.cfg = cfg
    self.fc = Dense(cfg.dim, 16, rngs=rngs)
    self.conv = Conv(cfg.dim, cfg.dim, (3, 3), padding=1, rngs=rngs)
    # a stacked ("scanned") weight: [layers, in, out]
    self.stack = make_param(rngs, torch_uniform(cfg.dim), (cfg.layers, cfg.dim, cfg.dim),
                            ("layers", "embed", "mlp"))


def toy_table(cfg):
  tb = TableBuilder("toy", strip_prefixes=("model.",))
  tb.linear("fc", "fc").conv("conv", "conv", 2)
  for i in range(cfg.layers):
    tb.add(f"blocks.{i}.weight", "stack", T.linear, index=i)
  tb.ignore(r"track_head\..*", "Gen3R never runs the track head")
  return tb.build()


def toy_state_dict(cfg, prefix="model."):
  rs = np.random.RandomState(0)
  sd = {"fc.weight": rs.randn(16, cfg.dim), "fc.bias": rs.randn(16),
        "conv.weight": rs.randn(cfg.dim, cfg.dim, 3, 3), "conv.bias": rs.randn(cfg.dim),
        "track_head.x": rs.randn(2)}
  for i in range(cfg.layers):
    sd[f"blocks.{i}.weight"] = rs.randn(cfg.dim, cfg.dim) + i
  return {prefix + k: v.astype(np.float32) for k, v in sd.items()}


def test_convert_maps_transposes_and_stacks():
  cfg = ToyConfig()
  m = Toy(cfg, rngs=nnx.Rngs(0))
  sd = toy_state_dict(cfg)
  report = load_torch_weights(m, toy_table(cfg), sd)
  assert report.ok and report.counts()["mapped"] == 4 + cfg.layers and report.counts()["ignored"] == 1
  np.testing.assert_array_equal(np.asarray(m.fc.kernel[...]), sd["model.fc.weight"].T)
  np.testing.assert_array_equal(np.asarray(m.conv.kernel[...]), sd["model.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(m.stack[...])[2], sd["model.blocks.2.weight"].T)
  assert report.keys["model.track_head.x"] == {"fate": "ignored", "reason": "Gen3R never runs the track head"}
  # keys without the prefix work too (the official loaders accept both)
  assert load_torch_weights(m, toy_table(cfg), toy_state_dict(cfg, prefix="")).ok


@pytest.mark.parametrize("break_it, message", [
    (lambda sd: sd.pop("model.fc.bias"), "missing key(s) the model needs: fc.bias"),
    (lambda sd: sd.__setitem__("model.extra.weight", np.zeros(3)), "unknown key(s)"),
    (lambda sd: sd.__setitem__("model.conv.weight", np.zeros((8, 8, 3, 1))), "misshaped: model.conv.weight"),
    (lambda sd: sd.pop("model.blocks.1.weight"), "blocks.1.weight"),
])
def test_convert_refuses_and_names_the_key(break_it, message):
  cfg = ToyConfig()
  sd = toy_state_dict(cfg)
  break_it(sd)
  with pytest.raises(ConversionError) as e:
    load_torch_weights(Toy(cfg, rngs=nnx.Rngs(0)), toy_table(cfg), sd)
  assert message in str(e.value)
  if "unknown" in message:
    assert "model.extra.weight" in str(e.value)
  # non-strict conversion reports the same problem instead of raising
  _, report = convert(toy_table(cfg), sd, param_targets(Toy(cfg, rngs=nnx.Rngs(0))), strict=False)
  assert not report.ok


def test_report_json_and_unfilled_targets(tmp_path):
  cfg = ToyConfig()
  table = toy_table(cfg)
  table.rules[:] = [r for r in table.rules if r.path != ("fc", "bias")]
  table.__post_init__()
  sd = toy_state_dict(cfg)
  sd.pop("model.fc.bias")
  with pytest.raises(ConversionError, match="no rule fills"):
    load_torch_weights(Toy(cfg, rngs=nnx.Rngs(0)), table, sd)
  _, report = convert(toy_table(cfg), toy_state_dict(cfg), param_targets(Toy(cfg, rngs=nnx.Rngs(0))))
  report.write(str(tmp_path / "r.json"))
  data = json.loads((tmp_path / "r.json").read_text())
  assert data["ok"] and data["counts"]["num_params"] == report.num_params
  assert data["keys"]["model.fc.weight"]["transform"] == "linear"


def test_safetensors_sources(tmp_path):
  cfg = ToyConfig()
  sd = toy_state_dict(cfg)
  keys = sorted(sd)
  half = len(keys) // 2
  save_file({k: sd[k] for k in keys[:half]}, str(tmp_path / "a.safetensors"))
  # second shard in bfloat16: read without torch through ml_dtypes
  save_file({k: sd[k].astype(ml_dtypes.bfloat16) for k in keys[half:]}, str(tmp_path / "b.safetensors"))
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
      {"weight_map": {**{k: "a.safetensors" for k in keys[:half]}, **{k: "b.safetensors" for k in keys[half:]}}}))
  src = open_source(str(tmp_path))
  assert sorted(src.keys()) == keys
  assert src.dtype(keys[-1]) == np.dtype(ml_dtypes.bfloat16)
  m = Toy(cfg, rngs=nnx.Rngs(0))
  report = load_torch_weights(m, toy_table(cfg), src)
  n_bf16_mapped = sum(1 for k in keys[half:] if not k.startswith("model.track_head"))
  assert report.dtype_changes == {"bfloat16->float32": n_bf16_mapped}
  np.testing.assert_array_equal(SafetensorsSource([str(tmp_path / "a.safetensors")]).get(keys[0]), sd[keys[0]])
  (tmp_path / "a.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="missing shard"):
    open_source(str(tmp_path))


def test_pth_is_read_with_weights_only(tmp_path):
  import torch  # the dev extra installs it
  cfg = ToyConfig()
  sd = toy_state_dict(cfg)
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "w.pth")
  m = Toy(cfg, rngs=nnx.Rngs(0))
  assert load_torch_weights(m, toy_table(cfg), open_source(str(tmp_path / "w.pth"))).ok

  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))

  torch.save({"x": Evil()}, tmp_path / "evil.pth")
  with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
    open_source(str(tmp_path / "evil.pth"))


def test_orbax_round_trip_places_shards(tmp_path):
  cfg = ToyConfig()
  m = Toy(cfg, rngs=nnx.Rngs(0))
  load_torch_weights(m, toy_table(cfg), toy_state_dict(cfg))
  m.save_checkpoint(str(tmp_path / "ckpt"))
  with pytest.raises(FileExistsError):
    m.save_checkpoint(str(tmp_path / "ckpt"))
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  m2 = Toy.from_checkpoint(str(tmp_path / "ckpt"), mesh=mesh)
  np.testing.assert_array_equal(np.asarray(m2.fc.kernel[...]), np.asarray(m.fc.kernel[...]))
  np.testing.assert_array_equal(np.asarray(m2.stack[...]), np.asarray(m.stack[...]))
  # fc kernel [8, 16] has logical ("embed", "mlp") -> fsdp (4) x tensor (2)
  assert m2.fc.kernel[...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert len(m2.fc.kernel[...].sharding.device_set) == 8
  m3 = Toy.from_checkpoint(str(tmp_path / "ckpt"))  # single device
  assert len(m3.fc.kernel[...].sharding.device_set) == 1


def test_mesh_errors_are_clear():
  from gen3r_jax.errors import Gen3RInputError
  with pytest.raises(Gen3RInputError, match="does not divide the 8 devices"):
    make_mesh({"fsdp": 3, "data": -1})
  with pytest.raises(Gen3RInputError, match="needs 6 devices but 8"):
    make_mesh({"fsdp": 3, "tensor": 2})
  assert make_mesh({"data": 2, "fsdp": -1}).shape["fsdp"] == 4
