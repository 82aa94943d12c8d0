"""Sharding rules as config data (``config.sharding``, ``gen3r_jax.parallel.rules.Rules``) on the 8 fake CPU devices:
the config's table is the library's default, rules from a config change the resulting shardings (parameters,
per-model rules, activation constraints), a > 1 MiB parameter that would silently fall back to replication is a
one-line error naming it unless ``allow_replicated`` lists it, and activation axis names are distinct from
parameter axis names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs import base, sample as sample_config
from gen3r_jax.compat import logical_axes
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import WanDiT
from gen3r_jax.nn.params import abstract_module, make_param, zeros_init
from gen3r_jax.parallel.rules import (ACT_AXES, ACT_PREFIX, DEFAULT_RULES, DEFAULT_TABLE, Rules, activation_spec,
                                      as_rules, constrain, make_mesh, module_shardings, state_shardings, use_rules)
from tests.test_wan_dit import _inputs


class Wide(nnx.Module):
  """One parameter of ``shape`` with logical ``axes`` (float32)."""

  def __init__(self, shape, axes, *, rngs: nnx.Rngs):
    self.w = make_param(rngs, zeros_init, shape, axes)


def _state(shape, axes):
  return nnx.state(abstract_module(lambda: Wide(shape, axes, rngs=nnx.Rngs(0))))


def _dit_state():
  return nnx.state(abstract_module(lambda: WanDiT(WanDiTConfig.tiny(), rngs=nnx.Rngs(0))), nnx.Param)


def _fc1_spec(shardings):
  return shardings["blocks"]["ffn"]["fc1"]["kernel"].spec


def test_config_rules_are_the_library_defaults():
  # configs/base.py spells the table out; every tool's config (train and sample) builds the same rules
  assert {k: tuple(v) for k, v in base.sharding().rules.items()} == DEFAULT_TABLE
  assert Rules.from_config(base.get_config().sharding) == DEFAULT_RULES
  assert Rules.from_config(sample_config.get_config().sharding) == DEFAULT_RULES
  assert Rules.from_config(None) is DEFAULT_RULES


def test_rules_from_config_change_the_parameter_shardings():
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  state = _dit_state()
  # default: the stacked FFN kernel [layers, embed, mlp] -> (-, fsdp, tensor)
  assert _fc1_spec(state_shardings(state, mesh)) == P(None, "fsdp", "tensor")
  c = base.get_config()
  c.sharding.rules.embed = ("tensor",)     # embed over tensor, mlp replicated
  c.sharding.rules.mlp = ()
  rules = Rules.from_config(c.sharding)
  assert _fc1_spec(state_shardings(state, mesh, rules)) == P(None, "tensor", None)
  # a per-model rule changes only that model: the DiT ("transformer" in a bundle) and not the VGGT
  c = base.get_config()
  c.sharding.model_rules.dit.mlp = ("fsdp",)
  c.sharding.model_rules.dit.embed = ()
  rules = Rules.from_config(c.sharding)
  assert _fc1_spec(state_shardings(state, mesh, rules.for_model("transformer"))) == P(None, None, "fsdp")
  assert _fc1_spec(state_shardings(state, mesh, rules.for_model("vggt"))) == P(None, "fsdp", "tensor")
  # a composite state (a trainer's frozen modules): each top-level entry gets its model's rules
  both = nnx.State({"transformer": state, "vggt": state})
  sh = module_shardings(both, mesh, rules)
  assert _fc1_spec(sh["transformer"]) == P(None, None, "fsdp")
  assert _fc1_spec(sh["vggt"]) == P(None, "fsdp", "tensor")


def test_rules_from_config_change_the_activation_constraints():
  mesh = make_mesh({"data": 2, "fsdp": 4})
  x = jax.ShapeDtypeStruct((8, 16, 32), jnp.float32)

  def spec_under(rules):
    with jax.set_mesh(mesh), use_rules(rules):
      out = jax.jit(lambda a: constrain(a)).lower(x).compile().output_shardings.spec   # a fresh trace
    return tuple(out) + (None,) * (3 - len(tuple(out)))

  assert spec_under(DEFAULT_RULES) == (("data", "fsdp"), None, None)   # act_batch -> cfg (1 here), data, fsdp
  c = base.get_config()
  c.sharding.rules.act_batch = ("data",)
  c.sharding.rules.act_embed = ("fsdp",)   # the residual stream's width over fsdp
  assert spec_under(Rules.from_config(c.sharding)) == ("data", None, "fsdp")
  # outside a use_rules block the defaults are back
  assert activation_spec(ACT_AXES, mesh) == P(("cfg", "data", "fsdp"), "context", None)


def test_rules_from_the_command_line_syntax():
  # what --config.sharding.rules.embed="('tensor',)" and --config.sharding.rules.kv="()" give: tuples
  c = base.get_config()
  c.sharding.rules.embed = ("tensor",)
  c.sharding.rules.vocab = ()
  r = Rules.from_config(c.sharding)
  assert r.mesh_axes("embed") == ("tensor",) and r.mesh_axes("vocab") == ()
  c.sharding.rules.embed = ("fsdp", "fsdp_typo")
  with pytest.raises(Gen3RInputError, match=r"sharding.rules.embed: .* must be mesh axes among"):
    Rules.from_config(c.sharding)
  c = base.get_config()
  c.sharding.model_rules.unet = {"embed": ()}
  with pytest.raises(Gen3RInputError, match=r"unknown model\(s\) \['unet'\]"):
    Rules.from_config(c.sharding)


def test_misspelt_names_in_the_sharding_section_are_errors():
  # a misspelt logical axis (in rules or a model's rules) or sharding key would otherwise be silently ignored
  c = base.get_config()
  c.sharding.rules.embedd = ("tensor",)
  with pytest.raises(Gen3RInputError, match=r"sharding.rules: unknown logical axis name\(s\) \['embedd'\]; the known "
                                            r"ones are embed, mlp, .*act_kv"):
    Rules.from_config(c.sharding)
  c = base.get_config()
  c.sharding.model_rules.dit = {"act_embd": ("tensor",)}
  with pytest.raises(Gen3RInputError, match=r"sharding.model_rules.dit: unknown logical axis name\(s\) "
                                            r"\['act_embd'\]"):
    Rules.from_config(c.sharding)
  c = base.get_config()
  c.sharding.allow_replicatd = ("*",)
  with pytest.raises(Gen3RInputError, match=r"config.sharding: unknown key\(s\) \['allow_replicatd'\]; the known ones "
                                            r"are \['rules', 'model_rules', 'allow_replicated', 'replicated_limit_mib'\]"):
    Rules.from_config(c.sharding)
  c = base.get_config()
  c.sharding.model_rules.dit = {"act_embed": ("tensor",)}     # known names still work
  assert Rules.from_config(c.sharding).for_model("dit").mesh_axes("act_embed") == ("tensor",)


def test_for_model_takes_a_known_model_once():
  c = base.get_config()
  c.sharding.model_rules.dit = {"act_embed": ("tensor",)}
  rules = Rules.from_config(c.sharding)
  dit = rules.for_model("transformer")               # an alias of dit
  assert dit.model == "dit" and dit.mesh_axes("act_embed") == ("tensor",)
  assert dit.for_model("dit") is dit                 # made for this model already: as they are
  with pytest.raises(Gen3RInputError, match=r"no model 'unet' to take sharding rules for; use one of dit, vggt, "):
    rules.for_model("unet")
  with pytest.raises(Gen3RInputError, match=r"these sharding rules were made for model 'dit', not 'vggt'"):
    dit.for_model("vggt")                            # would carry dit's act_embed rule to the VGGT


def test_mesh_sizes_below_one_are_errors():
  for shape, bad in (({"fsdp": -1, "tensor": 0}, "tensor=0"), ({"data": -2}, "data=-2"), ({"fsdp": 0}, "fsdp=0")):
    with pytest.raises(Gen3RInputError, match=rf"^mesh axis sizes must be >= 1 \(or -1 for the remaining devices\), "
                                              rf"got {bad}$"):
      make_mesh(shape)
  assert dict(make_mesh({"fsdp": -1, "tensor": 2}).shape) == {"cfg": 1, "data": 1, "fsdp": 4, "context": 1, "tensor": 2}


def test_a_big_parameter_that_would_be_replicated_is_an_error_naming_it():
  mesh = make_mesh({"fsdp": 8})
  big = _state((1000, 300), ("embed", "conv_in"))          # 1.1 MiB float32; 1000 % 8 == 0 but 300 % 8 != 0
  assert state_shardings(big, mesh)["w"].spec == P("fsdp", None)   # sharded: fine
  odd = _state((999, 300), ("embed", "mlp"))              # embed -> fsdp (8) does not divide 999; mlp -> tensor (1)
  with pytest.raises(Gen3RInputError) as e:
    state_shardings(odd, mesh)
  msg = str(e.value)
  assert "\n" not in msg
  assert "parameter w (999, 300) (1.1 MiB" in msg and "embed->fsdp (8)" in msg
  assert "config.sharding.rules" in msg and "config.sharding.allow_replicated=('w',)" in msg
  # per-model rules: the error names the model and where its rules live
  with pytest.raises(Gen3RInputError, match=r"parameter vggt\.w .*config\.sharding\.model_rules\.vggt.*"
                                            r"allow_replicated=\('vggt\.w',\)"):
    state_shardings(odd, mesh, DEFAULT_RULES.for_model("vggt"))
  # small parameters, and parameters the rules never meant to shard on this mesh (pure data parallel), replicate
  assert state_shardings(_state((999, 200), ("embed", "mlp")), mesh)["w"].spec == P(None, None)  # 0.76 MiB
  assert state_shardings(odd, make_mesh({"data": 8}))["w"].spec == P(None, None)
  assert state_shardings(_state((999, 300), ("norm", None)), mesh)["w"].spec == P(None, None)


def test_allow_replicated_silences_the_error():
  mesh = make_mesh({"fsdp": 8})
  odd = _state((999, 300), ("embed", "mlp"))
  c = base.get_config()
  c.sharding.allow_replicated = ("w",)
  assert state_shardings(odd, mesh, Rules.from_config(c.sharding))["w"].spec == P(None, None)
  c.sharding.allow_replicated = ("vggt.*",)                # a pattern on the model-qualified path
  rules = Rules.from_config(c.sharding)
  assert state_shardings(odd, mesh, rules.for_model("vggt"))["w"].spec == P(None, None)
  with pytest.raises(Gen3RInputError, match="would be replicated"):
    state_shardings(odd, mesh, rules.for_model("wan_vae"))
  c.sharding.allow_replicated = ()
  c.sharding.replicated_limit_mib = 2.0                     # or raise the limit
  assert state_shardings(odd, mesh, Rules.from_config(c.sharding))["w"].spec == P(None, None)


def test_activation_axis_names_are_distinct_from_parameter_axis_names():
  acts = {k for k in DEFAULT_TABLE if k.startswith(ACT_PREFIX)}
  params = set(DEFAULT_TABLE) - acts
  assert {"act_batch", "act_length", "act_embed", "act_heads"} <= acts and {"embed", "mlp", "heads"} <= params
  assert all(a.startswith(ACT_PREFIX) for a in ACT_AXES)
  # every parameter of the tiny DiT is named with parameter axes only
  for _, var in nnx.to_flat_state(_dit_state()):
    assert not any(a and a.startswith(ACT_PREFIX) for a in logical_axes(var) or ())
  mesh = make_mesh({"fsdp": 8})
  with pytest.raises(Gen3RInputError, match=r"logical axis 'batch' of an activation must be 'act_'-prefixed"):
    activation_spec(("batch", None), mesh)
  with pytest.raises(Gen3RInputError, match=r"logical axis 'act_embed' of a parameter must be not 'act_'-prefixed"):
    state_shardings(_state((8, 8), ("act_embed", None)), mesh)
  # a rule for weights never moves activations and the reverse
  r = as_rules({**DEFAULT_TABLE, "embed": ("tensor",)})
  assert activation_spec(ACT_AXES, mesh, r) == activation_spec(ACT_AXES, mesh)
  r = as_rules({**DEFAULT_TABLE, "act_embed": ("tensor",)})
  assert _fc1_spec(state_shardings(_dit_state(), make_mesh({"fsdp": 4, "tensor": 2}), r)) == P(None, "fsdp", "tensor")


def test_a_missing_rule_is_an_error():
  table = {k: v for k, v in DEFAULT_TABLE.items() if k != "mlp"}
  with pytest.raises(Gen3RInputError, match=r"no sharding rule for the parameter axis 'mlp'; add one to "
                                            r"config.sharding.rules"):
    state_shardings(_dit_state(), make_mesh({"fsdp": 8}), as_rules(table))


def test_sharded_dit_step_follows_config_rules():
  # the DiT forward under a mesh with rules that shard the residual stream's width: numerically the same
  cfg = WanDiTConfig.tiny()
  graphdef, state = nnx.split(WanDiT(cfg, rngs=nnx.Rngs(0)))
  kw = _inputs(cfg, b=2)
  fwd = lambda s, kw: nnx.merge(graphdef, s)(**kw)  # noqa: E731
  ref = np.asarray(jax.jit(fwd)(state, kw))
  c = base.get_config()
  c.sharding.rules.act_embed = ("tensor",)
  rules = Rules.from_config(c.sharding)
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  sharded = jax.device_put(state, state_shardings(state, mesh, rules))
  with jax.set_mesh(mesh), use_rules(rules):
    lowered = jax.jit(fwd).lower(sharded, kw)
    out = np.asarray(lowered.compile()(sharded, kw))
  assert "sharding_constraint" in lowered.as_text()
  np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)
