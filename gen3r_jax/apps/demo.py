"""Everything the CPU demo (``configs/demo_tiny.py``) needs, made by the project itself: a random-weight tiny
bundle, a small SentencePiece tokenizer trained on a built-in corpus, and a procedurally rendered example image.

    ckpt = ensure_demo_bundle("/tmp/gen3r_demo")           # cached: written once, reused
    image = ensure_example_image("/tmp/gen3r_demo")        # 560x560 PNG from gen3r_jax.data.synthetic

The models have the parity fixtures' tiny widths (random weights, so the outputs have no visual meaning) but the
real frame geometry: 560x560 frames, 70x70 latents per half, 40x40 VGGT tokens, 257 CLIP tokens.
"""

from __future__ import annotations

import io
import json
import os

from PIL import Image
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm

from gen3r_jax.apps.bundle import RECORD_FILE, save_random_bundle
from gen3r_jax.data import synthetic
from gen3r_jax.data.preencoded import SIZE
from gen3r_jax.data.synthetic import render_clip
from gen3r_jax.errors import require
from gen3r_jax.models.clip.model import CLIPVisionConfig
from gen3r_jax.models.geometry_adapter.model import GeometryAdapterConfig
from gen3r_jax.models.umt5.t5 import UMT5Config
from gen3r_jax.models.vggt import VGGT
from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.wan_dit.config import WanDiTConfig
from gen3r_jax.models.wan_vae.vae import WanVAEConfig


VOCAB = 100
CORPUS = (
    "The palace of Knossos on Crete as it would have stood in its glorious heyday.",
    "A quiet street in an old town at dawn, with stone houses and wooden doors.",
    "A bright living room with a sofa, a wooden table and large windows.",
    "A mountain lake surrounded by pine trees under a clear blue sky.",
    "A colourful room with boxes and spheres on a checkered floor.",
    "bad detailed, blurry, low quality, distorted, ugly, worst quality.",
    "A red brick wall, a green door, a white window and a grey roof.",
    "The camera moves slowly through the scene, zooming out to show the whole building.",
)
DONE = "gen3r_demo_ready.json"


def train_tokenizer(out_dir: str, vocab_size: int = VOCAB) -> str:
  """A unigram SentencePiece model with umT5's special ids (pad 0, eos 1, unk 2) in ``out_dir/spiece.model``."""

  os.makedirs(out_dir, exist_ok=True)
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS * 4), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
      minloglevel=2)
  path = os.path.join(out_dir, "spiece.model")
  with open(path, "wb") as f:
    f.write(buf.getvalue())
  return path


def tiny_configs(vocab: int = VOCAB) -> dict:
  """Component -> config object of the demo's tiny models (consistent widths, see module docstring)."""
  t5 = UMT5Config.tiny(vocab=vocab)
  clip = CLIPVisionConfig.tiny(image_size=224)                  # 16x16 + 1 = 257 tokens, as the DiT expects
  vggt = VGGTConfig.tiny()
  adapter = GeometryAdapterConfig.tiny()
  require(adapter.output_dim == 10 * vggt.embed_dim, "demo configs: adapter output_dim must be 5 * 2 * VGGT width")
  dit = WanDiTConfig.tiny(text_len=512, text_dim=t5.dim, clip_dim=clip.dim)
  return {"text_encoder": t5, "clip_image_encoder": clip, "transformer": dit, "wan_vae": WanVAEConfig.tiny(),
          "geo_adapter": adapter, "vggt": vggt}


def ensure_demo_bundle(cache_dir: str, *, seed: int = 0, log=print) -> str:
  """Write (once) a random tiny bundle under ``cache_dir/bundle`` and return its path."""
  ckpt = os.path.join(cache_dir, "bundle")
  marker = os.path.join(ckpt, DONE)
  if os.path.exists(marker) and os.path.exists(os.path.join(ckpt, RECORD_FILE)):   # else rewritten
    with open(marker) as f:
      if json.load(f).get("seed") == seed:
        return ckpt
  tok_dir = os.path.join(cache_dir, "tokenizer_src")
  train_tokenizer(tok_dir)
  log(f"[demo] writing a random tiny Gen3R bundle to {ckpt}")
  save_random_bundle(ckpt, tiny_configs(), tokenizer_dir=tok_dir, seed=seed, log=log,
                     postprocess=lambda staged: fix_camera_head(os.path.join(staged, "vggt")))
  with open(marker, "w") as f:
    json.dump({"seed": seed}, f)
  return ckpt


def fix_camera_head(vggt_dir: str) -> None:
  """Keep a random VGGT's field of view positive (as the parity fixture does): the FoV outputs of the camera
  head's last layer get a small kernel and a positive bias, so the relu'd FoV never collapses to 0 (which would
  give infinite focal lengths)."""

  model = VGGT.from_checkpoint(vggt_dir)
  fc2 = model.camera_head.pose_branch.fc2
  fc2.kernel[...] = fc2.kernel[...].at[:, 7:].multiply(0.05)
  fc2.bias[...] = fc2.bias[...].at[7:].set(jnp.float32(0.3))
  model.save_checkpoint(vggt_dir, overwrite=True)


def example_image(seed: int = 0, size: int = 560) -> np.ndarray:
  """A rendered synthetic room ``[size, size, 3]`` uint8 (first frame of :func:`render_clip`)."""
  rgb, _, _, _ = render_clip(seed=seed, frames=1, hw=(size, size))
  return rgb[0]


def ensure_example_image(cache_dir: str, *, seed: int = 0, size: int = 560) -> str:
  """Write (once) the example image to ``cache_dir/example_<seed>.png`` and return its path."""
  path = os.path.join(cache_dir, f"example_{seed}.png")
  if not os.path.exists(path):
    os.makedirs(cache_dir, exist_ok=True)
    Image.fromarray(example_image(seed, size)).save(path)
  return path


def preencode_inputs(cache_dir: str, *, scenes: int = 1, frames: int = 5, log=print) -> tuple[str, str]:
  """``(source root, bundle)`` for ``launch/preencode.py --tiny``: synthetic 560x560 scenes and the cached random
  tiny bundle."""
  root = os.path.join(cache_dir, f"scenes_{scenes}x{frames}")
  if not os.path.isfile(os.path.join(root, "train_videos_dirs.txt")):
    log(f"[preencode] rendering {scenes} synthetic scenes per dataset to {root}")
    synthetic.generate(root, scenes, frames=frames, height=SIZE, width=SIZE, test_scenes=0)
  return root, ensure_demo_bundle(cache_dir, log=log)


__all__ = ("CORPUS", "VOCAB", "train_tokenizer", "tiny_configs", "ensure_demo_bundle", "fix_camera_head", "example_image",
           "ensure_example_image", "preencode_inputs")
