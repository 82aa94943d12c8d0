"""Test setup: 8 fake CPU devices for sharding tests, float32 matmuls at full precision, fixtures root."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from gen3r_jax.testing.fixture import fixtures_root  # noqa: E402


@pytest.fixture(scope="session")
def fixtures_dir() -> str:
  root = fixtures_root()
  assert os.path.isdir(root), (
      f"fixtures not found at {root}: set GEN3R_FIXTURES to shared/fixtures (tests never skip on this)")
  return root


def fixture_path(name: str) -> str:
  """Path of one fixture directory; a missing fixture is a failure, not a skip."""
  path = os.path.join(fixtures_root(), name)
  assert os.path.isfile(os.path.join(path, "fixture.json")), f"missing parity fixture {path}"
  return path
