"""Pre-encode stage-2 clips offline: VAE / adapter posteriors, umT5 and CLIP embeddings into a TFDS dataset.

    python launch/preencode.py --source <official layout root | array_record dir> --bundle ckpt/gen3r \\
        --out /data/gen3r_preencoded [--split train] [--clips_per_scene 1] [--batch_size 1] [--dtype bfloat16]
    # one process per GPU / host, each encoding its share of the shards (same flags otherwise):
    CUDA_VISIBLE_DEVICES=3 python launch/preencode.py ... --process_index 3 --process_count 8
    # CPU demo without downloads: random tiny models, synthetic 560x560 scenes, 1-frame clips (--num_frames 5
    # shows three distinct control videos but takes minutes on a small CPU)
    python launch/preencode.py --tiny --out /tmp/gen3r_preencoded

Rerunning the same command resumes (finished shards are skipped); the last process to finish writes the dataset
metadata. Train on the result with ``config.data.preencoded=<out>``. All logic lives in
:mod:`gen3r_jax.training.preencode` (the on-disk format and reader in :mod:`gen3r_jax.data.preencoded`); bad input
prints one ``error: ...`` line and exits with status 2 before any model is loaded.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SOURCE = flags.DEFINE_string("source", None, "official layout root or array_record dataset folder")
_BUNDLE = flags.DEFINE_string("bundle", None, "converted checkpoint (launch/convert.py)")
_OUT = flags.DEFINE_string("out", None, "output dataset folder (rerun with the same flags to resume)")
_SPLIT = flags.DEFINE_string("split", "train", "train (one split per dataset) or a split of the source (test)")
_CLIPS = flags.DEFINE_integer("clips_per_scene", 1, "clips cut from each scene (fixed at pre-encode time)")
_BATCH = flags.DEFINE_integer("batch_size", 1, "clips per encoder call")
_SHARD = flags.DEFINE_integer("shard_size", 16, "clips per output file (host RAM ~ shard_size x 184 MB)")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float16", "float32"], "storage dtype")
_COMPUTE = flags.DEFINE_enum("compute_dtype", None, ["bfloat16", "float32"],
                             "encoder compute dtype (default bfloat16, official; float32 with --tiny)")
_FRAMES = flags.DEFINE_integer("num_frames", None, "frames per clip, 1 + 4k (default 49; 1 with --tiny)")
_SEED = flags.DEFINE_integer("seed", 42, "clip / caption sampling seed")
_MAXLEN = flags.DEFINE_integer("max_length", 512, "umT5 token length")
_PAD = flags.DEFINE_enum("pad", "random", ["random", "last", "error"], "scenes shorter than num_frames")
_KEEP = flags.DEFINE_bool("keep_models", False, "keep all encoders loaded (needs them all in device memory)")
_PI = flags.DEFINE_integer("process_index", 0, "this process's index")
_PC = flags.DEFINE_integer("process_count", 1, "number of processes sharing the work")
_TINY = flags.DEFINE_bool("tiny", False, "random tiny models (and synthetic scenes unless --source): no downloads")
_CACHE = flags.DEFINE_string("tiny_cache", os.path.join(os.path.expanduser("~"), ".cache", "gen3r_jax_demo"),
                             "where --tiny keeps its random bundle and synthetic scenes")


def run() -> None:
  from gen3r_jax.apps.demo import preencode_inputs
  from gen3r_jax.training.preencode import PreencodeConfig, preencode
  from gen3r_jax.errors import require
  source, bundle = _SOURCE.value, _BUNDLE.value
  require(bool(_OUT.value), "--out required (see --helpfull).")
  if _TINY.value:
    require(not bundle, "--tiny brings its own random tiny bundle; drop --bundle (or drop --tiny).")
    demo_source, bundle = preencode_inputs(_CACHE.value)
    source = source or demo_source
  missing = [n for n, v in (("--source", source), ("--bundle", bundle)) if not v]
  require(not missing, f"{', '.join(missing)} required (see --helpfull), or --tiny for a demo.")
  tiny = _TINY.value
  cfg = PreencodeConfig(source=source, bundle=bundle, out=_OUT.value, split=_SPLIT.value,
                        clips_per_scene=_CLIPS.value, batch_size=_BATCH.value, shard_size=_SHARD.value,
                        dtype=_DTYPE.value, compute_dtype=_COMPUTE.value or ("float32" if tiny else "bfloat16"),
                        num_frames=_FRAMES.value or (1 if tiny else 49), seed=_SEED.value, max_length=_MAXLEN.value,
                        pad=_PAD.value, keep_models=_KEEP.value, process_index=_PI.value, process_count=_PC.value)
  preencode(cfg)


def main(argv) -> int:
  del argv
  from gen3r_jax.apps.cli import run_tool
  return run_tool(run)


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
