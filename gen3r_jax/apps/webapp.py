"""The web app (``launch/app.py``): Gen3R sampling in the browser with gradio.

    app = WebApp(base_config, out_root="outputs/app")     # base_config: configs/sample.py or configs/demo_tiny.py
    demo = build_ui(app)                                   # a gradio Blocks
    demo.launch(server_name="127.0.0.1", server_port=7860)

The page takes control image(s) (empty on the demo: the built-in example image), the task, the prompt, the
trajectory (a built-in one or an uploaded cameras JSON), the number of frames, steps, guidance and seed (plus
negative prompt, shift and scheduler under *advanced*), and shows a progress bar per stage and per denoising step.
Each Generate writes a new run folder under ``out_root`` (``run-<date>-<time>-<n>/``, the sampler's output
directory, the uploaded inputs in its ``inputs/``) and shows the RGB and depth videos, the point cloud in 3D
(``points.glb``: a subset of ``points.ply`` as a glTF point cloud, which gradio's ``Model3D`` shows), the preview
sheet, and every file of the folder for download.

All sampling goes through :func:`gen3r_jax.apps.sample.sample_from_config` (the same checks, generation and
export as ``launch/sample.py``); the bundle is loaded once, on the first Generate, and kept. Bad input (a wrong
image count for the task, a malformed cameras JSON, ...) is the sampler's one-line error, shown in the page. gradio
is the optional extra ``[app]`` (``pip install -e ".[app]"``); without it :func:`require_gradio` is a one-line
error.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import shutil
import threading
import time
from typing import Callable

import numpy as np

from gen3r_jax.apps.glb import write_point_cloud_glb
from gen3r_jax.apps.sample import check_config, load_for_config, resolve_demo, sample_from_config
from gen3r_jax.apps.bundle import resolve_checkpoint as resolve_bundle
from gen3r_jax.apps.outputs import load_output_dir
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.progress import fmt_seconds
from gen3r_jax.sampling.cameras import BUILTIN_TRAJECTORIES
from gen3r_jax.sampling.export import select_points
from gen3r_jax.sampling.placement import STAGE_MESSAGES

TASKS = ("1view", "2view", "allview")
FRAME_CHOICES = tuple(1 + 4 * k for k in range(13))          # 1 + 4k, up to the official 49
GLB_POINTS = 300_000                                         # what a browser's WebGL shows smoothly
GLB_FILE = "points.glb"
# the pipeline's stages in order, with their share of the progress bar: the sampler logs "[sample] <stage>: <what>
# …" as a stage starts and "[sample] <stage>: done in ..." as it ends; "load" (first Generate only) ends with
# "[sample] loaded ...", "export" with "[sample] wrote ..."
STAGES = (("load", 0.05), ("text", 0.04), ("clip", 0.03), ("cameras", 0.06), ("vae_encode", 0.06),
          ("denoise", 0.55), ("vae_decode", 0.08), ("geometry_decode", 0.08), ("export", 0.05))
STAGE_LABELS = dict(STAGE_MESSAGES, load="loading the models", export="writing the outputs")
_STAGE_LINE = re.compile(r"^\[sample\] (\w+): (done in )?")


def require_gradio():
  """The gradio module, or a one-line :class:`Gen3RInputError` saying how to install it."""
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # no usage reports (and no network wait)
  try:
    import gradio  # heavy optional package (extra [app]): imported on first use
  except ImportError:
    raise Gen3RInputError('the web app needs gradio: pip install -e ".[app]" (or pip install gradio).') from None
  return gradio


def resolve_checkpoint(spec: str | None, log=print) -> str | None:
  """``--checkpoint``: a converted bundle folder or ``hf:<repo id>[@revision]`` (downloaded and converted once into
  the hub cache by :func:`gen3r_jax.apps.bundle.resolve_checkpoint`), resolved before the server starts; None:
  the tiny demo."""
  if not spec:
    return None
  path = resolve_bundle(spec, log=log)
  require(os.path.isdir(path), f"--checkpoint {spec!r}: folder not found; pass a bundle written by "
                               "launch/convert.py, hf:<repo id>, or no --checkpoint for the tiny demo.")
  return path


# ---------------------------------------------------------------------------------------------------- progress
class RunProgress:
  """Maps the sampler's stage log lines and step callbacks onto one bar: ``report(fraction, text)``."""

  def __init__(self, report: Callable[[float, str], None], *, loading: bool):
    self.report = report
    self.lines: list[str] = []
    stages = [s for s in STAGES if loading or s[0] != "load"]
    total = sum(w for _, w in stages)
    self.start, t = {}, 0.0
    for name, w in stages:
      self.start[name] = (t / total, w / total)
      t += w
    self.order = [name for name, _ in stages]
    self.t_step, self.current = None, None
    self._begin(self.order[0])

  def _begin(self, name: str) -> None:
    if name == self.current:
      return
    self.current = name
    self.report(self.start[name][0], STAGE_LABELS[name] + " …")
    if name == "denoise":
      self.t_step = time.perf_counter()

  def log(self, line: str) -> None:
    self.lines.append(line)
    m = _STAGE_LINE.match(line)
    if line.startswith("[sample] loaded ") and "load" in self.start:
      self._begin(self.order[1])
    elif m and m.group(1) in self.start and not m.group(2):
      self._begin(m.group(1))                        # a stage starts
    elif m and m.group(1) == "geometry_decode" and m.group(2):
      self._begin("export")                          # the last model stage is done: export follows

  def warn(self, message: str) -> None:
    self.lines.append(f"warning: {message}")

  def on_step(self, k: int, n: int) -> None:
    now = time.perf_counter()
    per = (now - self.t_step) / k if self.t_step else 0.0
    s, w = self.start["denoise"]
    self.report(s + w * k / n, f"denoising step {k}/{n} ({per:.2f} s/step, ETA {fmt_seconds(per * (n - k))})")


# --------------------------------------------------------------------------------------------------- the app
class WebApp:
  """The state behind the page: the base config, the bundle (loaded once), the run folders."""

  def __init__(self, base_config, *, out_root: str, glb_points: int = GLB_POINTS, log=print):
    self.base, self.out_root, self.glb_points, self.log = base_config, out_root, int(glb_points), log
    self.bundle, self.bundle_key = None, None
    self.lock = threading.Lock()
    self.runs = 0
    os.makedirs(out_root, exist_ok=True)

  @property
  def is_demo(self) -> bool:
    return bool(self.base.demo.enabled)

  def prepare(self) -> str:
    """Make the demo bundle (once, cached) so the first Generate does not wait for it; returns the checkpoint."""
    checkpoint, _ = resolve_demo(self.base, log=self.log)
    self.base.checkpoint = checkpoint
    return checkpoint

  def new_run_dir(self) -> str:
    self.runs += 1
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(self.out_root, f"run-{stamp}-{self.runs}")

  def config(self, *, out: str, images: list[str], task: str, prompt: str, cameras: str, cameras_file,
             num_frames: int, num_steps: int, guidance_scale: float, seed: int, negative_prompt: str | None = None,
             shift: float | None = None, scheduler: str | None = None):
    """The sampling config of one Generate: the base config with the page's values (uploads copied into
    ``out/inputs``: the run folder keeps them, and a file name with a comma cannot break the image list). The
    keywords carry the sampling config's (``SampleOptions``') names; ``cameras_file`` replaces ``cameras``."""
    cfg = copy.deepcopy(self.base)
    cfg.out = out
    cfg.task, cfg.prompt = str(task), str(prompt or "")
    cfg.num_frames, cfg.num_steps, cfg.seed = int(num_frames), int(num_steps), int(seed)
    cfg.guidance_scale = float(guidance_scale)
    if negative_prompt is not None:
      cfg.negative_prompt = str(negative_prompt)
    if shift is not None:
      cfg.shift = float(shift)
    if scheduler is not None:
      cfg.scheduler = "" if scheduler == "checkpoint" else str(scheduler)
    copied = [_copy_input(p, out, f"image{i:02d}") for i, p in enumerate(images or [])]
    cfg.images = ",".join(copied)
    cfg.cameras = _copy_input(cameras_file, out, "cameras") if cameras_file else str(cameras)
    return cfg

  def bundle_for(self, cfg, log) -> object:
    key = (cfg.checkpoint, cfg.dtype, cfg.param_dtype, cfg.placement, cfg.mesh)
    if self.bundle_key != key:
      self.bundle, self.bundle_key = None, None
      self.bundle = load_for_config(cfg, cfg.checkpoint, log=log)
      self.bundle_key = key
    return self.bundle

  def generate(self, report: Callable[[float, str], None] = lambda f, s: None, **page) -> dict:
    """One Generate (module docstring): ``{"out", "files", "rgb", "depth", "glb", "preview", "log"}``. Bad input
    raises :class:`Gen3RInputError` before any model work."""
    with self.lock:                              # one model, one run at a time
      out = self.new_run_dir()
      prog = RunProgress(report, loading=self.bundle_key is None)
      try:
        cfg = self.config(out=out, **page)
        checkpoint, paths = resolve_demo(cfg, log=lambda s: None)
        cfg.checkpoint = checkpoint
        check_config(cfg, checkpoint, paths, warn=prog.warn)
      except Gen3RInputError:
        shutil.rmtree(out, ignore_errors=True)   # holds at most the copied inputs: no run to keep
        raise
      bundle = self.bundle_for(cfg, prog.log)
      t0 = time.perf_counter()
      files = sample_from_config(cfg, log=prog.log, warn=prog.warn, bundle=bundle, on_step=prog.on_step)
      glb = self.write_glb(out)
      report(1.0, "done")
      prog.lines.append(f"[app] {len(files)} files in {out} ({time.perf_counter() - t0:.1f} s)")
      listing = sorted(os.path.join(out, n) for n in os.listdir(out) if os.path.isfile(os.path.join(out, n)))
      return {"out": out, "files": listing, "rgb": files.get("rgb.mp4"), "depth": files.get("depth.mp4"),
              "glb": glb, "preview": files.get("preview.png"), "log": "\n".join(prog.lines)}

  def write_glb(self, out: str) -> str:
    """``points.glb``: at most ``glb_points`` masked points of the run, centred (:mod:`gen3r_jax.apps.glb`)."""
    scene = load_output_dir(out)
    pts, col = select_points(scene.points, scene.rgb, masks=scene.masks, max_points=self.glb_points, seed=0)
    if len(pts) == 0:                            # nothing valid: one point keeps the file well-formed
      pts, col = np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8)
    return write_point_cloud_glb(os.path.join(out, GLB_FILE), pts, col, centre=np.median(pts, 0))


def _copy_input(path, out: str, stem: str) -> str:
  path = str(getattr(path, "name", path))       # gradio may hand a file object or a path
  require(os.path.isfile(path), f"uploaded file {path!r} is gone; upload it again.")
  folder = os.path.join(out, "inputs")
  os.makedirs(folder, exist_ok=True)
  target = os.path.join(folder, stem + os.path.splitext(path)[1].lower())
  shutil.copyfile(path, target)
  return target


# ------------------------------------------------------------------------------------------------------ the UI
def build_ui(app: WebApp):
  """The gradio Blocks of :class:`WebApp` (module docstring)."""
  gr = require_gradio()
  base = app.base
  with gr.Blocks(title="Gen3R (JAX)") as ui:
    gr.Markdown("## Gen3R in JAX: a video, its depth and a 3D point cloud from one or two images"
                + ("\n*Tiny demo bundle: random weights, so the outputs show the pipeline, not a scene.*"
                   if app.is_demo else f"\nCheckpoint: `{base.checkpoint}`"))
    with gr.Row():
      with gr.Column(scale=1):
        images = gr.File(label="control image(s)" + (" (empty: the built-in example image)" if app.is_demo else ""),
                         file_count="multiple", file_types=["image", "video"], elem_id="images")
        task = gr.Radio(list(TASKS), value=base.task, label="task (1view: first frame, 2view: first + last, "
                                                             "allview: every frame)", elem_id="task")
        prompt = gr.Textbox(value=base.prompt, label="prompt", lines=2, elem_id="prompt")
        with gr.Row():
          trajectory = gr.Dropdown(list(BUILTIN_TRAJECTORIES), value=base.cameras, label="trajectory",
                                   elem_id="trajectory")
          cameras = gr.File(label="or a cameras JSON", file_types=[".json"], elem_id="cameras")
        with gr.Row():
          num_frames = gr.Dropdown(list(FRAME_CHOICES), value=int(base.num_frames), label="frames",
                                   elem_id="num_frames")
          steps = gr.Slider(1, 100, value=int(base.num_steps), step=1, label="steps", elem_id="steps")
        with gr.Row():
          guidance = gr.Slider(1.0, 15.0, value=float(base.guidance_scale), step=0.5, label="guidance (<= 1: off)",
                               elem_id="guidance")
          seed = gr.Number(value=int(base.seed), precision=0, label="seed", elem_id="seed")
        with gr.Accordion("advanced", open=False):
          negative = gr.Textbox(value=base.negative_prompt, label="negative prompt")
          shift = gr.Number(value=float(base.shift), label="shift")
          scheduler = gr.Dropdown(["checkpoint", "unipc", "dpmpp", "euler"], value=base.scheduler or "checkpoint",
                                  label="scheduler")
        run = gr.Button("Generate", variant="primary", elem_id="generate")
      with gr.Column(scale=2):
        with gr.Row():
          rgb = gr.Video(label="RGB", elem_id="rgb_video", autoplay=True, loop=True)
          depth = gr.Video(label="depth", elem_id="depth_video", autoplay=True, loop=True)
        cloud = gr.Model3D(label="point cloud (points.glb; drag to orbit)", elem_id="cloud", height=420,
                           clear_color=(0.12, 0.12, 0.12, 1.0))
        preview = gr.Image(label="preview.png", elem_id="preview", type="filepath")
        files = gr.File(label="output files", file_count="multiple", elem_id="files")
        where = gr.Markdown(elem_id="where")
        log = gr.Textbox(label="log", lines=8, max_lines=20, elem_id="log")

    def on_generate(images_, task_, prompt_, trajectory_, cameras_, num_frames_, steps_, guidance_, seed_,
                    negative_, shift_, scheduler_, progress=gr.Progress()):
      try:
        r = app.generate(lambda f, s: progress(f, desc=s), images=[_path(x) for x in images_ or []], task=task_,
                         prompt=prompt_, cameras=trajectory_, cameras_file=_path(cameras_) if cameras_ else None,
                         num_frames=num_frames_, num_steps=steps_, guidance_scale=guidance_, seed=seed_,
                         negative_prompt=negative_, shift=shift_, scheduler=scheduler_)
      except Gen3RInputError as e:
        raise gr.Error(str(e).splitlines()[0]) from None
      note = (f"Output folder: `{r['out']}`. Look at it in 3D (cameras, frame slider, masks): "
              f"`python launch/view.py {r['out']}`")
      return r["rgb"], r["depth"], r["glb"], r["preview"], r["files"], note, r["log"]

    run.click(on_generate, [images, task, prompt, trajectory, cameras, num_frames, steps, guidance, seed, negative,
                            shift, scheduler], [rgb, depth, cloud, preview, files, where, log])
  return ui


def _path(x) -> str:
  return str(getattr(x, "name", x))


def serve(base_config, *, host: str = "127.0.0.1", port: int = 7860, out_root: str, glb_points: int = GLB_POINTS,
          log=print):
  """Build the app on ``base_config``, start the server (non-blocking), print the URL; ``(ui, app, url)``."""
  gr = require_gradio()
  require(isinstance(glb_points, int) and glb_points > 0, f"glb_points must be a positive integer, got {glb_points!r}.")
  app = WebApp(base_config, out_root=out_root, glb_points=glb_points, log=log)
  checkpoint = app.prepare()
  log(f"[app] checkpoint {checkpoint}{' (tiny demo bundle, random weights)' if app.is_demo else ''}; "
      f"runs go to {out_root}")
  ui = build_ui(app)
  try:
    ui.queue(default_concurrency_limit=1).launch(server_name=host, server_port=int(port),
                                                 prevent_thread_lock=True, quiet=True,
                                                 allowed_paths=[os.path.abspath(out_root)], show_error=True)
  except OSError as e:
    raise Gen3RInputError(f"cannot serve on {host}:{port} ({str(e).splitlines()[0]}); pass another --port."
                          ) from None
  url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '') else host}:{ui.server_port}"
  log(f"[app] open {url} in a browser (Ctrl-C stops the server)")
  return ui, app, url


def run_app(base_config, **kwargs) -> None:
  """``launch/app.py``: :func:`serve`, then wait until Ctrl-C."""
  ui, _, _ = serve(base_config, **kwargs)
  try:
    while True:
      time.sleep(1.0)
  except KeyboardInterrupt:
    print("[app] stopped")
  finally:
    ui.close()


__all__ = ("TASKS", "FRAME_CHOICES", "STAGES", "RunProgress", "WebApp", "build_ui", "require_gradio",
           "resolve_checkpoint", "run_app", "serve")
