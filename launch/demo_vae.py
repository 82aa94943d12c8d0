"""Round trip a synthetic video through the Wan VAE: encode, decode, write mp4s, print the PSNR.

    python launch/demo_vae.py --out outputs/demo_vae                     # tiny random VAE (embedded default)
    python launch/demo_vae.py --checkpoint ckpt/wan_vae --out outputs/demo_vae --size 256   # converted weights

The default uses a tiny VAE (base width 8) with random weights, so the reconstruction is noise and the PSNR low:
it demonstrates the chunked causal encode/decode, the checks and the export on any CPU in seconds. With weights
converted by ``launch/convert.py --model wan_vae`` the same command reconstructs the clip (PSNR ~30+ dB).
The clip is rendered on the fly by ``gen3r_jax.data.synthetic`` (a textured room seen by a moving camera).
"""

from __future__ import annotations

import sys

from absl import app, flags

_OUT = flags.DEFINE_string("out", "outputs/demo_vae", "output directory")
_CKPT = flags.DEFINE_string("checkpoint", None, "converted Wan VAE checkpoint (launch/convert.py); default: "
                            "tiny random weights")
_FRAMES = flags.DEFINE_integer("frames", 9, "number of frames, 1 + 4k")
_SIZE = flags.DEFINE_integer("size", 64, "frame height and width, a multiple of 8")
_SEED = flags.DEFINE_integer("seed", 0, "scene and weight seed")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")


def main(argv) -> int:
  del argv
  from gen3r_jax.apps.cli import run_tool
  from gen3r_jax.apps.vae_demo import run
  return run_tool(run, _OUT.value, checkpoint=_CKPT.value, frames=_FRAMES.value, size=_SIZE.value,
                  seed=_SEED.value, dtype=_DTYPE.value)

if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
