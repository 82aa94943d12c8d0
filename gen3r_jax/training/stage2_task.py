"""Stage-2 task for the trainer: config -> (trainable WanDiT, frozen encoders, flow-matching loss, grain data).

```
config.model ─► model_configs: DiT (1.3B | 14B | tiny) + VGGT, adapter, Wan VAE, umT5, CLIP (release | tiny),
               each <Config>.from_dict(config.model.<name>, base=<size preset>)
  DiT: model.dit_checkpoint (Orbax; stored shapes checked against the config first) | random (tiny: host draws)
  frozen: Orbax checkpoints model.*_checkpoint (release) | random (tiny)  ─► Stage2Frozen (+ empty-caption context)
config.data ─► online: grain stage-2 clips ─► host tokenisation ─► {frames, c2ws, Ks, text_ids, text_mask}
            └► data.preencoded: launch/preencode.py records ─► {posteriors, context, clip_fea, c2ws, Ks}
loss = stage2.stage2_loss(dit, frozen, batch, key, Stage2Config(**config.stage2))
```

All transformer parameters train; VGGT, the adapter, the Wan VAE, umT5 and CLIP are frozen (training-reference
§3.1). With ``data.preencoded`` only the empty-caption context of the pre-encoding is kept: no frozen model is
built. Sizes: ``model.size = "release"`` uses the released frozen models (checkpoints required) and
``model.dit_size`` picks the DiT; ``"tiny"`` uses fixture-sized random models throughout (debugging and tests; the
DiT can still come from ``model.dit_checkpoint``). Each model's config is its size preset with the fields of its
``config.model`` sub-dict (``dit``, ``vggt``, ``adapter``, ``wan_vae``, ``text_encoder``, ``clip``; the config
dataclasses' field names: ``model.dit.remat``, ``model.dit.attention``, ...; ``stage1_task.model_config``).
Online frames are ``model.adapter.token_grid x 14`` square: 560 x 560 for the release's grid 40 (40 x 40 VGGT
tokens <-> 70 x 70 latents), 112 x 112 for the debug configs' 8.

Tokenisation runs on the host in the data iterator: the umT5 SentencePiece tokenizer (``model.tokenizer``) at the
release size; for ``tiny`` :class:`DebugTokenizer`, a documented deterministic stand-in (the tiny umT5 has a
64-token vocabulary that no real tokenizer matches).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence
import zlib

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from gen3r_jax.data.preencoded import read_metadata
from gen3r_jax.errors import fmt_list, require
from gen3r_jax.parallel.rules import as_rules
from gen3r_jax.models.checkpoint import PARAMS_DIR, read_config
from gen3r_jax.models.clip.model import CLIPVision, CLIPVisionConfig
from gen3r_jax.models.geometry_adapter.model import GeometryAdapter
from gen3r_jax.models.init import random_params
from gen3r_jax.models.umt5.t5 import UMT5Config, UMT5Encoder
from gen3r_jax.models.umt5.tokenizer import UMT5Tokenizer
from gen3r_jax.models.vggt import VGGT
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_dit.transformer import WanDiT, abstract_model
from gen3r_jax.models.wan_vae.vae import WanVAE
from gen3r_jax.nn.context_parallel import check_strategy
from gen3r_jax.sampling.cameras import check_num_frames
from gen3r_jax.training.stage1 import random_on_mesh
from gen3r_jax.training.stage1_task import model_config, model_configs as stage1_models, model_overrides
from gen3r_jax.training.stage2 import Stage2Config, Stage2Frozen, empty_caption_context, stage2_loss
from gen3r_jax.training.task import Task, rules_of
from gen3r_jax.training.task_data import check_validate, data_pipeline


DIT_SIZES = ("1.3b", "14b")


@dataclasses.dataclass(frozen=True)
class Stage2Models:
  dit: Any
  vggt: Any
  wan_vae: Any
  adapter: Any
  text_encoder: Any
  clip: Any


def model_configs(mc) -> Stage2Models:
  """Model configs of ``config.model`` (checked for consistency: the DiT's text/CLIP widths match the encoders)."""
  vggt, wan, adapter = stage1_models(mc)
  require(mc.dit_size in DIT_SIZES, f"model.dit_size must be one of {DIT_SIZES}, got {mc.dit_size!r}.")
  if mc.size == "release":
    t5 = model_config(UMT5Config.umt5_xxl(), mc, "text_encoder")
    clip = model_config(CLIPVisionConfig.vit_h_14(), mc, "clip")
    dit = model_config((WanDiTConfig.wan_1_3b if mc.dit_size == "1.3b" else WanDiTConfig.wan_14b)(), mc, "dit")
  else:
    t5 = model_config(UMT5Config.tiny(), mc, "text_encoder")
    clip = model_config(CLIPVisionConfig.tiny(), mc, "clip")
    dit = model_config(WanDiTConfig.tiny(text_dim=t5.dim, clip_dim=clip.dim, clip_tokens=clip.num_tokens), mc, "dit")
  require(dit.text_dim == t5.dim and dit.clip_dim == clip.dim and dit.clip_tokens == clip.num_tokens,
          f"DiT text/CLIP inputs ({dit.text_dim}, {dit.clip_tokens} x {dit.clip_dim}) do not match umT5 ({t5.dim}) "
          f"and CLIP ({clip.num_tokens} x {clip.dim}).")
  return Stage2Models(dit, vggt, wan, adapter, t5, clip)


def latent_grid(dc) -> tuple[int, int, int]:
  """``(f, h, 2w)`` of the joint latent of ``config.data`` (appearance | geometry side by side)."""
  return 1 + (int(dc.num_frames) - 1) // 4, int(dc.height) // 8, 2 * (int(dc.width) // 8)


def num_tokens(dit_cfg, dc) -> int:
  """DiT tokens per clip."""
  f, h, w = latent_grid(dc)
  pt, ph, pw = dit_cfg.patch_size
  return (f // pt) * (h // ph) * (w // pw)


def check_config(config, mesh_shape, *, online: bool | None = None) -> None:
  """Stage-2 settings and the mesh sizes ``{axis: size}`` (before anything is built; the dry run uses this).
  ``online`` (default: no ``data.preencoded``): frames go through the frozen encoders, so they must be
  ``model.adapter.token_grid x patch`` square (560x560 at the release grid);
  pre-encoded latents are ``data.height / 8 x data.width / 8``."""
  dc = config.data
  Stage2Config(**config.stage2.to_dict()).validate()
  online = not dc.preencoded if online is None else online
  models = model_configs(config.model)
  size = models.adapter.token_grid * models.vggt.patch_size
  require(not online or (dc.height == size and dc.width == size),
          f"stage 2 needs {size}x{size} frames (model.adapter.token_grid {models.adapter.token_grid} x patch "
          f"{models.vggt.patch_size}), got {dc.height}x{dc.width}; set data.height = data.width = {size}, or "
          f"model.adapter.token_grid to data.height / {models.vggt.patch_size} (a multiple of 4).")
  require(dc.height % 16 == 0 and dc.width % 16 == 0,
          f"data.height and data.width must be multiples of 16 (latent / 8, patch 2), got {dc.height}x{dc.width}.")
  check_num_frames(int(dc.num_frames))
  dit = models.dit
  check_strategy(config.context_strategy, dit.num_heads, mesh_shape, rules_of(config).for_model("dit"))
  cp = int(mesh_shape.get("context", 1))
  tokens = num_tokens(dit, dc)
  require(tokens % cp == 0,
          f"the DiT sequence of {tokens} tokens ({dc.num_frames} frames at {dc.height}x{dc.width}) does not split "
          f"over mesh context={cp}; use a context size that divides {tokens} (e.g. 2 for 49 frames) or 1.")


def check_inputs(config) -> None:
  """Exactly one data source; at the release size (online) every frozen checkpoint and the tokenizer."""
  dc, mc = config.data, config.model
  check_validate(dc)
  sources = bool(dc.root) + bool(dc.records) + (dc.synthetic_scenes > 0) + bool(dc.preencoded)
  require(sources == 1, "set exactly one data source: data.root (official layout), data.records (array_record), "
                        "data.preencoded (launch/preencode.py output) or data.synthetic_scenes > 0.")
  if mc.size == "release" and not dc.preencoded:
    missing = [k for k in ("vggt_checkpoint", "adapter_checkpoint", "wan_vae_checkpoint",
                           "text_encoder_checkpoint", "clip_checkpoint", "tokenizer") if not mc[k]]
    require(not missing, f"stage 2 at the release size needs the frozen models: set model.{', model.'.join(missing)} "
                         "(Orbax dirs of launch/convert.py; tokenizer: the folder with spiece.model), or train on "
                         "data.preencoded records.")


# ------------------------------------------------------------------------------------------------------ DiT
def _flat_shapes(tree) -> dict[str, tuple]:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    out[name] = tuple(getattr(leaf, "shape", ()))
  return out


def check_checkpoint_shapes(directory: str, abstract_params, what: str = "DiT") -> None:
  """Compare the parameter shapes stored in an Orbax checkpoint (metadata only) with the model of the config."""
  path = os.path.join(os.path.abspath(directory), PARAMS_DIR)
  require(os.path.isdir(path), f"{what} checkpoint {directory} has no {PARAMS_DIR}/ folder; write it with "
                               "launch/convert.py.")
  meta = ocp.StandardCheckpointer().metadata(path)
  stored = _flat_shapes(getattr(meta, "item_metadata", meta))
  want = _flat_shapes(abstract_params)
  missing = sorted(set(want) - set(stored))
  wrong = [f"{k}: stored {stored[k]}, config {want[k]}" for k in sorted(want) if k in stored and stored[k] != want[k]]
  info = ""
  try:
    c = read_config(directory)
    info = f" (the checkpoint's config: dim {c.get('dim')}, {c.get('num_layers')} layers)"
  except FileNotFoundError:
    pass
  require(not missing and not wrong,
          f"{what} checkpoint {directory} does not match the configured model{info}: "
          f"{fmt_list(wrong, 5) if wrong else ''}{'; missing ' + fmt_list(missing, 5) if missing else ''}. "
          "Set model.dit_size to the checkpoint's size (1.3b | 14b) or point model.dit_checkpoint at the "
          "checkpoint of the configured size.")


def dit_init_params(dit_cfg, mc, *, seed: int, rules=None):
  """``init_params(abstract, shardings)`` for :func:`gen3r_jax.training.state.create_train_state`: the DiT
  checkpoint, host-drawn random weights for the tiny size, or ``None`` (jitted random init). ``rules``: the
  sharding rules of the DiT (``Rules.for_model("dit")``) for the checkpoint restore."""

  if mc.dit_checkpoint:
    check_checkpoint_shapes(mc.dit_checkpoint, nnx.to_pure_dict(nnx.state(abstract_model(dit_cfg), nnx.Param)))

    def restore(abstract, shardings):
      del abstract
      mesh = jax.tree.leaves(shardings)[0].mesh
      model = WanDiT.from_checkpoint(mc.dit_checkpoint, mesh=mesh, config=dit_cfg, rules=as_rules(rules))
      return nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return restore
  if mc.size == "tiny":

    def host_random(abstract, shardings):
      del abstract
      params = nnx.to_pure_dict(nnx.state(random_params(WanDiT, dit_cfg, seed=seed), nnx.Param))
      return jax.device_put(jax.tree.map(np.asarray, params), shardings)   # host values: multi-process safe
    return host_random
  return None


# --------------------------------------------------------------------------------------------------- frozen
def _load(cls, directory: str, cfg, seed: int, mesh, mc, name: str, rules):
  """Model ``name`` from its Orbax checkpoint (its stored config with ``config.model``'s overrides for it) or
  host-drawn random weights (``models.init.random_params``), placed by its logical axes and ``model_rules``."""
  rules = rules.for_model(name)
  if directory:
    return cls.from_checkpoint(directory, mesh=mesh, rules=rules, **model_overrides(mc, name))
  return random_on_mesh(cls, cfg, seed, mesh, rules)


def build_frozen(models: Stage2Models, config, mesh, tokenizer):
  """:class:`Stage2Frozen` on the mesh (see the module docstring)."""
  dc, mc = config.data, config.model
  if dc.preencoded:
    empty = np.asarray(read_metadata(dc.preencoded)["empty_context"], np.float32)
    want = (models.dit.text_len, models.dit.text_dim)
    require(empty.shape == want, f"data.preencoded {dc.preencoded}: empty_context {empty.shape} does not match the "
                                 f"DiT's text input {want}; pre-encode with the matching umT5 and max_length.")
    return Stage2Frozen(None, None, None, empty_context=empty)
  seed, rules = int(config.seed) + 1000, rules_of(config)
  vggt = _load(VGGT, mc.vggt_checkpoint, models.vggt, seed, mesh, mc, "vggt", rules)
  adapter = _load(GeometryAdapter, mc.adapter_checkpoint, models.adapter, seed + 1, mesh, mc, "adapter", rules)
  wan = _load(WanVAE, mc.wan_vae_checkpoint, models.wan_vae, seed + 2, mesh, mc, "wan_vae", rules)
  t5 = _load(UMT5Encoder, mc.text_encoder_checkpoint, models.text_encoder, seed + 3, mesh, mc, "text_encoder", rules)
  clip = _load(CLIPVision, mc.clip_checkpoint, models.clip, seed + 4, mesh, mc, "clip", rules)
  empty = empty_caption_context(tokenizer, t5, models.dit.text_len)
  return Stage2Frozen(vggt, adapter, wan, text_encoder=t5, clip=clip, empty_context=empty)


# ---------------------------------------------------------------------------------------------- tokenisation
class DebugTokenizer:
  """Deterministic stand-in for the umT5 tokenizer of the TINY debug models only (a 64-token vocabulary no real
  tokenizer has). Same interface and layout as :class:`gen3r_jax.models.umt5.tokenizer.UMT5Tokenizer`: each
  lower-cased whitespace-separated word becomes ``3 + crc32(word) % (vocab - 3)`` (ids 0-2 are pad / eos / unk),
  truncated to ``max_length - 1``, then eos (1) and pad (0); ``attention_mask`` is 1 on the tokens and the eos."""

  pad_id, eos_id = 0, 1

  def __init__(self, vocab: int, max_length: int):
    require(vocab > 3 and max_length >= 1, f"DebugTokenizer: vocab {vocab} must be > 3, max_length >= 1.")
    self.vocab, self.max_length = int(vocab), int(max_length)

  def __call__(self, prompts: str | Sequence[str], *, max_length: int | None = None) -> dict[str, np.ndarray]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    n = int(max_length or self.max_length)
    ids = np.zeros((len(prompts), n), np.int32)
    mask = np.zeros((len(prompts), n), np.int32)
    for i, p in enumerate(prompts):
      toks = [3 + zlib.crc32(w.encode()) % (self.vocab - 3) for w in str(p).lower().split()][:n - 1]
      toks.append(self.eos_id)
      ids[i, :len(toks)] = toks
      mask[i, :len(toks)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def make_tokenizer(mc, models: Stage2Models):
  if mc.size == "tiny":
    return DebugTokenizer(models.text_encoder.vocab, models.dit.text_len)
  return UMT5Tokenizer.from_pretrained(mc.tokenizer, max_length=models.dit.text_len)


class Tokenize:
  """Grain map on a host batch: ``text [B]`` -> ``text_ids``, ``text_mask [B, L]`` int32. Holds only the
  tokenizer's recipe (picklable for ``mp_prefetch``) and builds it on first use in each process."""

  def __init__(self, kind: str, arg: Any, max_length: int):
    self.kind, self.arg, self.max_length = kind, arg, int(max_length)
    self._tok = None

  def tokenizer(self):
    if self._tok is None:
      if self.kind == "debug":
        self._tok = DebugTokenizer(self.arg, self.max_length)
      else:
        self._tok = UMT5Tokenizer.from_pretrained(self.arg, max_length=self.max_length)
    return self._tok

  def __getstate__(self):
    return dict(self.__dict__, _tok=None)

  def __call__(self, batch: dict) -> dict:
    tok = self.tokenizer()([str(t) for t in batch["text"]], max_length=self.max_length)
    return dict(batch, text_ids=tok["input_ids"].astype(np.int32), text_mask=tok["attention_mask"].astype(np.int32))


# ------------------------------------------------------------------------------------------------------ data
def make_data(config, workdir: str, models: Stage2Models):
  """A checkpointable grain iterator of this process's share of each global batch."""
  dc, mc = config.data, config.model
  ds = data_pipeline(config, workdir, stage=2).dataset
  if not dc.preencoded:
    tok = (Tokenize("debug", models.text_encoder.vocab, models.dit.text_len) if mc.size == "tiny" else
           Tokenize("umt5", mc.tokenizer, models.dit.text_len))
    ds = ds.map(tok)
  return iter(ds)


def make_task(config, mesh, workdir: str, *, frozen=None, data=None, models: Stage2Models | None = None) -> Task:
  """The stage-2 :class:`Task`. ``frozen`` (a ``Stage2Frozen``), ``data`` (``() -> iterator``) and ``models``
  replace the ones the config describes (tests, custom pipelines); with ``data`` no data source is needed."""
  check_config(config, dict(mesh.shape), online=data is None and not config.data.preencoded)
  if data is None:
    check_inputs(config)
  models = models or model_configs(config.model)
  cfg = Stage2Config(**config.stage2.to_dict()).validate()
  init = dit_init_params(models.dit, config.model, seed=int(config.seed), rules=rules_of(config).for_model("dit"))
  if frozen is None:
    tokenizer = None if config.data.preencoded else make_tokenizer(config.model, models)
    frozen = build_frozen(models, config, mesh, tokenizer)
  return Task(build=lambda r: WanDiT(models.dit, rngs=r), model="dit",
              loss_fn=lambda m, f, b, k: stage2_loss(m, f, b, k, cfg),
              make_data=data or (lambda: make_data(config, workdir, models)), frozen=frozen, init_params=init)
