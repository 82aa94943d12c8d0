"""The package's floors (CONTRIBUTING.md, "Layers"): import-linter contracts in pyproject.toml checked by
``lint-imports``, and no function-local import except of heavy optional packages, each with a comment."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gen3r_jax")
# packages a module may import inside a function, with a comment on the line: heavy optional ones (torch,
# TensorFlow/TFDS, clu, the optional GPU kernels, test references) and the training-data stack that the GPU image
# lacks (grain, ml_collections: tests/test_bench.py keeps them out of everything a benchmark imports)
HEAVY = {"torch", "tensorflow", "tensorflow_datasets", "clu", "flash_attn3_jax", "tokamax", "skimage",
         "torchmetrics", "lpips", "viser", "gradio", "array_record", "tensorboardX", "imageio_ffmpeg", "psutil",
         "grain", "ml_collections", "huggingface_hub"}


def test_lint_imports_contracts_hold():
  exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
  cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "importlinter.cli"]
  p = subprocess.run(cmd + ["--config", os.path.join(ROOT, "pyproject.toml")], cwd=ROOT, capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
  assert "broken" not in p.stdout.lower() or "0 broken" in p.stdout.lower(), p.stdout


def _function_local_imports():
  for dirpath, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(dirpath, name)
      src = open(path).read()
      lines = src.splitlines()
      for fn in ast.walk(ast.parse(src)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
          for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
              yield os.path.relpath(path, ROOT), node, "\n".join(lines[node.lineno - 1:node.end_lineno])


def test_function_local_imports_are_only_heavy_optional_packages_with_a_comment():
  bad = []
  for path, node, line in _function_local_imports():
    if isinstance(node, ast.ImportFrom):
      top = "." if node.level else (node.module or "").split(".")[0]
    else:
      top = node.names[0].name.split(".")[0]
    if top not in HEAVY or "#" not in line:
      bad.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
  assert not bad, "function-local imports (hoist them, or add the package to HEAVY with a comment):\n" + "\n".join(bad)
