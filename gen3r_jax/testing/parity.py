"""Parity harness: run our port on a fixture's inputs and compare with the official PyTorch outputs.

    python -m gen3r_jax.testing.parity ../shared/fixtures/wan_vae_tiny [--dtype float32] [--only NAME]

Reads ``fixture.json``, dispatches on its ``name`` to a case module in ``gen3r_jax/testing/cases/``, which builds
the model from the fixture's own config, loads the weights through the converter, runs every call and yields
:class:`Check` objects. Prints one line per output; exit status 0 if all pass, 1 on any failure, 2 for an
unknown fixture name. Pytest runs the same code (``tests/test_parity.py``).

Comparison rule: ``|ours - ref| <= atol + rtol * |ref|`` elementwise (NaNs must match). Float16-stored
references use the fixture's float16 tolerance; masks allow at most ``mask_fraction`` differing elements.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from typing import Iterable, Iterator

import numpy as np

from gen3r_jax.testing.fixture import Fixture

# fixture name -> case module (each defines ``run(fx: Fixture, dtype: str) -> Iterable[Check]``)
CASES: dict[str, str] = {
    "wan_vae_tiny": "gen3r_jax.testing.cases.wan_vae",
    "geometry_adapter_tiny": "gen3r_jax.testing.cases.geometry_adapter",
    "vggt_tiny": "gen3r_jax.testing.cases.vggt",
    "decode_path_tiny": "gen3r_jax.testing.cases.decode_path",
    "wan_dit_tiny": "gen3r_jax.testing.cases.wan_dit",
    "umt5_tiny": "gen3r_jax.testing.cases.umt5",
    "clip_vision_tiny": "gen3r_jax.testing.cases.clip_vision",
    "schedulers": "gen3r_jax.testing.cases.schedulers",
    "conditioning_prep": "gen3r_jax.testing.cases.conditioning_prep",
    "denoise_loop_tiny": "gen3r_jax.testing.cases.denoise_loop",
    "pipeline_tiny": "gen3r_jax.testing.cases.pipeline",
    "training_stage1_tiny": "gen3r_jax.testing.cases.training_stage1",
    "training_stage2_tiny": "gen3r_jax.testing.cases.training_stage2",
}


@dataclasses.dataclass
class Check:
  """One output to compare. ``ref`` defaults to the fixture tensor called ``name``."""
  name: str
  ours: np.ndarray
  ref: np.ndarray | None = None
  atol: float | None = None
  rtol: float | None = None
  kind: str = "allclose"          # "allclose" | "mask" | "exact"
  mask_fraction: float = 1e-4     # for kind="mask": allowed fraction of differing elements


@dataclasses.dataclass
class Result:
  name: str
  max_abs: float
  max_rel: float
  atol: float
  rtol: float
  passed: bool
  note: str = ""

  def line(self) -> str:
    status = "PASS" if self.passed else "FAIL"
    return (f"{self.name:<40} max_abs {self.max_abs:.3e}  max_rel {self.max_rel:.3e}  "
            f"tol (atol {self.atol:.1e}, rtol {self.rtol:.1e})  {status}{'  ' + self.note if self.note else ''}")


def compare(fx: Fixture, check: Check) -> Result:
  ref = check.ref if check.ref is not None else fx.tensor(check.name)
  stored_dtype = np.asarray(ref).dtype
  ours = np.asarray(check.ours)
  if ours.shape != ref.shape:
    return Result(check.name, np.inf, np.inf, 0.0, 0.0, False,
                  f"shape mismatch: ours {ours.shape} vs reference {ref.shape}")
  if check.kind in ("mask", "exact"):
    diff = int(np.sum(ours.astype(np.float64) != ref.astype(np.float64)))
    frac = diff / max(ref.size, 1)
    allowed = check.mask_fraction if check.kind == "mask" else 0.0
    return Result(check.name, float(diff), frac, 0.0, allowed, frac <= allowed,
                  f"{diff} of {ref.size} elements differ")
  ref64 = ref.astype(np.float64)
  ours64 = ours.astype(np.float64)
  if check.atol is not None:
    atol, rtol = check.atol, (check.rtol if check.rtol is not None else 0.0)
  elif stored_dtype == np.float16 and fx.float16_tolerance() is not None:
    atol, rtol = fx.float16_tolerance()
  else:
    atol, rtol = fx.tolerance(check.name)
  nan_ok = np.array_equal(np.isnan(ref64), np.isnan(ours64))
  finite = ~np.isnan(ref64)
  err = np.abs(ours64 - ref64)[finite] if ref.size else np.zeros(0)
  bound = (atol + rtol * np.abs(ref64))[finite] if ref.size else np.zeros(0)
  max_abs = float(err.max()) if err.size else 0.0
  max_rel = float((err / np.maximum(np.abs(ref64[finite]), 1e-12)).max()) if err.size else 0.0
  passed = bool(nan_ok and np.all(err <= bound))
  note = "" if nan_ok else "NaN pattern differs"
  if stored_dtype == np.float16:
    note = (note + " (float16-stored)").strip()
  return Result(check.name, max_abs, max_rel, atol, rtol, passed, note)


class UnknownFixture(KeyError):
  pass


def iter_checks(fx: Fixture, dtype: str = "float32") -> Iterator[Check]:
  if fx.name not in CASES:
    raise UnknownFixture(f"unknown fixture name {fx.name!r}; known: {', '.join(sorted(CASES))}")
  try:
    mod = importlib.import_module(CASES[fx.name])
  except ModuleNotFoundError as e:
    if e.name == CASES[fx.name]:
      raise NotImplementedError(f"no parity case for {fx.name!r} yet ({CASES[fx.name]})") from e
    raise
  yield from mod.run(fx, dtype)


def run_fixture(path: str, dtype: str = "float32", only: Iterable[str] | None = None,
                verbose: bool = True) -> list[Result]:
  fx = Fixture.open(path)
  only = set(only or ())
  results = []
  t0 = time.time()
  for check in iter_checks(fx, dtype):
    if only and check.name not in only:
      continue
    r = compare(fx, check)
    results.append(r)
    if verbose:
      print(r.line(), flush=True)
  if verbose:
    n_pass = sum(r.passed for r in results)
    print(f"{fx.name}: {n_pass}/{len(results)} outputs pass ({time.time() - t0:.1f} s)")
  return results


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("fixture_dir")
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                  help="compute dtype (fixture tolerances are for float32)")
  ap.add_argument("--only", action="append", help="compare only this output (repeatable)")
  args = ap.parse_args(argv)
  try:
    results = run_fixture(args.fixture_dir, args.dtype, args.only)
  except UnknownFixture as e:
    print(f"error: {e.args[0]}", file=sys.stderr)
    return 2
  except NotImplementedError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if not results:
    print("error: no outputs were compared", file=sys.stderr)
    return 1
  return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
