"""Metric writers (clu) and progress reporting.

``clu.metric_writers``' package ``__init__`` imports its TensorFlow summary writer, so on a machine without
TensorFlow the package cannot be imported the usual way. :func:`_clu_writers` loads the TF-free modules
(``interface``, ``logging_writer``, ``multi_writer``) directly; the TensorBoard side is :class:`TensorboardXWriter`,
a clu ``MetricWriter`` over ``tensorboardX`` (event files TensorBoard reads).

Only process 0 writes (:func:`create_writer` gives the others a writer that drops everything).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
import types
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np

from gen3r_jax.progress import fmt_seconds


def _clu_writers():
  """``(interface, logging_writer, multi_writer)`` modules of clu, without importing TensorFlow."""
  try:
    from clu import metric_writers  # noqa: F401 - works when TensorFlow is installed
    from clu.metric_writers import (  # heavy optional dependency: imported on first use
        interface, logging_writer, multi_writer
    )
    return interface, logging_writer, multi_writer
  except ImportError:
    pass
  import clu  # heavy optional dependency: imported on first use
  name = "clu.metric_writers"
  broken = sys.modules.get(name)
  if broken is None or not hasattr(broken, "MetricWriter"):
    pkg = types.ModuleType(name)
    pkg.__path__ = [os.path.join(os.path.dirname(clu.__file__), "metric_writers")]
    sys.modules[name] = pkg
    clu.metric_writers = pkg
  interface = importlib.import_module(name + ".interface")
  logging_writer = importlib.import_module(name + ".logging_writer")
  multi_writer = importlib.import_module(name + ".multi_writer")
  pkg = sys.modules[name]
  pkg.MetricWriter, pkg.LoggingWriter = interface.MetricWriter, logging_writer.LoggingWriter
  pkg.MultiWriter = multi_writer.MultiWriter
  return interface, logging_writer, multi_writer


@functools.cache
def _writer_classes() -> types.SimpleNamespace:
  """clu's writer classes and ours on top of them, built on first use (clu is not imported with this module:
  the trainer's loop imports it, and the GPU image, where benchmarks import the loop, has no clu)."""
  interface, logging_writer, multi_writer = _clu_writers()
  MetricWriter = interface.MetricWriter
  LoggingWriter = logging_writer.LoggingWriter
  MultiWriter = multi_writer.MultiWriter

  class TensorboardXWriter(MetricWriter):
    """clu ``MetricWriter`` writing TensorBoard event files with ``tensorboardX`` (no TensorFlow needed)."""

    def __init__(self, logdir: str):
      super().__init__()
      from tensorboardX import SummaryWriter  # heavy optional dependency: imported on first use
      self._w = SummaryWriter(logdir=logdir)

    def write_summaries(self, step: int, values: Mapping[str, Any], metadata=None):
      del metadata
      self.write_scalars(step, {k: v for k, v in values.items() if np.ndim(v) == 0})

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
      for k, v in scalars.items():
        self._w.add_scalar(k, float(v), global_step=step)

    def write_images(self, step: int, images: Mapping[str, Any]):
      for k, v in images.items():
        v = np.asarray(v)
        self._w.add_images(k, v, global_step=step, dataformats="NHWC") if v.ndim == 4 else \
            self._w.add_image(k, v, global_step=step, dataformats="HWC")

    def write_videos(self, step: int, videos: Mapping[str, Any]):
      logging.log_first_n(logging.WARNING, "TensorboardXWriter does not write videos.", 1)

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int):
      for k, v in audios.items():
        self._w.add_audio(k, np.asarray(v), global_step=step, sample_rate=sample_rate)

    def write_texts(self, step: int, texts: Mapping[str, str]):
      for k, v in texts.items():
        self._w.add_text(k, v, global_step=step)

    def write_histograms(self, step: int, arrays: Mapping[str, Any], num_buckets=None):
      for k, v in arrays.items():
        bins = (num_buckets or {}).get(k)
        self._w.add_histogram(k, np.asarray(v), global_step=step, max_bins=bins)

    def write_hparams(self, hparams: Mapping[str, Any]):
      self._w.add_text("hparams", "\n".join(f"{k}: {v}" for k, v in sorted(hparams.items())), global_step=0)

    def flush(self):
      self._w.flush()

    def close(self):
      self._w.close()


  class NullWriter(MultiWriter):
    """Writes nothing (processes other than 0)."""

    def __init__(self):
      super().__init__([])

  return types.SimpleNamespace(MetricWriter=MetricWriter, LoggingWriter=LoggingWriter, MultiWriter=MultiWriter,
                               TensorboardXWriter=TensorboardXWriter, NullWriter=NullWriter)


def __getattr__(name: str):
  """``MetricWriter``, ``LoggingWriter``, ``MultiWriter``, ``TensorboardXWriter``, ``NullWriter`` on first use."""
  if name in ("MetricWriter", "LoggingWriter", "MultiWriter", "TensorboardXWriter", "NullWriter"):
    return getattr(_writer_classes(), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_writer(logdir: str, *, tensorboard: bool = True):
  """Console (``LoggingWriter``) + TensorBoard (``TensorboardXWriter``) on process 0, nothing elsewhere."""
  w = _writer_classes()
  if jax.process_index() != 0:
    return w.NullWriter()
  writers = [w.LoggingWriter()]
  if tensorboard:
    writers.append(w.TensorboardXWriter(logdir))
  return w.MultiWriter(writers)


class Progress:
  """Steps/s and ETA between reports (host wall clock; the step's device work is included since metrics are
  fetched at report time)."""

  def __init__(self, first_step: int, num_steps: int):
    self.num_steps = num_steps
    self._t, self._s = time.perf_counter(), first_step

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    rate = (step - self._s) / max(now - self._t, 1e-9)
    self._t, self._s = now, step
    eta = (self.num_steps - step) / rate if rate > 0 else float("inf")
    logging.info("step %d/%d  %.3f steps/s  ETA %s", step, self.num_steps, rate, fmt_seconds(eta))
    return {"steps_per_sec": rate, "eta_seconds": eta}

