"""Dry-run memory estimate of one stage-2 (DiT) train step per device, on a target mesh that need not exist here.

```
config ─► AbstractMesh(config.mesh over hardware.num_devices)              (no device, nothing allocated)
  ├─ DiT (abstract_module) ─► shard bytes per leaf by the logical-axis rules ─► params (float32 master weights)
  ├─ jax.eval_shape(tx.init) of the run's optimiser, sharded like the params ─► optimizer (Adam mu + nu, ...)
  ├─ gradients: float32, sharded like the params
  ├─ activations: analytic model below (batch / device, tokens / context, heads and MLP / tensor, remat policy)
  └─ frozen encoders (abstract, same rules; none with data.preencoded)
─► row: params | optimizer | gradients | activations | frozen | total | HBM | fits
```

Activation model, per device (``b`` clips, ``l = L / context`` tokens, width ``D``, per-device head width
``Dt = D / tensor`` and MLP width ``Ft = ffn / tensor`` where they divide, compute dtype of ``c`` bytes):

* one block keeps, without remat, ``P = b l (20 D + 4c D + (10c + 12) Dt + 3c Ft)`` bytes (float32 residual
  stream, norms and modulations; q/k/v, RMS-normed q/k, attention outputs and projections in the compute
  dtype), plus the cross-attention K/V of the ``text_len + 257`` context tokens and the attention itself: a fused
  kernel (cuDNN, splash) keeps its log-sum-exp; the XLA einsum path and the ring keep the float32 logits and
  probabilities ``8 b H_t l L`` (ring: every K/V block, so the same); all-gather context parallelism holds the
  gathered K/V ``2c b L Dt``;
* saved per layer by the remat policy: ``none`` P; ``full`` the block input ``4 b l D``; ``attention`` the input,
  q/k/v, the self- and both cross-attention outputs with their stats and the three ``[l, D]`` projections; ``dots`` /
  ``dots_no_batch`` the input plus every projection output (and the attention einsums for ``dots`` on XLA);
* plus one block recomputed in the backward pass with its gradients (``P + 12 b l D + 2c b l Ft``), the camera
  path (Plücker maps ``[b, F, H, W, 6]`` and camera latents ``[b, f, H, 2W, 24]`` in float32, their compute-dtype
  and pixel-unshuffled copies, adapter convolutions), the latents / loss tensors, the batch itself and the
  FSDP-gathered weights of ~3 layers (float32 / tensor).

The frozen encoders' own activations (online data) are not counted: they run without gradient before the DiT.
``tests/test_train_stage2.py`` checks the model against XLA's ``memory_analysis()`` of the compiled step (within a
factor of 1.5; it overestimates by 15-25% on CPU).
"""

from __future__ import annotations

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, PartitionSpec as P
import optax

from gen3r_jax.compat import value_of
from gen3r_jax.errors import require
from gen3r_jax.models.clip.model import CLIPVision
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter
from gen3r_jax.models.umt5.t5 import UMT5Encoder
from gen3r_jax.models.vggt import VGGT
from gen3r_jax.models.wan_dit.transformer import WanDiT
from gen3r_jax.models.wan_vae.vae import WanVAE
from gen3r_jax.nn.context_parallel import ulysses_split
from gen3r_jax.nn.params import abstract_module, logical_axes
from gen3r_jax.parallel.rules import DEFAULT_RULES, MESH_AXES, param_spec, path_str, spec_axes, spec_for
from gen3r_jax.training.optimizer import make_optimizer
from gen3r_jax.training.stage2_task import check_config, latent_grid, model_configs, num_tokens
from gen3r_jax.training.task import rules_of


GIB = 2 ** 30
FUSED = ("cudnn", "fa3", "splash")


@dataclasses.dataclass
class Estimate:
  """Bytes per device of one configuration (see the module docstring)."""
  name: str
  hardware: str
  mesh: dict
  batch: int
  batch_per_device: int
  tokens: int
  tokens_per_device: int
  dit: str
  dit_params: int
  remat: str
  attention: str
  params: int
  optimizer: int
  gradients: int
  activations: int
  frozen: int
  hbm: int
  parts: dict   # activation breakdown (bytes)

  @property
  def total(self) -> int:
    return self.params + self.optimizer + self.gradients + self.activations + self.frozen

  @property
  def fits(self) -> bool:
    return self.total <= self.hbm


# ------------------------------------------------------------------------------------------------ sharding
def mesh_sizes(shape: dict, num_devices: int) -> dict[str, int]:
  """``{axis: size}`` over ``num_devices`` (one axis may be -1); a clear error when it does not divide."""
  shape = {a: int(v) for a, v in dict(shape).items()}
  unknown = sorted(set(shape) - set(MESH_AXES))
  require(not unknown, f"mesh axes must be among {MESH_AXES}, got {unknown}.")
  sizes = {a: shape.get(a, 1) for a in MESH_AXES}
  require(sizes["cfg"] == 1, f"mesh cfg={sizes['cfg']}: the cfg axis is the sampler's (guidance branches); "
                             "training takes cfg=1 (use data for data parallelism).")
  free = [a for a, s in sizes.items() if s == -1]
  require(len(free) <= 1 and all(s >= 1 or s == -1 for s in sizes.values()),
          f"mesh sizes must be >= 1 (or one -1), got {shape}.")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  require(num_devices % fixed == 0 and (free or fixed == num_devices),
          f"mesh {shape} does not divide the {num_devices} devices (its fixed axes multiply to {fixed}); make the "
          f"axis sizes multiply to {num_devices} or set one axis to -1.")
  if free:
    sizes[free[0]] = num_devices // fixed
  return sizes


def abstract_mesh(sizes: dict[str, int]) -> AbstractMesh:
  return AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES)


def shard_elements(shape, spec, mesh_shape) -> int:
  """Elements of one shard of an array of ``shape`` laid out as ``spec``."""
  n = 1
  entries = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
  for size, entry in zip(shape, entries):
    n *= -(-int(size) // math.prod(mesh_shape[a] for a in spec_axes(entry)))
  return n


def state_bytes(state, mesh, *, dtype=None, rules=DEFAULT_RULES, where=lambda path: True, check: bool = True) -> int:
  """Per-device bytes of an abstract ``nnx.State`` placed by its logical axes (``dtype`` overrides floats).
  ``check``: a parameter the rules would silently replicate is the trainer's error here too
  (:func:`gen3r_jax.parallel.rules.param_spec`), so the dry run finds it without hardware."""
  total = 0
  for path, var in nnx.to_flat_state(state):
    if not where(path):
      continue
    v = value_of(var)
    spec = (param_spec(path_str(path), logical_axes(var), v.shape, jnp.dtype(v.dtype).itemsize, mesh, rules)
            if check else spec_for(logical_axes(var), v.shape, mesh, rules))
    dt = dtype if dtype is not None and jnp.issubdtype(v.dtype, jnp.floating) else v.dtype
    total += shard_elements(v.shape, spec, mesh.shape) * jnp.dtype(dt).itemsize
  return total


class _Spec:
  """A PartitionSpec as a pytree leaf."""

  def __init__(self, spec):
    self.spec = spec


def optimizer_bytes(tx, state, mesh, rules=DEFAULT_RULES) -> int:
  """Per-device bytes of ``tx.init`` on the float32 params (moments sharded like their parameter)."""
  f32 = lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating)  # noqa: E731
                                       else x.dtype)
  abs_pure = jax.tree.map(f32, nnx.to_pure_dict(state))
  specs: dict = {}
  for path, var in nnx.to_flat_state(state):
    node = specs
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = _Spec(spec_for(logical_axes(var), var.get_value().shape, mesh, rules))
  abs_opt = jax.eval_shape(tx.init, abs_pure)
  spec_tree = optax.tree_map_params(tx, lambda _, s: s, abs_opt, specs, transform_non_params=lambda _: _Spec(P()),
                                    is_leaf=lambda x: isinstance(x, _Spec))
  leaves = jax.tree.leaves(abs_opt)
  spec_leaves = jax.tree.leaves(spec_tree, is_leaf=lambda x: isinstance(x, _Spec))
  return sum(shard_elements(a.shape, s.spec, mesh.shape) * a.dtype.itemsize for a, s in zip(leaves, spec_leaves))


# ---------------------------------------------------------------------------------------------- activations
def resolve_attention(implementation: str, platform: str, dtype: str) -> str:
  """The attention dispatch's ``"auto"`` choice on ``platform`` (``gen3r_jax.nn.attention``)."""
  if implementation != "auto":
    return implementation
  return "cudnn" if platform == "gpu" and dtype in ("bfloat16", "float16") else "xla"


def activation_parts(cfg, *, batch: int, grid: tuple[int, int, int], frames: int, mesh_shape: dict,
                     attention: str, strategy: str, batch_bytes: int, gathered_layer_bytes: int) -> dict[str, int]:
  """Per-device activation bytes of one DiT train step (module docstring); ``grid`` is the joint latent
  ``(f, h, 2w)``, ``batch`` clips per device."""
  f, h, w = grid
  b, c = batch, jnp.dtype(cfg.dtype).itemsize
  pt, ph, pw = cfg.patch_size
  tokens = (f // pt) * (h // ph) * (w // pw)
  cp, tp = mesh_shape["context"], mesh_shape["tensor"]
  l = -(-tokens // cp)
  d = cfg.dim
  dt = d // tp if cfg.num_heads % tp == 0 else d
  ft = cfg.ffn_dim // tp if cfg.ffn_dim % tp == 0 else cfg.ffn_dim
  ht = cfg.num_heads // tp if cfg.num_heads % tp == 0 else cfg.num_heads
  lc = cfg.text_len + cfg.clip_tokens
  u, r = ulysses_split(ht, cp) if strategy.startswith("ulysses") else (1, cp)
  ring = cp > 1 and r > 1 and strategy.endswith("ring")          # einsum blocks round a ring (of r)
  einsum_self = ring or attention not in FUSED
  einsum_cross = attention not in FUSED
  attn = 8 * b * ht * l * ((tokens if einsum_self else 0) + (lc if einsum_cross else 0))
  attn += 4 * b * ht * l * 3                                      # log-sum-exp / softmax stats
  # (Ulysses: h/u heads over tokens/r queries -- the same score count as the ring's or all-gather's h x l)
  if cp > 1 and u > 1:
    attn += 4 * c * b * l * dt                                    # all-to-all buffers: stacked q, k, v and out
  if cp > 1 and not ring and r > 1:
    attn += 2 * c * b * tokens * dt // u                          # all-gathered K, V (of h/u heads)
  cross_kv = b * lc * dt * (4 * c + 8)
  block = b * l * (20 * d + 4 * c * d + (10 * c + 12) * dt + 3 * c * ft) + cross_kv + attn
  carry = 4 * b * l * d
  if cfg.remat == "none":
    saved = block
  elif cfg.remat == "full":
    saved = carry
  elif cfg.remat == "attention":   # q, k, v, the three attention outputs + stats, the three [l, D] projections
    saved = carry + c * b * l * (6 * dt + 3 * d) + 4 * b * ht * l * 3
  else:
    saved = carry + c * b * l * (3 * d + 4 * dt + ft) + 4 * c * b * lc * dt
    if cfg.remat == "dots" and einsum_self:
      saved += 4 * b * ht * l * (tokens + lc)
  backward = block + 12 * b * l * d + 2 * c * b * l * ft
  hh, ww = 8 * h, 8 * (w // 2)                                     # pixel frame size
  camera = b * (frames * hh * ww * 6 * 4 + f * hh * 2 * ww * 24 * (4 + 2 * c)) + 4 * c * b * tokens * d
  latents = 4 * b * f * h * w * (16 * 6 + 20 * 2) + c * b * f * h * w * cfg.in_dim + (c + 4) * b * tokens * d
  latents += 3 * 4 * b * lc * d
  return dict(saved=cfg.num_layers * saved, backward=backward, camera=camera, latents=latents,
              batch=batch_bytes, weights=3 * gathered_layer_bytes)


def batch_bytes(config, models, batch: int) -> int:
  """Per-device bytes of the host batch (online frames + tokens, or the pre-encoded arrays)."""
  dc = config.data
  nf, hh, ww = int(dc.num_frames), int(dc.height), int(dc.width)
  cams = nf * (16 + 9) * 4
  if dc.preencoded:
    f, h, w = latent_grid(dc)
    dit = models.dit
    per = 12 * f * h * (w // 2) * 16 * 2 + dit.text_len * dit.text_dim * 2 + dit.clip_tokens * dit.clip_dim * 2
    return batch * (per + cams)
  return batch * (nf * hh * ww * 3 * 4 + cams + 2 * 4 * models.dit.text_len)


# ------------------------------------------------------------------------------------------------- estimate
def estimate(config, *, name: str = "", models=None) -> Estimate:
  """The per-device memory of ``config`` (a stage-2 config) on ``config.hardware``; allocates nothing.
  ``models`` (``stage2_task.Stage2Models``) replaces the model sizes of ``config.model``."""
  require(config.task == "stage2", f"the memory estimate covers stage 2 (the DiT); got task {config.task!r}.")
  hw = config.hardware
  require(int(hw.num_devices) >= 1 and float(hw.hbm_gib) > 0,
          "set hardware.num_devices and hardware.hbm_gib (the target the dry run estimates for).")
  sizes = mesh_sizes(config.mesh, int(hw.num_devices))
  mesh = abstract_mesh(sizes)
  check_config(config, sizes)
  groups = sizes["data"] * sizes["fsdp"]
  gb = int(config.data.batch_size)
  require(gb % groups == 0, f"data.batch_size {gb} must be divisible by mesh data x fsdp = {groups} (the batch axis "
                            f"is sharded over both); use a multiple of {groups} or move devices to context/tensor.")
  b = gb // groups
  models = models or model_configs(config.model)
  dit = models.dit
  state = nnx.state(abstract_module(lambda: WanDiT(dit, rngs=nnx.Rngs(0))), nnx.Param)
  n_params = sum(math.prod(v.get_value().shape) for _, v in nnx.to_flat_state(state))
  rules = rules_of(config)
  params = state_bytes(state, mesh, dtype=jnp.float32, rules=rules.for_model("dit"))
  tx, _ = make_optimizer(config.optimizer, int(config.num_train_steps))
  opt = optimizer_bytes(tx, state, mesh, rules.for_model("dit"))
  tensor_only = abstract_mesh(dict(sizes, data=1, fsdp=1, context=1))
  layer = state_bytes(state, tensor_only, dtype=jnp.float32, rules=rules.for_model("dit"), check=False,
                      where=lambda p: str(p[0]) == "blocks") // dit.num_layers
  impl = resolve_attention(dit.attention, str(hw.platform), dit.dtype)
  parts = activation_parts(dit, batch=b, grid=latent_grid(config.data), frames=int(config.data.num_frames),
                           mesh_shape=sizes, attention=impl, strategy=str(config.context_strategy),
                           batch_bytes=batch_bytes(config, models, b), gathered_layer_bytes=layer)
  frozen = 0
  if not config.data.preencoded:
    for key, cls, cfg in (("vggt", VGGT, models.vggt), ("adapter", GeometryAdapter, models.adapter),
                          ("wan_vae", WanVAE, models.wan_vae), ("text_encoder", UMT5Encoder, models.text_encoder),
                          ("clip", CLIPVision, models.clip)):
      frozen += state_bytes(nnx.state(abstract_module(lambda: cls(cfg, rngs=nnx.Rngs(0)))), mesh,
                            rules=rules.for_model(key))
  tokens = num_tokens(dit, config.data)
  return Estimate(name=name, hardware=str(hw.name), mesh=sizes, batch=gb, batch_per_device=b, tokens=tokens,
                  tokens_per_device=-(-tokens // sizes["context"]), dit=f"{dit.dim}x{dit.num_layers}",
                  dit_params=n_params, remat=dit.remat, attention=impl, params=params, optimizer=opt,
                  gradients=params, activations=sum(parts.values()), frozen=frozen,
                  hbm=int(float(hw.hbm_gib) * GIB), parts=parts)


def format_table(rows: list[Estimate]) -> str:
  """A markdown table, GiB per device, then the activation breakdown of each row."""
  g = lambda x: f"{x / GIB:.2f}"  # noqa: E731
  head = ("entry", "hardware", "mesh d/f/c/t", "DiT params", "batch/dev", "tokens/dev", "remat", "attention",
          "params", "optimizer", "gradients", "activations", "frozen", "total", "HBM", "fits")
  body = []
  for r in rows:
    m = "/".join(str(r.mesh[a]) for a in MESH_AXES if a != "cfg")   # d/f/c/t: training has cfg=1
    body.append((r.name, r.hardware, m, f"{r.dit_params / 1e9:.2f}B", str(r.batch_per_device),
                 str(r.tokens_per_device), r.remat, r.attention, g(r.params), g(r.optimizer), g(r.gradients),
                 g(r.activations), g(r.frozen), g(r.total), g(r.hbm), "yes" if r.fits else "NO"))
  widths = [max(len(x) for x in col) for col in zip(head, *body)]
  line = lambda cells: "| " + " | ".join(x.ljust(w) for x, w in zip(cells, widths)) + " |"  # noqa: E731
  out = ["stage-2 dry run, GiB per device (params: float32 master weights; optimizer: Adam mu + nu in float32, "
         "+ the accumulation buffer with grad_accum_steps > 1; frozen: encoder weights, 0 with data.preencoded):",
         "", line(head), line(["-" * w for w in widths])]
  out += [line(cells) for cells in body]
  out.append("")
  for r in rows:
    parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in r.parts.items())
    out.append(f"activations of {r.name}: {parts}")
  return "\n".join(out)


def compiled_bytes(compiled) -> int:
  """Per-device peak of a compiled XLA program: arguments + outputs - aliased + temporaries."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


__all__ = ("Estimate", "estimate", "format_table", "compiled_bytes", "mesh_sizes", "state_bytes",
           "optimizer_bytes", "activation_parts")
