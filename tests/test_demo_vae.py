"""The README's main command (VAE round-trip demo) end to end, on a tiny clip."""

import imageio.v3 as iio
import numpy as np
import pytest

from gen3r_jax.apps.vae_demo import run
from gen3r_jax.errors import Gen3RInputError


def test_demo_writes_videos_and_psnr(tmp_path):
  res = run(str(tmp_path), frames=5, size=32, log=lambda *_: None)
  assert res["latent_shape"] == (1, 2, 4, 4, 16)
  assert np.isfinite(res["psnr"]) and 0.0 < res["psnr"] < 60.0
  for name in ("input.mp4", "reconstruction.mp4"):
    frames = np.stack(list(iio.imiter(tmp_path / name)))
    assert frames.shape[:3] == (5, 32, 32)


def test_demo_rejects_bad_frame_count(tmp_path):
  with pytest.raises(Gen3RInputError, match="1 \\+ 4k"):
    run(str(tmp_path), frames=6, size=32, log=lambda *_: None)
