"""Gen3R sampling (``infer.py`` defaults): images + prompt + camera trajectory -> video, depth, points, cameras.

    python launch/sample.py --config configs/sample.py --config.checkpoint=ckpt/gen3r --config.task=1view \\
        --config.images=first.png --config.prompt="A palace on Crete" --config.cameras=zoom_out \\
        --config.out=outputs/palace
    python launch/sample.py --config configs/sample.py ... --config.task=2view --config.images=a.png,b.png
    python launch/sample.py --config configs/sample.py ... --config.cameras=my_cameras.json
    python launch/sample.py --config configs/sample.py ... --config.task=allview --config.images=garden.mp4
    python launch/sample.py --config configs/sample.py ... --config.task=allview --config.images=frames/

Small GPUs (24 GiB): ``--config.placement=sequential --config.param_dtype=bfloat16`` (peak = the largest stage,
the umT5 encoder's ~11 GiB). Two GPUs (14B DiT): ``--config.mesh=fsdp=2`` (docs/sampling.md).

Faster, approximate sampling (opt-in; docs/sampling.md "Accelerators"): ``--config.cache=first_block
--config.cache_threshold=0.05``, ``--config.cache=magcache --config.cache_schedule=schedule.json`` (from
``python launch/calibrate_cache.py --checkpoint ckpt/gen3r --out schedule.json``), ``--config.cache=cfg``,
``--config.precision=fp8`` (Hopper / Ada GPUs).

The sampling options carry the field names of :class:`gen3r_jax.sampling.pipeline.SampleOptions` (``num_steps``,
``cameras``, ``guidance_scale``, ``size``, ``cache``, ...), so a config is passed on with no renaming; the old names
(``steps``, ``trajectory``, ``guidance``, ``resolution``) are refused with the new one named (``configs/renamed.py``).
``sharding`` holds the sharding rules of a ``mesh`` run (``configs/base.py``'s ``sharding()``).

``checkpoint`` is a converted bundle (``python launch/convert.py --source <Gen3R dir> --out ckpt/gen3r``).
``cameras`` is a built-in trajectory (zoom_in, zoom_out, arc_left, arc_right, translate_up, translate_down,
free) or a cameras JSON file (format in ``gen3r_jax/sampling/cameras.py``). Outputs (``gen3r_jax.sampling.export``):
rgb.mp4, depth.npz, depth.mp4, points.npz, points.ply, cameras.json, preview.png, prompt.txt, latents.npz,
vggt_predictions.npz (depth_conf)
(docs/sampling.md). ``images`` for ``allview`` may also be one video file or one folder of .png/.jpg frames (sorted
by name); the first ``num_frames`` frames are used, as in ``infer.py``. ``prompt`` may be the path of a text file
(its first line is the prompt, as ``infer.py --prompts``). ``export_formats`` (e.g. ``colmap,splat``) also writes
those exports into ``out/<format>`` (``launch/export.py`` does the same for an existing output directory).
"""

from ml_collections import ConfigDict, config_dict

from configs import base


def get_config() -> ConfigDict:
  c = ConfigDict()
  # the tool's own settings
  c.checkpoint = ""              # converted bundle directory, or hf:<repo id>[@revision] (converted once, cached)
  c.task = "1view"               # 1view (first frame) | 2view (first + last) | allview (every frame)
  c.images = ""                  # comma-separated image paths (1, 2 or num_frames); allview: or a video / a folder
  c.prompt = ""                  # the prompt, or the path of a text file whose first line is the prompt
  c.out = ""                     # output directory (created and probed for writing before any compute)
  c.overwrite = True             # replace a previous run's outputs in `out` (with a warning); False: refuse
  # SampleOptions (gen3r_jax.sampling.pipeline), same names
  c.negative_prompt = "bad detailed"
  c.cameras = "zoom_out"         # built-in trajectory name or cameras JSON path
  c.seed = 0
  c.num_frames = 49              # 1 + 4k
  c.num_steps = 50
  c.guidance_scale = 5.0         # classifier-free guidance scale (<= 1: off)
  c.shift = 5.0
  c.scheduler = ""               # "" = the checkpoint's scheduler_config.json (UniPC); unipc | dpmpp | euler
  c.posterior = "sample"         # VAE posterior of the control video: sample (official) | mode
  c.size = 560                   # Gen3R works on 560x560 frames only (inputs are resized + centre-cropped)
  c.min_max_depth_mask = True
  c.max_sequence_length = 512    # umT5 tokens (longer prompts are cut, with a warning)
  # models, devices, outputs
  c.dtype = "bfloat16"           # compute dtype of every model (infer.py casts the pipeline to bfloat16)
  c.param_dtype = ""             # "" = as converted (float32); bfloat16 halves the weights (as infer.py's cast)
  c.placement = "resident"       # resident | sequential (weights in host memory, one model on the device at a time)
  c.mesh = ""                    # e.g. "fsdp=2" or "fsdp=2,context=2": shard every model over these devices;
  #                                "cfg=2[,context=4]": the two guidance branches on two device groups (guidance > 1)
  c.context_parallel = "allgather"  # self-attention over a 'context' mesh axis: allgather | ring | ulysses |
  #                                   ulysses_ring | ulysses_allgather (nn/context_parallel.py)
  c.sharding = base.sharding()   # sharding rules of a mesh run (gen3r_jax.parallel.rules)
  c.fps = 16
  c.max_points = 0               # > 0: subsample points.ply to at most this many points
  c.export_formats = ""          # also export: comma-separated colmap, nerfstudio, splat (into out/<format>)
  c.release = True               # drop each model once no later stage needs it
  c.progress = True              # progress bars on a terminal; False: plain lines (always plain off a terminal)
  c.matmul_precision = "default"
  # SampleOptions' opt-in accelerators, approximate (docs/sampling.md "Accelerators"); the defaults are the exact
  # path; an unset placeholder (None) keeps SampleOptions' default
  c.cache = "none"               # none | first_block | magcache | cfg
  c.cache_threshold = config_dict.placeholder(float)   # first_block / magcache; unset: 0.05 / 0.12; 0 never caches
  c.cache_schedule = ""          # magcache: schedule JSON from launch/calibrate_cache.py (your checkpoint, steps)
  c.cache_steps = ""             # forced plan: these step indices are served from the cache, e.g. "20,22,24"
  c.cache_max_skips = config_dict.placeholder(int)     # most cached steps in a row; unset: 3 / 2 / 4
  c.cache_warmup = config_dict.placeholder(int)        # steps always computed first; unset: 1 / 20 % / a third
  c.precision = "exact"          # exact | fp8 (float8 e4m3 GEMMs in the DiT blocks; FP8 GPUs: Ada, Hopper)
  c.demo = ConfigDict(dict(enabled=False, cache_dir="", seed=0))
  return c
