"""FP8 (float8 e4m3) matrix products with dynamic scales, and the check that the hardware has them.

    y = fp8_dot(x, kernel)            # x [..., in] per-tensor scale, kernel [in, out] per-output-channel scales
    check_fp8_supported()             # a one-line Gen3RInputError on CPU / pre-Ada GPUs (unless emulated)

Scales are computed on the fly from the absolute maximum (``amax / 448``, e4m3's largest finite value; 1 for an
all-zero tensor or weight column, whose products are then exactly 0): one scale for the whole activation tensor,
one per output channel of the weight. Both operands are cast to
``float8_e4m3fn`` and multiplied with float32 accumulation (``preferred_element_type``); the product is rescaled
by ``scale_x * scale_w[out]`` in float32. On Hopper / Ada GPUs XLA lowers the float8 ``dot_general`` to a cuBLASLt
FP8 GEMM; the weight quantisation (one pass over the weights) runs inside every call, which costs ~1 % of a
full-size DiT step and keeps the checkpoint and the parameter tree unchanged.

Hardware: FP8 tensor cores exist on NVIDIA GPUs of compute capability >= 8.9 (Ada, Hopper, Blackwell).
Elsewhere :func:`check_fp8_supported` raises, before anything compiles, unless the emulation switch is on:
``GEN3R_FP8_EMULATE=1`` in the environment (or ``emulate=True``). XLA:CPU then runs the same program (the float8
casts are real, the GEMM is upcast to float32), so the numerics of FP8 are tested on CPU; it is not fast.

FP8 attention: ``jax.nn.dot_product_attention`` (jax 0.10 / 0.11) takes only float16 / bfloat16 (/ float32 for
``xla``); cuDNN's FP8 flash attention is reachable only through the private ``jax._src.cudnn`` module, which
this project does not use, so attention stays in the compute dtype (docs/sampling.md).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from gen3r_jax.errors import require
from gen3r_jax.nn.attention import gpu_capability

E4M3 = jnp.float8_e4m3fn
E4M3_MAX = 448.0                       # largest finite float8_e4m3fn
EMULATE_ENV = "GEN3R_FP8_EMULATE"
MIN_COMPUTE_CAPABILITY = (8, 9)        # Ada (8.9) and Hopper (9.0) have FP8 tensor cores


def quantize(x: jax.Array, axis=None) -> tuple[jax.Array, jax.Array]:
  """``(q float8_e4m3fn, scale float32)`` with ``x ~= q * scale``; ``axis``: the axes reduced for the amax
  (``None``: one scale for the whole tensor; ``0`` on a ``[in, out]`` kernel: one per output channel)."""
  x32 = x.astype(jnp.float32)
  amax = jnp.max(jnp.abs(x32), axis=axis, keepdims=axis is not None)
  # an all-zero tensor / weight column gets scale 1 (q = 0, so its products are exactly 0); a nonzero amax below
  # 448 x the smallest normal float32 gets that smallest normal: amax / 448 would be subnormal, which XLA:CPU
  # flushes to 0, and x / 0 is NaN or inf
  scale = jnp.where(amax > 0, jnp.maximum(amax / E4M3_MAX, jnp.finfo(jnp.float32).tiny), 1.0)
  # |x / scale| <= 448 up to rounding; the clip keeps the cast from overflowing (e4m3fn has no inf: NaN)
  q = jnp.clip(x32 / scale, -E4M3_MAX, E4M3_MAX).astype(E4M3)
  return q, scale


def fp8_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``x [..., in] @ kernel [in, out]`` through float8 e4m3 operands, float32 out (module docstring)."""
  xq, sx = quantize(x)                                                  # scalar scale
  wq, sw = quantize(kernel, axis=0)                                     # [1, out]
  y = jax.lax.dot_general(xq, wq, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return y * (sx * sw[0])


def emulation_enabled() -> bool:
  return os.environ.get(EMULATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def fp8_supported(device=None) -> bool:
  """True on a GPU with FP8 tensor cores (compute capability >= 8.9)."""
  cap = gpu_capability(device)
  return cap is not None and cap >= MIN_COMPUTE_CAPABILITY


def check_fp8_supported(device=None, *, emulate: bool | None = None) -> None:
  """One-line error unless the device has FP8 GEMMs or emulation is on (``emulate``, default: the environment
  variable ``GEN3R_FP8_EMULATE``)."""
  emulate = emulation_enabled() if emulate is None else emulate
  if emulate:
    return
  dev = device or jax.devices()[0]
  kind = getattr(dev, "device_kind", str(dev))
  require(fp8_supported(dev),
          f"precision=fp8 needs a GPU with FP8 tensor cores (compute capability >= 8.9: Ada, "
          f"Hopper or newer), this device is {kind} ({dev.platform}); use precision=exact, or set "
          f"{EMULATE_ENV}=1 to emulate FP8 numerics (slow, for tests).")


__all__ = ("E4M3", "E4M3_MAX", "EMULATE_ENV", "quantize", "fp8_dot", "emulation_enabled", "fp8_supported",
           "check_fp8_supported")
