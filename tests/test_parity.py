"""Every registered parity case, run through the same code as ``python -m gen3r_jax.testing.parity``."""

import importlib.util

import pytest

from gen3r_jax.testing import parity
from tests.conftest import fixture_path

REGISTERED = sorted(n for n, mod in parity.CASES.items() if importlib.util.find_spec(mod) is not None)


@pytest.mark.parametrize("name", REGISTERED)
def test_parity(name):
  results = parity.run_fixture(fixture_path(name), verbose=True)
  assert results, f"{name}: no outputs compared"
  failed = [r.line() for r in results if not r.passed]
  assert not failed, "\n".join(failed)


def test_unknown_fixture_exit_code(tmp_path):
  (tmp_path / "fixture.json").write_text('{"name": "no_such_fixture", "calls": []}')
  assert parity.main([str(tmp_path)]) == 2
