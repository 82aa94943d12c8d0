"""Every registered parity case, run through the same code as ``python -m gen3r_jax.testing.parity``."""

import importlib
import importlib.util
import warnings

import jax
import pytest

from gen3r_jax.testing import parity
from tests.conftest import fixture_path

_JAX = tuple(int(p) for p in jax.__version__.split(".")[:2])

# Cases that take minutes on the 2-core CI box run with `pytest -m slow` (never skipped silently: listed here).
SLOW = {
    # 2 training steps' worth of VGGT + VAE + adapter forward and backward at 560x560.
    "training_stage1_tiny": "stage-1 loss + gradients through VGGT heads at 560x560 (~5 min on 2 cores)",
    # clean + control encodes (VGGT global attention over 5 x 1605 tokens, Wan VAE) at 560x560, DiT backward
    "training_stage2_tiny": "stage-2 loss + DiT gradients, 2 calls (~2 min on 2 cores, ~110 s of CPU time)",
}
# Known, documented differences (issue notes): (condition, the outputs allowed to miss, why). Under the condition
# only those outputs may fail; every other output of the fixture must still pass.
KNOWN = {
    "training_stage1_tiny": (
        _JAX < (0, 11),
        {"grad_norm", "grad.model.conv1.bias", "grad.model.decoder.head.2.bias"},
        "3 gradient outputs (grad_norm, grad conv1.bias, grad decoder.head.2.bias) differ by ~1% on jax < 0.11 "
        "(all 39 outputs pass with jax 0.11.2 on CPU); every loss term and intermediate passes. Not a semantic "
        "difference: the same code in float64 matches the stored float32 gradients (grad_norm 9.5e-5 relative). "
        "The float32 rounding of the reconstructed tokens (~2e-5, as large as the official float32 run's) flips "
        "two ReLU kinks in the frozen point head's deepest RefineNet units (pre-activations -4e-6 and -6e-5 in "
        "float64), which moves the token gradient by 1.9% and grad_norm by 1%; which side a near-zero unit "
        "lands on depends on the XLA version's float32 rounding (issue 7)"),
}


def _param(name):
  marks = []
  if name in SLOW:
    marks.append(pytest.mark.slow)
  return pytest.param(name, marks=marks, id=name)


REGISTERED = sorted(n for n, mod in parity.CASES.items() if importlib.util.find_spec(mod) is not None)


@pytest.mark.parametrize("name", [_param(n) for n in REGISTERED])
def test_parity(name):
  results = parity.run_fixture(fixture_path(name), verbose=True)
  assert results, f"{name}: no outputs compared"
  cond, allowed, reason = KNOWN.get(name, (False, set(), ""))
  if cond:
    assert allowed <= {r.name for r in results}, (name, allowed)
    missed = [r.line() for r in results if not r.passed and r.name in allowed]
    if missed:
      warnings.warn(f"{name}: known differences ({reason}):\n" + "\n".join(missed))
  failed = [r.line() for r in results if not r.passed and not (cond and r.name in allowed)]
  assert not failed, "\n".join(failed)


def test_every_fixture_has_a_case(fixtures_dir):
  """All shared fixtures are registered and their case modules exist (a missing port fails here)."""
  import json
  import os
  names = []
  for d in sorted(os.listdir(fixtures_dir)):
    fj = os.path.join(fixtures_dir, d, "fixture.json")
    if os.path.isfile(fj):
      names.append(json.load(open(fj))["name"])
  missing = [n for n in names if n not in REGISTERED]
  assert not missing, f"fixtures without a parity case: {missing}"


def test_unknown_fixture_exit_code(tmp_path):
  (tmp_path / "fixture.json").write_text('{"name": "no_such_fixture", "calls": []}')
  assert parity.main([str(tmp_path)]) == 2
