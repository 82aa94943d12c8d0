"""``bench/dit.py`` runs end to end on CPU with the tiny config; the 14B memory estimate is abstract."""

import json

import numpy as np

from bench import dit
from gen3r_jax.models.wan_dit.config import WanDiTConfig


def test_bench_runs_tiny_on_cpu():
  res = dit.run(batch=1, frames=2, h=4, w=8, dtype="float32", size="tiny", iters=2,
                num_devices=1)
  json.dumps(res)  # JSON-serialisable
  assert res["tokens"] == 2 * 2 * 4 and res["iters"] == 2 and res["params"] > 0
  assert 0 < res["min_s"] <= res["median_s"] <= res["max_s"]
  assert res["compile_s"] > 0 and res["tflops_per_s"] > 0
  assert res["tflop"] * 1e12 == dit.forward_flops(WanDiTConfig.tiny(), 1, 2, 4, 8)


def test_flops_formula_scales_with_batch_and_layers():
  c = WanDiTConfig.wan_1_3b()
  f1 = dit.forward_flops(c, 1, 13, 70, 140)
  assert np.isclose(dit.forward_flops(c, 2, 13, 70, 140), 2 * f1)
  # 31850 tokens, 30 layers: dominated by self-attention (4 L^2 D per layer) and the per-token matmuls
  L, D = 13 * 35 * 70, 1536
  assert f1 > 30 * 4 * L * L * D


def test_abstract_14b_memory_is_sharded_8_ways():
  res = dit.abstract_14b_memory(fsdp=8)
  assert res["params"] == 16_898_210_624  # the manifest's count
  assert res["total_bytes"] == 2 * res["params"]
  assert res["per_device_bytes"] < res["total_bytes"] / 8 * 1.01  # everything but tiny norms is sharded
  assert res["replicated_bytes"] < 10 * 2 ** 20
