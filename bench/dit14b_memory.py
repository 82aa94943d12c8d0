"""Per-device parameter memory of the 14B DiT on an 8-way fsdp mesh, abstractly (no device memory used).

    python -m bench.run --what dit14b_memory [--kw fsdp=8]
"""

from bench.dit import abstract_14b_memory


def run(fsdp: int = 8, dtype: str = "bfloat16", size: str | None = None) -> dict:
  del size
  res = abstract_14b_memory(fsdp=fsdp, param_dtype=dtype)
  return {**res, "name": f"wan_dit_14b params/device (fsdp={fsdp}, {dtype})", "peak_gib": res["per_device_gib"]}
