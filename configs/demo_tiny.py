"""CPU demo: the whole Gen3R pipeline with tiny random weights on a procedurally rendered example image.

    python launch/sample.py --config configs/demo_tiny.py --config.out=/tmp/gen3r_demo_out

Nothing to download: a random tiny bundle (the parity fixtures' widths, real 560x560 frame geometry) and the
example image (``gen3r_jax.data.synthetic``) are written once to ``demo.cache_dir`` and reused. The outputs have
no visual meaning (random weights) but every file of a real run is written. Runs in a few minutes on 2 CPU cores.
"""

import os
import tempfile

from configs import sample


def get_config():
  c = sample.get_config()
  c.prompt = "The palace of Knossos on Crete as it would have stood in its glorious heyday."
  c.num_frames = 5
  c.num_steps = 4
  c.dtype = "float32"
  c.demo.enabled = True
  c.demo.cache_dir = os.path.join(tempfile.gettempdir(), "gen3r_jax_demo_cache")
  c.out = os.path.join(tempfile.gettempdir(), "gen3r_jax_demo_out")
  return c
