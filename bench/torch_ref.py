"""The official PyTorch modules timed at the shapes of our benchmarks (``bench.run --torch`` runs this in its own
process, before any JAX benchmark touches the GPU, and prints our time as a ratio to theirs).

    python -m bench.torch_ref --what dit,vggt,vae,adapter --out torch.json           # full size, bf16, cuda
    python -m bench.torch_ref --what dit,vggt,vae,adapter --size tiny --device cpu --dtype float32   # smoke

Rows (``ref_key`` pairs them with ours): ``dit_forward`` (WanTransformer3DModel, i2v + camera adapter, batch 2,
``[2, 16, 13, 70, 140]``, seq_len 31850), ``vggt_forward`` (VGGT-1B on ``[1, 49, 3, 560, 560]``: aggregator +
camera, depth and point heads), ``vae_encode`` / ``vae_decode`` (AutoencoderKLWan, 49 <-> 13 frames at
560x560), ``adapter_decode`` (GeometryAdapter ``[1, 16, 13, 70, 70] -> [1, 10240, 49, 40, 40]``). Release
configs: ``gen3r.yaml`` + the DiT's ``config.json`` (manifest), ``VGGT()`` defaults, ``AutoencoderKLWan()``,
the adapter's release ``config.json``. Random weights (the modules' own init), cast to ``dtype``; inference under
``torch.no_grad()``; the DiT under ``torch.autocast(dtype)`` as ``Gen3RPipeline`` calls it. Attention: the
official fallback ``F.scaled_dot_product_attention`` (``VIDEOX_ATTENTION_TYPE=TORCH_SDPA``; no flash-attn /
sage package is used), backends in the priority ``sdpa`` names (default cuDNN, then flash, efficient, math).
Timing: CUDA events around each call after ``warmup`` calls, ``repeats`` (>= 5) calls, median / min / max;
``peak_gib`` = ``torch.cuda.max_memory_allocated`` since the module was built (weights included).

The official code is imported from ``bench/_torch_ref/gen3r`` (ignored folder, ``bench/fetch_torch_ref.sh``), and
diffusers 0.33.1 (+ huggingface_hub where the machine has none) from the pure-python wheels in
``bench/_torch_ref/wheels``, unpacked into ``$GEN3R_TORCH_REF_SITE`` (default ``/tmp/gen3r_torch_ref_site``) and
APPENDED to ``sys.path`` so the machine's own packages win. Narrow import patches, all in :func:`setup_imports`:

* ``gen3r/models/__init__.py`` imports ``transformers`` (T5 tokenizer classes) and every model: the package
  ``gen3r.models`` is registered as a bare namespace (its ``__path__`` only), so each model module is imported
  on its own and ``transformers`` never is;
* diffusers' ``single_file_utils`` imports ``transformers.AutoImageProcessor`` when transformers is installed
  (unused here; transformers 5.x on the GPU image): ``diffusers.utils.import_utils._transformers_available`` is
  set to False before the model modules load; ``USE_FLAX=0`` keeps diffusers off JAX;
* ``VIDEOX_ATTENTION_TYPE=TORCH_SDPA`` (the official code's own switch).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import os
import statistics
import sys
import time
import types
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REF_DIR = os.path.join(HERE, "_torch_ref")
DEFAULT_SITE = "/tmp/gen3r_torch_ref_site"
WHAT = ("dit", "vggt", "vae", "adapter")

# the DiT's release config.json (shared/manifests/wan_dit_1_3b_control_camera.json)
DIT_1_3B = dict(model_type="i2v", patch_size=(1, 2, 2), text_len=512, in_dim=36, dim=1536, ffn_dim=8960, freq_dim=256,
                text_dim=4096, out_dim=16, num_heads=12, num_layers=30, window_size=(-1, -1), qk_norm=True,
                cross_attn_norm=True, eps=1e-6, add_control_adapter=True, in_dim_control_adapter=24)
DIT_TINY = dict(DIT_1_3B, text_len=12, dim=32, ffn_dim=64, freq_dim=32, text_dim=24, num_heads=2, num_layers=2)
ADAPTER = dict(latent_channels=16, hidden_dim=128, input_dim=10240, output_dim=10240, resample_scale=10)
ADAPTER_TINY = dict(ADAPTER, hidden_dim=8, input_dim=320, output_dim=320)
# shapes per size: full = the Gen3R workload; tiny = CPU smoke
SHAPES = {
    "full": dict(dit=dict(batch=2, frames=13, h=70, w=140), vggt=dict(frames=49, image=560),
                 vae=dict(frames=49, image=560), adapter=dict(latent_frames=13)),
    "tiny": dict(dit=dict(batch=1, frames=2, h=4, w=8), vggt=dict(frames=2, image=28),
                 vae=dict(frames=5, image=16), adapter=dict(latent_frames=1)),
}


# ---------------------------------------------------------------------------------------------------------------
# imports
# ---------------------------------------------------------------------------------------------------------------

def ensure_site(ref_dir: str = REF_DIR, site: str | None = None) -> str:
  """Unpack the carried wheels into ``site`` once (a wheel is a zip; pure-python ones need no installer)."""
  site = site or os.environ.get("GEN3R_TORCH_REF_SITE") or DEFAULT_SITE
  wheels = sorted(glob.glob(os.path.join(ref_dir, "wheels", "*.whl")))
  marker = os.path.join(site, ".gen3r_unpacked")
  names = "\n".join(os.path.basename(w) for w in wheels)
  installed = os.path.isdir(os.path.join(site, "diffusers"))          # e.g. pip install --target (gpu_all.sh)
  if wheels and not installed and not (os.path.exists(marker) and open(marker).read() == names):
    os.makedirs(site, exist_ok=True)
    for w in wheels:
      with zipfile.ZipFile(w) as z:
        z.extractall(site)
    with open(marker, "w") as f:
      f.write(names)
  return site


def setup_imports(ref_dir: str = REF_DIR, site: str | None = None) -> dict:
  """Make ``gen3r.models.*`` importable without ``transformers`` (module docstring); returns versions."""
  if not os.path.isdir(os.path.join(ref_dir, "gen3r", "models")):
    raise FileNotFoundError(f"{ref_dir}/gen3r not found: run `bash bench/fetch_torch_ref.sh` first (it copies the "
                            "official code and the diffusers wheel there)")
  os.environ.setdefault("VIDEOX_ATTENTION_TYPE", "TORCH_SDPA")
  os.environ.setdefault("USE_FLAX", "0")
  os.environ.setdefault("USE_TF", "0")
  site = ensure_site(ref_dir, site)
  if site not in sys.path:
    sys.path.append(site)                                   # the machine's own packages come first
  if ref_dir not in sys.path:
    sys.path.insert(0, ref_dir)
  import diffusers
  import diffusers.utils.import_utils as iu
  iu._transformers_available = False                      # noqa: SLF001 - see module docstring
  if "gen3r.models" not in sys.modules:
    pkg = types.ModuleType("gen3r.models")
    pkg.__path__ = [os.path.join(ref_dir, "gen3r", "models")]
    sys.modules["gen3r.models"] = pkg
  import torch
  return {"torch": torch.__version__, "diffusers": diffusers.__version__,
          "diffusers_from": os.path.dirname(os.path.dirname(diffusers.__file__)),
          "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}


# ---------------------------------------------------------------------------------------------------------------
# builders (official classes, release configs)
# ---------------------------------------------------------------------------------------------------------------

def build_dit(size: str):
  from gen3r.models.videoxfun_wan.wan_transformer3d import WanTransformer3DModel
  return WanTransformer3DModel(**(DIT_1_3B if size == "full" else DIT_TINY))


def build_vggt(size: str):
  from gen3r.models.vggt.models.vggt import VGGT
  if size == "full":
    return VGGT()
  import torch.nn as nn

  from gen3r.models.vggt.heads.camera_head import CameraHead
  from gen3r.models.vggt.heads.dpt_head import DPTHead
  from gen3r.models.vggt.models.aggregator import Aggregator
  m = VGGT.__new__(VGGT)                                   # VGGT() hard-wires the 1B sizes: same forward, small parts
  nn.Module.__init__(m)
  m.aggregator = Aggregator(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, patch_embed="conv")
  m.camera_head = CameraHead(dim_in=64, trunk_depth=1, num_heads=2)
  dpt = dict(dim_in=64, features=16, out_channels=[8, 16, 32, 32], intermediate_layer_idx=[0, 1, 1, 1])
  m.point_head = DPTHead(output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
  m.depth_head = DPTHead(output_dim=2, activation="exp", conf_activation="expp1", **dpt)
  m.aggregated_tokens_list = None
  m.aggregator.intermediate_layer_idx = m.depth_head.intermediate_layer_idx
  return m


def build_vae(size: str):
  from gen3r.models.videoxfun_wan.wan_vae import AutoencoderKLWan
  return AutoencoderKLWan()                                # the class hard-wires Wan2.1's widths (tiny: small shapes)


def build_adapter(size: str):
  from gen3r.models.geometry_adapter.geometry_adapter import GeometryAdapter
  return GeometryAdapter(**(ADAPTER if size == "full" else ADAPTER_TINY))


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------

def _sdpa_context(sdpa: str):
  import torch
  if sdpa == "auto" or not hasattr(torch.nn, "attention"):
    return contextlib.nullcontext()
  from torch.nn.attention import SDPBackend, sdpa_kernel
  names = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
           "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
  first = [names[s] for s in sdpa.split("+")]
  order = first + [b for b in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                               SDPBackend.MATH) if b not in first]
  try:
    return sdpa_kernel(order, set_priority=True)
  except TypeError:                                        # torch without set_priority: restrict instead
    return sdpa_kernel(order)


def time_torch(fn, device: str, *, warmup: int = 1, repeats: int = 5) -> dict:
  """``first_call_s``, median/min/max/spread of ``repeats`` calls (CUDA events on GPU), ``peak_gib``."""
  import torch
  cuda = device.startswith("cuda")
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  sync()
  t0 = time.perf_counter()
  fn()
  sync()
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    fn()
  sync()
  times = []
  for _ in range(max(repeats, 1)):
    if cuda:
      start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
      start.record()
      fn()
      end.record()
      end.synchronize()
      times.append(start.elapsed_time(end) / 1e3)
    else:
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
  med = statistics.median(times)
  return {"first_call_s": first, "warmup": max(warmup, 1), "median_s": med, "min_s": min(times),
          "max_s": max(times), "spread": (max(times) - min(times)) / med if med else 0.0, "repeats": len(times),
          "times_s": times, "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None}


def _cases(what: str, size: str, device: str, dtype):
  """``[(ref_key, bench, builder, make_inputs(model) -> call, shapes)]`` for one ``what``."""
  import torch
  sh = SHAPES[size]
  g = torch.Generator(device=device).manual_seed(0)
  rand = lambda *s: torch.randn(*s, generator=g, device=device, dtype=dtype)  # noqa: E731
  unit = lambda *s: torch.rand(*s, generator=g, device=device, dtype=dtype)   # noqa: E731
  if what == "dit":
    d = sh["dit"]
    cfg = DIT_1_3B if size == "full" else DIT_TINY
    b, f, h, w = d["batch"], d["frames"], d["h"], d["w"]
    seq_len = f * (h // 2) * (w // 2)

    def make(model):
      x, y = rand(b, 16, f, h, w), rand(b, 20, f, h, w)
      ctx, clip = rand(b, cfg["text_len"], cfg["text_dim"]), rand(b, 257, 1280)
      cam = rand(b, 24, f, 8 * h, 8 * w)
      t = torch.full((b,), 500.0, device=device)

      def call():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
          return model(x=x, t=t, context=ctx, seq_len=seq_len, clip_fea=clip, y=y, y_camera=cam)
      return call
    return [("dit_forward", "torch_wan_dit_forward", build_dit, make,
             {"x": [b, 16, f, h, w], "y": [b, 20, f, h, w], "context": [b, cfg["text_len"], cfg["text_dim"]],
              "clip_fea": [b, 257, 1280], "y_camera": [b, 24, f, 8 * h, 8 * w], "seq_len": seq_len})]
  if what == "vggt":
    d = sh["vggt"]
    s, im = d["frames"], d["image"]

    def make(model):
      images = unit(1, s, 3, im, im)
      return lambda: model(images)
    return [("vggt_forward", "torch_vggt_forward", build_vggt, make, {"images": [1, s, 3, im, im]})]
  if what == "vae":
    d = sh["vae"]
    s, im = d["frames"], d["image"]
    t = 1 + (s - 1) // 4

    def make_enc(model):
      video = unit(1, 3, s, im, im) * 2 - 1
      return lambda: model.encode(video).latent_dist.mean
    def make_dec(model):
      z = rand(1, 16, t, im // 8, im // 8)
      return lambda: model.decode(z).sample
    return [("vae_encode", "torch_wan_vae_encode", build_vae, make_enc, {"video": [1, 3, s, im, im]}),
            ("vae_decode", "torch_wan_vae_decode", build_vae, make_dec, {"z": [1, 16, t, im // 8, im // 8]})]
  if what == "adapter":
    t = sh["adapter"]["latent_frames"]

    def make(model):
      z = rand(1, 16, t, 70, 70)
      return lambda: model.decode(z).sample
    return [("adapter_decode", "torch_geometry_adapter_decode", build_adapter, make, {"z": [1, 16, t, 70, 70]})]
  raise ValueError(f"unknown torch reference {what!r}; choose from {WHAT}")


def run(what=WHAT, *, size: str = "full", device: str | None = None, dtype: str | None = None,
        warmup: int = 1, repeats: int = 5, sdpa: str = "cudnn", ref_dir: str = REF_DIR,
        log=print) -> list[dict]:
  """Build each official module, time it, free it; one row per case (errors become rows with ``error``)."""
  versions = setup_imports(ref_dir)
  import torch
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
  tdtype = getattr(torch, dtype)
  name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
  whats = [what] if isinstance(what, str) else list(what)
  rows = []
  cache: dict[str, object] = {}
  for w in whats:
    for key, bench, build, make, shapes in _cases(w, size, device, tdtype):
      base = {"bench": bench, "ref_key": key, "framework": "torch", "device": f"{device}:{name}",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "dtype": dtype, "size": size, "shapes": shapes, "sdpa": sdpa, **versions}
      try:
        t0 = time.perf_counter()
        model = cache.get(build.__name__)
        if model is None:
          cache.clear()
          if device.startswith("cuda"):
            torch.cuda.empty_cache()
          with torch.device(device):
            model = build(size)
          model = model.to(device=device, dtype=tdtype).eval()
          cache[build.__name__] = model
        init_s = time.perf_counter() - t0
        if device.startswith("cuda"):
          torch.cuda.reset_peak_memory_stats()
        call = make(model)
        with torch.no_grad(), _sdpa_context(sdpa if device.startswith("cuda") else "auto"):
          t = time_torch(call, device, warmup=warmup, repeats=repeats)
        n = sum(p.numel() for p in model.parameters())
        rows.append({**base, "params": n, "init_s": init_s, **t})
        log(f"[torch_ref] {bench}: median {t['median_s']:.4g} s")
      except Exception as e:  # noqa: BLE001 - one failing reference must not hide the others
        rows.append({**base, "error": f"{type(e).__name__}: {e}"})
        log(f"[torch_ref] {bench}: FAILED {type(e).__name__}: {e}")
  cache.clear()
  return rows


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--what", default=",".join(WHAT))
  ap.add_argument("--out", required=True)
  ap.add_argument("--size", default="full", choices=tuple(SHAPES))
  ap.add_argument("--device", default=None)
  ap.add_argument("--dtype", default=None)
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--sdpa", default="cudnn", help="backend priority, e.g. cudnn, flash, cudnn+flash, auto")
  ap.add_argument("--ref-dir", default=REF_DIR)
  args = ap.parse_args(argv)
  whats = [w.strip() for w in args.what.split(",") if w.strip()]
  rows = run(whats, size=args.size, device=args.device, dtype=args.dtype, warmup=args.warmup, repeats=args.repeats,
             sdpa=args.sdpa, ref_dir=args.ref_dir)
  with open(args.out, "w") as f:
    json.dump(rows, f, indent=1)
  return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
