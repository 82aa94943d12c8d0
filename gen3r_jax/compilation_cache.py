"""The persistent XLA compilation cache (bottom layer: the package root and the CLI helpers both turn it on).

Compiled programs are written to ``$GEN3R_JAX_CACHE`` (default ``~/.cache/gen3r_jax/xla``) and read back by the
next process, so a second ``launch/sample.py`` run skips XLA compilation (and GPU autotuning).
``GEN3R_JAX_CACHE=off`` disables it; a cache directory already configured through JAX
(``JAX_COMPILATION_CACHE_DIR`` / ``jax_compilation_cache_dir``) is kept.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
from jax.experimental.compilation_cache import compilation_cache as cc

CACHE_ENV = "GEN3R_JAX_CACHE"
OFF = ("off", "0", "false", "no", "none", "")
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "gen3r_jax", "xla")


def default_cache_dir() -> str | None:
  """``$GEN3R_JAX_CACHE`` or ``~/.cache/gen3r_jax/xla``; ``None`` when the variable says off."""
  value = os.environ.get(CACHE_ENV)
  if value is not None and value.strip().lower() in OFF:
    return None
  return os.path.abspath(os.path.expanduser(value or DEFAULT_CACHE_DIR))


def enable_compilation_cache(path: str | None = None, *, min_compile_time_secs: float = 0.0,
                             log: Callable[[str], None] | None = None) -> str | None:
  """Turn on JAX's persistent compilation cache; returns its directory (``None`` when disabled).

  Args:
    path: the cache directory (default :func:`default_cache_dir`: ``$GEN3R_JAX_CACHE`` or
      ``~/.cache/gen3r_jax/xla``; ``GEN3R_JAX_CACHE=off`` disables the cache and this returns ``None``). A
      directory already set through JAX's own config wins over the default (not over an explicit ``path``).
    min_compile_time_secs: programs that compile faster than this are not written (0: every program, so the
      sampler's many small stage programs are cached too; each entry is one small file).
    log: called with one line naming the directory.

  Safe to call more than once and after programs were already compiled (programs compiled later are cached).
  XLA's GPU autotuning results are cached alongside (JAX's ``jax_persistent_cache_enable_xla_caches`` default).
  """
  if path is None:
    configured = jax.config.jax_compilation_cache_dir
    if os.environ.get(CACHE_ENV) is None and configured:
      path = configured
    else:
      path = default_cache_dir()
    if path is None:
      return None
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  changed = jax.config.jax_compilation_cache_dir != path
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor (tiny programs too)
  if changed:
    cc.reset_cache()    # the cache state is latched at the first compile; re-read the new directory
  if log is not None:
    log(f"[gen3r_jax] XLA compilation cache: {path} (disable with {CACHE_ENV}=off)")
  return path
