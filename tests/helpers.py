"""Helpers shared by the test modules (not fixtures: plain functions)."""

from __future__ import annotations


def set_nested(config, **overrides):
  """``set_nested(c, optimizer__eps=1e-4)`` sets ``c.optimizer.eps``; ``__`` separates the path. Returns ``c``."""
  for key, value in overrides.items():
    *parents, leaf = key.split("__")
    target = config
    for part in parents:
      target = target[part]
    target[leaf] = value
  return config
