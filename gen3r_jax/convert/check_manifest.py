"""Check that a full-size model and its mapping table cover a checkpoint manifest exactly.

    python -m gen3r_jax.convert.check_manifest ../shared/manifests/wan_vae.json [--report out.json]

Builds the full-size model abstractly (no weights are allocated), maps every manifest key through the table,
compares shapes and parameter counts, prints a summary and exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gen3r_jax.convert.core import ConversionError, convert, param_targets
from gen3r_jax.convert.registry import get_spec
from gen3r_jax.convert.sources import ShapeSource


def check(manifest_path: str, report_path: str | None = None) -> tuple[bool, str]:
  with open(manifest_path) as f:
    manifest = json.load(f)
  name = manifest["name"]
  spec = get_spec(name)
  abstract = spec.abstract()
  targets = param_targets(abstract)
  source = ShapeSource(manifest["keys"], description=manifest_path)
  lines = [f"manifest {manifest_path}: {name}, {len(source)} keys, {manifest.get('num_params', 0):,} params"]
  try:
    _, report = convert(spec.table(spec.config), source, targets, strict=True, shapes_only=True)
    ok = True
  except ConversionError as e:
    report, ok = e.report, False
    lines.append(str(e))
  if report_path:
    report.write(report_path)
  # parameter counts: manifest (mapped keys only) vs the model
  mapped = [k for k, v in report.keys.items() if v["fate"] == "mapped"]
  n_manifest_mapped = sum(int(np.prod(source.shape(k))) for k in mapped)
  n_manifest = int(manifest.get("num_params", sum(int(np.prod(source.shape(k))) for k in source.keys())))
  n_ignored = sum(int(np.prod(source.shape(k))) for k, v in report.keys.items() if v["fate"] == "ignored")
  n_model = sum(int(np.prod(t.shape)) for t in targets.values())
  lines.append(report.summary())
  lines.append(f"parameters: model {n_model:,}; manifest {n_manifest:,} = mapped {n_manifest_mapped:,} + "
               f"ignored {n_ignored:,}")
  if n_model != n_manifest_mapped:
    ok = False
    lines.append(f"MISMATCH: the model has {n_model:,} parameters but the mapped manifest keys hold "
                 f"{n_manifest_mapped:,}")
  if n_manifest_mapped + n_ignored != n_manifest:
    ok = False
    lines.append(f"MISMATCH: mapped + ignored = {n_manifest_mapped + n_ignored:,} != manifest num_params "
                 f"{n_manifest:,}")
  lines.append("OK" if ok else "FAILED")
  return ok, "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("manifest", nargs="+", help="manifest JSON file(s) from shared/manifests")
  ap.add_argument("--report", help="write the conversion report JSON here (single manifest only)")
  args = ap.parse_args(argv)
  all_ok = True
  for m in args.manifest:
    ok, text = check(m, args.report if len(args.manifest) == 1 else None)
    print(text)
    all_ok &= ok
  return 0 if all_ok else 1


if __name__ == "__main__":
  sys.exit(main())
