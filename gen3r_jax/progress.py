"""Progress of long steps on the console: one small helper every CLI shares (conversion, compilation, denoising,
decoding, evaluation, training, export).

    bar = Progress(50, "denoise")                   # on stderr
    for i in range(50):
      ...
      bar.update()                                   # [denoise] [#####     ] 25/50  0.81 s/step  ETA 20 s
    with stage("vae_decode", "decoding the video"):  # [vae_decode] decoding the video ... / done (3.2 s)
      ...

Two renderings. On a terminal, a bar redrawn in place with ``\\r`` (one line per bar). Elsewhere (a log file, a
pipe, CI) or with bars turned off (``--progress=false``, ``config.progress=False``: :func:`configure`), plain lines:
one every ``every`` updates (default: about ten per bar) and the last, never a ``\\r``, so a log stays readable.
``Progress(..., enabled=False)`` prints nothing (library callers that report otherwise).

The first update of a bar may include compilation: the seconds per step shown (and the ETA) are the median of the
later steps once there are any. A bottom-layer helper (no gen3r_jax import): the pure sampling pipeline reports
through it without knowing about the CLIs, and a CLI decides the rendering once with :func:`configure`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, TextIO

import numpy as np


_SETTINGS = {"bars": True}


def configure(bars: bool = True) -> None:
  """Allow (default) or forbid ``\\r`` bars process-wide; forbidden or off a terminal, progress prints lines."""
  _SETTINGS["bars"] = bool(bars)


def use_bars(stream: TextIO) -> bool:
  """Whether progress on ``stream`` is drawn as a bar: bars allowed and ``stream`` a terminal."""
  try:
    tty = bool(stream.isatty())
  except (AttributeError, ValueError):
    tty = False
  return _SETTINGS["bars"] and tty


def fmt_seconds(s: float) -> str:
  """``42 s``, ``3m05s``, ``2h07m``; ``?`` when unknown."""
  if s is None or not np.isfinite(s):
    return "?"
  s = max(0.0, float(s))
  if s < 60:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
  if s < 3600:
    return f"{int(s // 60)}m{int(s % 60):02d}s"
  return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class Progress:
  """A progress bar (or lines) for ``total`` units of work (module docstring).

  Args:
    total: units of work; ``label``: the ``[label]`` prefix; ``unit``: the unit's name (``step``, ``frame``, ...).
    initial: units already done (a resumed run); ``every``: line mode prints every this many units (default
      ``total // 10``); ``enabled``: False prints nothing; ``stream``: default stderr; ``throughput``:
      ``(items per unit, name)``, e.g. ``(batch_size, "examples")``, shows items per second too.
  """

  def __init__(self, total: int, label: str, *, unit: str = "step", initial: int = 0, every: int | None = None,
               enabled: bool = True, stream: TextIO | None = None, throughput: tuple[float, str] | None = None):
    self.total, self.label, self.unit, self.enabled = int(total), label, unit, enabled
    self.throughput = throughput
    self.stream = stream or sys.stderr
    self.done = self.start = int(initial)
    self.every = max(1, int(every) if every else max(1, (self.total - self.done) // 10))
    self.times: list[float] = []
    self.extra = ""
    self._last = time.perf_counter()
    self._bar = enabled and use_bars(self.stream)

  @property
  def seconds_per_unit(self) -> float:
    steady = self.times[1:] or self.times               # the first update may include compilation
    return float(np.median(steady)) if steady else float("nan")

  def update(self, n: int = 1, *, seconds: float | None = None, extra: str | None = None) -> None:
    """``n`` more units done, taking ``seconds`` (default: the time since the last update); ``extra`` is shown
    after the rate (e.g. the loss) and kept until replaced."""
    now = time.perf_counter()
    dt = (now - self._last) if seconds is None else float(seconds)
    self._last = now
    self.times.extend([dt / max(n, 1)] * max(n, 1))
    self.done += n
    if extra is not None:
      self.extra = extra
    if not self.enabled:
      return
    last = self.done >= self.total
    if self._bar:
      self._write("\r" + self.line(bar=True) + ("\n" if last else ""))
    elif last or (self.done - self.start) % self.every == 0 or self.done - self.start == 1:
      self._write(self.line() + "\n")

  def line(self, bar: bool = False) -> str:
    per = self.seconds_per_unit
    eta = per * (self.total - self.done)
    rate = f"{per:.2f} s/{self.unit}" if per >= 0.1 or not np.isfinite(per) else f"{1 / max(per, 1e-9):.1f} " \
                                                                                     f"{self.unit}s/s"
    if self.throughput and per > 0:
      rate += f"  {self.throughput[0] / per:.2f} {self.throughput[1]}/s"
    head = f"[{self.label}] "
    if bar:
      filled = int(20 * self.done / max(self.total, 1))
      head += f"[{'#' * filled:<20}] "
    text = f"{head}{self.unit} {self.done}/{self.total}  {rate}  ETA {fmt_seconds(eta)}"
    return text + (f"  {self.extra}" if self.extra else "")

  def note(self, message: str) -> None:
    """A one-line message under the bar's label (e.g. "compiling the denoising step…")."""
    if self.enabled:
      self._write(f"[{self.label}] {message}\n")

  def _write(self, text: str) -> None:
    self.stream.write(text)
    self.stream.flush()


@contextlib.contextmanager
def stage(label: str, message: str, *, enabled: bool = True, stream: TextIO | None = None,
          log: Callable[[str], None] | None = None):
  """``[label] message …`` before a long step and ``[label] message: done (X s)`` after it (on a terminal the two
  share one line). ``log`` replaces the stream (e.g. ``print``)."""
  stream = stream or sys.stderr
  inline = enabled and log is None and use_bars(stream)
  t0 = time.perf_counter()
  if enabled:
    if log is not None:
      log(f"[{label}] {message} …")
    else:
      stream.write(f"[{label}] {message} …" + ("" if inline else "\n"))
      stream.flush()
  yield
  if enabled:
    done = f"[{label}] {message}: done ({fmt_seconds(time.perf_counter() - t0)})"
    if log is not None:
      log(done)
    else:
      stream.write(("\r" if inline else "") + done + "\n")
      stream.flush()


__all__ = ("Progress", "stage", "configure", "use_bars", "fmt_seconds")
