"""Full-size stage-2 train step benchmark: the 1.3B DiT forward + backward (remat) in bf16 compute with float32
master parameters, global-norm clipping and AdamW, on pre-encoded-style random inputs (49 frames, 560x560):

    x0 [B, 13, 70, 140, 16]   y [B, 13, 70, 140, 20]   context [B, 512, 4096]   clip_fea [B, 257, 1280]
    y_camera [B, 13, 560, 1120, 24]   t_index [B]   noise [B, 13, 70, 140, 16]        (B = 1 per device)

    python -m bench.run --what stage2_step                          # one GPU, remat=full
    python -m bench.run --what stage2_step --kw devices=2           # fsdp over two GPUs (the project's rules)
    python -m bench.run --what stage2_step --kw size=tiny --kw frames=5 --kw image=32 --dtype float32   # CPU

The loss is ``gen3r_jax.training.stage2.flow_matching_loss`` (the trainer's; shifted-sigma timesteps, the
clipped MSE; the row's ``loss`` names it). The train state comes from ``training.state.create_train_state``
(sharded jitted init), the optimiser from ``training.optimizer.make_optimizer`` and the step is the trainer's
own ``training.loop.make_train_step`` (grad norm, AdamW, the NaN guard), on a task whose batch is already
encoded (no frozen models). The step donates the state and is timed over ``repeats`` consecutive steps.

MFU: ``model_flops`` = 3 x the analytic forward (:func:`bench.dit.forward_flops`: forward + 2 x for the
backward); ``hardware_flops`` adds the forward recomputed by ``remat="full"`` (4 x), or the first FFN matmul of
every block with ``remat="attention"`` (which keeps the attention outputs and projections). ``mfu`` = model FLOPs / step time / (devices x peak) with the card's dense bf16 peak
(``bench.common.BF16_DENSE_TFLOPS``: 989.4 TFLOP/s for H100/H200 SXM, ``peak_tflops_per_device``); ``hfu`` likewise with the hardware FLOPs. Flash attention's own
backward recompute of ``QK^T`` is not in either count.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from bench.common import param_count, peak_bf16_tflops, row_base, time_jitted
from bench.dit import SIZES, forward_flops
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import WanDiT
from gen3r_jax.parallel.rules import activation_spec, as_rules, make_mesh
from gen3r_jax.training.loop import make_train_step, step_context
from gen3r_jax.training.optimizer import make_optimizer
from gen3r_jax.training.state import create_train_state
from gen3r_jax.training.task import Task


TINY = dict(frames=5, image=32, repeats=2)   # bench.run --size tiny (CPU smoke)

class _Cfg(dict):
  """``ml_collections.ConfigDict`` stand-in (attribute access + ``get``) for ``make_optimizer``."""
  __getattr__ = dict.__getitem__


# the stage-2 release optimiser (configs/base.py release_stage2) with a constant learning rate: the schedule
# does not change the step's cost
OPTIMIZER = _Cfg(name="adamw", learning_rate=1e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=3e-2,
                 schedule="constant", min_lr_ratio=0.0, warmup_steps=0, decay_steps=0, grad_clip_norm=0.25,
                 grad_accum_steps=1)


def _loss_fn():
  """``(loss(model, batch), name)``: the trainer's flow-matching loss (release settings)."""
  from gen3r_jax.training.stage2 import Stage2Config, flow_matching_loss
  cfg = Stage2Config()

  def loss(model, b):
    return flow_matching_loss(model, b["x0"], b["y"], b["context"], b["clip_fea"], b["y_camera"], b["t_index"],
                              b["noise"], cfg)[0]
  return loss, "training.stage2.flow_matching_loss"


def _batch(cfg: WanDiTConfig, b: int, f: int, h: int, w: int, sharding) -> dict:
  """Random pre-encoded-style inputs on device (``h``, ``w``: one latent half; joint width 2w)."""
  r = 2 * cfg.control_unshuffle // cfg.patch_size[1]

  def make():
    k = jax.random.split(jax.random.key(1), 6)
    return dict(x0=jax.random.normal(k[0], (b, f, h, 2 * w, cfg.out_dim), jnp.float32),
                y=jax.random.normal(k[1], (b, f, h, 2 * w, cfg.cond_dim), jnp.float32),
                context=jax.random.normal(k[2], (b, cfg.text_len, cfg.text_dim), jnp.float32),
                clip_fea=jax.random.normal(k[3], (b, cfg.clip_tokens, cfg.clip_dim), jnp.float32),
                y_camera=jax.random.normal(k[4], (b, f, h * r, 2 * w * r, cfg.in_dim_control_adapter),
                                           jnp.float32),
                t_index=jax.random.randint(k[5], (b,), 0, 1000, jnp.int32),
                noise=jax.random.normal(k[5], (b, f, h, 2 * w, cfg.out_dim), jnp.float32))

  return jax.jit(make, out_shardings=sharding)()


def run(devices: int = 1, remat: str = "full", size: str = "1.3b", dtype: str = "bfloat16", *,
        frames: int = 49, image: int = 560, batch_per_device: int = 1, repeats: int = 5, warmup: int = 1,
        attention: str = "auto", peak_tflops: float | None = None, quick: bool = False,
        mesh_shape: dict | None = None, context_strategy: str = "allgather", rules=None) -> dict:
  """Time ``repeats`` consecutive train steps (state donated) on ``devices`` GPUs (fsdp).

  ``mesh_shape``: the mesh over the ``devices`` (default ``{"fsdp": devices}``; e.g. ``{"fsdp": 4, "context": 2}``),
  ``context_strategy`` the self-attention strategy with ``context > 1`` (the trainer's ``config.context_strategy``).
  The global batch is ``batch_per_device`` clips per data-parallel rank (``devices / (context * tensor)``).
  ``rules``: the sharding rules (a :class:`gen3r_jax.parallel.rules.Rules`, a ``config.sharding`` section or a
  ``{name: mesh axes}`` table; default the library's, which ``configs/base.py`` spells out).

  ``peak_tflops``: per-device peak for MFU (default: the card's, :func:`bench.common.peak_bf16_tflops`).
  """
  del quick
  remat = "none" if remat is None else str(remat)   # `--kw remat=none` parses to None
  rules = as_rules(rules)
  devs = jax.devices()[:devices]
  if len(devs) < devices:
    raise ValueError(f"devices={devices} but only {len(devs)} are visible")
  cfg = SIZES[size](dtype=dtype, param_dtype="float32", remat=remat, attention=attention)
  mesh = make_mesh(mesh_shape or {"fsdp": devices}, devs)
  b = batch_per_device * devices // (mesh.shape["context"] * mesh.shape["tensor"])
  f, h = (frames - 1) // 4 + 1, image // 8
  tx, _ = make_optimizer(OPTIMIZER, 1000)
  t0 = time.perf_counter()
  state, spec = create_train_state(lambda rngs: WanDiT(cfg, rngs=rngs), tx, seed=0, mesh=mesh,
                                   rules=rules.for_model("dit"))
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  loss_of, loss_name = _loss_fn()
  ndim = {"x0": 5, "y": 5, "context": 3, "clip_fea": 3, "y_camera": 5, "t_index": 1, "noise": 5}
  batch_sh = {k: NamedSharding(mesh, activation_spec(("act_batch",) + (None,) * (n - 1), mesh, rules))
              for k, n in ndim.items()}
  batch = _batch(cfg, b, f, h, h, batch_sh)
  task = Task(build=lambda rngs: WanDiT(cfg, rngs=rngs), loss_fn=lambda m, frozen, b, rng: (loss_of(m, b), {}),
              make_data=lambda: iter(()))
  jitted = make_train_step(spec, task, tx, ema_decay=None, batch_sh=batch_sh, frozen_sh=None, mesh=mesh)
  fwd = forward_flops(cfg, b, f, h, 2 * h, camera=True)
  model_flops = 3 * fwd
  hw_flops = (4 if remat == "full" else 3) * fwd
  if remat == "attention":  # recomputes each block's first FFN matmul
    pt, ph, pw = cfg.patch_size
    hw_flops += 2 * b * (f // pt) * (h // ph) * (2 * h // pw) * cfg.dim * cfg.ffn_dim * cfg.num_layers
  with step_context(mesh, context_strategy, rules):
    t = time_jitted(jitted, state, None, batch, jax.random.PRNGKey(0), warmup=warmup, repeats=repeats,
                    flops=model_flops, carry=True)
  step_s = t["median_s"]
  pt, ph, pw = cfg.patch_size
  tokens = b * (f // pt) * (h // ph) * (2 * h // pw)
  on_gpu = jax.devices()[0].platform == "gpu"
  card_peak, card_source = peak_bf16_tflops()
  peak = (peak_tflops or card_peak) if on_gpu else None
  source = ("given (peak_tflops)" if peak_tflops else card_source) if peak else None
  from gen3r_jax.nn.attention import chosen_implementations
  return row_base(
      "stage2_train_step", dtype=dtype, ref_key="stage2_step", size=size, param_dtype="float32",
      master_params="float32", remat=remat, devices=devices, mesh=dict(mesh.shape), batch=b,
      context_strategy=context_strategy if mesh.shape["context"] > 1 else None,
      batch_per_device=batch_per_device, frames=frames, image=image, loss=loss_name, optimizer="clip 0.25 + AdamW", step="training.loop.make_train_step",
      shapes={"x0": [b, f, h, 2 * h, cfg.out_dim], "y": [b, f, h, 2 * h, cfg.cond_dim],
              "context": [b, cfg.text_len, cfg.text_dim], "clip_fea": [b, cfg.clip_tokens, cfg.clip_dim],
              "y_camera": [b, f, 8 * h, 16 * h, cfg.in_dim_control_adapter]},
      params=param_count(state["params"]), init_s=init_s, **t, tokens=tokens, tokens_per_s=tokens / step_s,
      model_tflop=model_flops / 1e12, hardware_tflop=hw_flops / 1e12, hardware_tflops=hw_flops / step_s / 1e12,
      peak_tflops_per_device=peak, peak_source=source, attention=attention,
      attention_chosen=sorted(set(chosen_implementations().values())) or [attention],
      mfu=model_flops / step_s / 1e12 / (devices * peak) if peak else None,
      hfu=hw_flops / step_s / 1e12 / (devices * peak) if peak else None,
      flops_counted="model = 3 x forward_flops (hand formula); hardware adds the remat recompute (full: 4 x; attention: + the FFN's first matmul)")
