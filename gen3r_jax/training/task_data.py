"""The grain data of the training tasks (:mod:`~gen3r_jax.training.stage1_task`,
:mod:`~gen3r_jax.training.stage2_task`): the ``config.data`` checks they share and the pipeline of either stage.
"""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils

from gen3r_jax.data.clips import ClipConfig
from gen3r_jax.data.layout import VALIDATE_IMAGES
from gen3r_jax.data.pipeline import (
    VALIDATE_MODES, PipelineConfig, make_pipeline, sources_from_preencoded, sources_from_records, sources_from_root
)
from gen3r_jax.data.synthetic import generate
from gen3r_jax.errors import require


def check_validate(dc) -> None:
  """``data.validate`` is a mode :func:`gen3r_jax.data.pipeline.validate_sources` knows (checked before any model
  is built)."""
  mode, images = dc.get("validate", "strict"), dc.get("validate_images", "all")
  require(mode in VALIDATE_MODES, f"data.validate must be one of {VALIDATE_MODES} ('strict': one error listing "
          f"every bad scene; 'skip': drop them with a warning), got {mode!r}.")
  require(images in VALIDATE_IMAGES, f"data.validate_images must be one of {VALIDATE_IMAGES} ('all': the header "
          f"of every frame; 'first': of each scene's first frame only), got {images!r}.")


def data_root(dc, workdir: str) -> str:
  """The dataset root; synthetic scenes are generated once under ``<workdir>/synthetic`` (process 0 writes,
  the others wait on the marker file)."""
  if dc.root:
    return dc.root
  root = os.path.join(workdir, "synthetic")
  marker = os.path.join(root, "DONE")
  if jax.process_index() == 0 and not os.path.exists(marker):
    generate(root, scenes=int(dc.synthetic_scenes), frames=int(dc.synthetic_frames),
             height=int(dc.synthetic_size), width=int(dc.synthetic_size), seed=0)
    open(marker, "w").close()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("synthetic data ready")
  return root


def data_pipeline(config, workdir: str, stage: int):
  """The grain pipeline of ``config.data`` for ``stage`` 1 or 2 (this process's share of each global batch): scene
  folders (``data.root``, else synthetic scenes under ``workdir``), TFDS records (``data.records``) or, for stage
  2, pre-encoded records (``data.preencoded``)."""
  dc = config.data
  clip = ClipConfig(num_frames=int(dc.num_frames), height=int(dc.height), width=int(dc.width),
                    strides=tuple(int(s) for s in dc.strides), order="images" if stage == 1 else "cameras")
  if stage == 2 and dc.get("preencoded"):
    sources = sources_from_preencoded(dc.preencoded)
  elif dc.records:
    sources = sources_from_records(dc.records, stage=stage)
  else:
    sources = sources_from_root(data_root(dc, workdir), stage=stage)
  pc = PipelineConfig(stage=stage, batch_size=int(dc.batch_size) // jax.process_count(), seed=int(config.seed),
                      clip=clip, read_threads=int(dc.read_threads), prefetch=int(dc.prefetch),
                      mp_workers=int(dc.mp_workers), validate=str(dc.get("validate", "strict")),
                      validate_images=str(dc.get("validate_images", "all")))
  return make_pipeline(sources, pc)


__all__ = ("check_validate", "data_root", "data_pipeline")
