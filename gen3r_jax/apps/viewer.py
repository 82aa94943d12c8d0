"""The 3D viewer of an output directory (``launch/view.py``): a viser server showing the coloured point cloud, the
cameras as frustums textured with the frames, a frame slider and the mask toggles.

    server, viewer = serve("outputs/palace", host="127.0.0.1", port=8080)   # prints the URL, returns
    viewer.controls.frame.value = 3                                         # what the GUI's slider does

Works on every folder ``launch/sample.py`` or ``launch/reconstruct.py`` writes (read by
:func:`gen3r_jax.apps.outputs.load_output_dir`). The panel:

* **frame** slider, **play** (steps through the frames), **points from**: every frame, the frames up to the
  slider, or the slider's frame only; the slider's camera is drawn in red.
* **depth mask**: the exported mask of ``points.npz`` (the per-frame 0.1 / 98 depth percentiles of ``infer.py``;
  off shows every finite point). **confidence mask** with **drop lowest %**: VGGT's depth confidence
  (``depth_conf`` of ``vggt_predictions.npz``, written by both CLIs; disabled when the folder lacks it).
* **point size**, **cameras** (show / hide the frustums; a click on one moves the view to that camera and the
  slider to its frame), **download points.ply** (the file) and **download shown points** (a PLY of what is on
  screen).

The browser gets at most ``max_points`` points (a fixed random subset of the selection: the same pixels stay when a
toggle changes, so nothing flickers); the geometry is re-centred on the median point, with the first camera's
up (its -y axis in OpenCV axes, :func:`up_direction`) as up. The options (``max_points``, ``point_size``, ``fps``,
``port``) are checked before anything is read or a server started (:func:`check_view_options`). viser is the
optional extra ``[viewer]`` (``pip install -e ".[viewer]"``); without it :func:`require_viser` is a one-line
error.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import numpy as np

from gen3r_jax.apps.outputs import OutputDir, load_output_dir
from gen3r_jax.errors import Gen3RInputError, require
from gen3r_jax.ply import ply_bytes

FRAME_MODES = ("all frames", "frames up to the slider", "the slider's frame")
THUMBNAIL_WIDTH = 192          # frustum textures: small JPEGs, the browser holds one per frame
CURRENT_COLOR, CAMERA_COLOR = (230, 40, 40), (90, 90, 90)


def require_viser():
  """The viser module, or a one-line :class:`Gen3RInputError` saying how to install it."""
  try:
    import viser  # heavy optional package (extra [viewer]): imported on first use
  except ImportError:
    raise Gen3RInputError('the 3D viewer needs viser: pip install -e ".[viewer]" (or pip install viser).') from None
  return viser


# ------------------------------------------------------------------------------------------- point selection
@dataclasses.dataclass
class Selection:
  """What the panel asks for; :meth:`PointSelector.select` turns it into pixel indices."""
  frame: int = 0
  frames: str = FRAME_MODES[0]
  depth_mask: bool = True
  conf_mask: bool = False
  conf_drop_percent: float = 25.0


class PointSelector:
  """The pixels (flat indices into ``[F, H, W]``) to show for a :class:`Selection`, at most ``max_points``."""

  def __init__(self, scene: OutputDir, max_points: int = 1_000_000, seed: int = 0):
    require(isinstance(max_points, int) and max_points > 0, f"max_points must be a positive integer, got "
                                                            f"{max_points!r}.")
    self.scene, self.max_points = scene, int(max_points)
    f, h, w = scene.masks.shape
    self.frame_pixels = h * w
    self.points = scene.points.reshape(-1, 3)
    self.colors = scene.rgb.reshape(-1, 3)
    self.finite = np.isfinite(self.points).all(-1)
    self.masks = scene.masks.reshape(-1)
    # one random rank per pixel: a selection keeps its max_points lowest ranks, so the kept pixels do not change
    # when a toggle adds or removes others
    self.rank = np.random.default_rng(seed).permutation(self.finite.size).astype(np.int64)
    self.conf = None if scene.confidence is None else scene.confidence.reshape(-1)
    if self.conf is not None:
      ok = self.conf[self.finite]
      self.conf_percentiles = np.percentile(ok, np.arange(101)) if ok.size else np.zeros(101)

  @property
  def has_confidence(self) -> bool:
    return self.conf is not None

  def conf_threshold(self, drop_percent: float) -> float:
    """The confidence below which ``drop_percent`` % of the finite points lie."""
    p = float(np.clip(drop_percent, 0.0, 100.0))
    lo = int(np.floor(p))
    hi = min(lo + 1, 100)
    return float(np.interp(p, [lo, hi], [self.conf_percentiles[lo], self.conf_percentiles[hi]]))

  def frame_range(self, sel: Selection) -> tuple[int, int]:
    f = int(np.clip(sel.frame, 0, self.scene.num_frames - 1))
    require(sel.frames in FRAME_MODES, f"frames must be one of {FRAME_MODES}, got {sel.frames!r}.")
    first, last = {FRAME_MODES[0]: (0, self.scene.num_frames), FRAME_MODES[1]: (0, f + 1),
                   FRAME_MODES[2]: (f, f + 1)}[sel.frames]
    return first * self.frame_pixels, last * self.frame_pixels

  def select(self, sel: Selection) -> np.ndarray:
    """Flat pixel indices, in pixel order (module docstring)."""
    lo, hi = self.frame_range(sel)
    keep = self.finite[lo:hi].copy()
    if sel.depth_mask:
      keep &= self.masks[lo:hi]
    if sel.conf_mask and self.conf is not None and sel.conf_drop_percent > 0:
      keep &= self.conf[lo:hi] >= self.conf_threshold(sel.conf_drop_percent)
    idx = np.flatnonzero(keep) + lo
    if idx.size > self.max_points:
      idx = np.sort(idx[np.argpartition(self.rank[idx], self.max_points - 1)[:self.max_points]])
    return idx


# ----------------------------------------------------------------------------------------------- geometry
def scene_frame(scene: OutputDir) -> tuple[np.ndarray, float]:
  """``(centre [3], extent)``: the median finite point and the 2nd..98th percentile diagonal of the points (1 when
  there are none), for re-centring and for sizing points and frustums."""
  p = scene.points.reshape(-1, 3)
  ok = np.isfinite(p).all(-1) & scene.masks.reshape(-1)
  p = p[ok] if ok.any() else scene.c2w[:, :3, 3]
  if p.shape[0] > 200_000:
    p = p[np.random.default_rng(0).choice(p.shape[0], 200_000, replace=False)]
  centre = np.median(p, 0)
  lo, hi = np.percentile(p, 2, 0), np.percentile(p, 98, 0)
  extent = float(np.linalg.norm(hi - lo))
  return centre.astype(np.float64), extent if np.isfinite(extent) and extent > 0 else 1.0


def up_direction(scene: OutputDir) -> np.ndarray:
  """The scene's up for the viewer: the first camera's up in world coordinates, ``-c2w[0][:3, 1]`` (OpenCV camera
  axes: y points down), unit length; world -y for a degenerate pose."""
  up = -np.asarray(scene.c2w[0][:3, 1], np.float64)
  n = float(np.linalg.norm(up))
  return up / n if np.isfinite(n) and n > 0 else np.array([0.0, -1.0, 0.0])


def vertical_fov(K: np.ndarray, height: int) -> float:
  return float(2.0 * np.arctan2(height / 2.0, K[1, 1]))


def thumbnail(frame: np.ndarray, width: int = THUMBNAIL_WIDTH) -> np.ndarray:
  """``frame [H, W, 3]`` uint8 shrunk to ``width`` pixels wide (by striding: cheap, and a texture is small)."""
  step = max(1, int(np.ceil(frame.shape[1] / width)))
  return np.ascontiguousarray(frame[::step, ::step])


# ------------------------------------------------------------------------------------------------ the viewer
@dataclasses.dataclass
class Controls:
  frame: object
  play: object
  frames: object
  depth_mask: object
  conf_mask: object
  conf_drop: object
  point_size: object
  cameras: object
  status: object


class Viewer:
  """The scene on a viser server (module docstring). ``update()`` re-sends the point cloud for the panel's state."""

  def __init__(self, server, scene: OutputDir, *, max_points: int = 1_000_000, point_size: float | None = None,
               fps: float = 8.0, title: str | None = None):
    self.server, self.scene = server, scene
    self.viser = require_viser()
    self.selector = PointSelector(scene, max_points)
    self.centre, self.extent = scene_frame(scene)
    self.fps = float(fps)
    self.lock = threading.Lock()
    self.shown = np.zeros(0, np.int64)
    self.frustums = []
    self._current = 0
    server.scene.set_up_direction(up_direction(scene))
    self.controls = self._panel(title or os.path.basename(os.path.normpath(scene.path)), point_size)
    self.cloud = server.scene.add_point_cloud(
        "/points", points=np.zeros((1, 3), np.float32), colors=np.zeros((1, 3), np.uint8),
        point_size=self.controls.point_size.value, point_shape="rounded", precision="float32")
    self._add_cameras()
    self._initial_view()
    self.update()

  # -- panel
  def _panel(self, title: str, point_size: float | None) -> Controls:
    gui, s = self.server.gui, self.scene
    gui.configure_theme(control_layout="fixed", show_logo=False)
    prompt = s.prompt
    gui.add_markdown(f"**{title}**  \n{s.num_frames} frames, {s.height}x{s.width}"
                     + (f"  \n*{prompt}*" if prompt else ""))
    n = s.num_frames
    frame = gui.add_slider("frame", min=0, max=max(n - 1, 1), step=1, initial_value=0, disabled=n < 2)
    play = gui.add_checkbox("play", initial_value=False, disabled=n < 2)
    frames = gui.add_dropdown("points from", FRAME_MODES, initial_value=FRAME_MODES[0])
    depth_mask = gui.add_checkbox("depth mask", initial_value=True,
                                  hint="the exported mask of points.npz (per-frame depth percentiles)")
    has_conf = self.selector.has_confidence
    conf_mask = gui.add_checkbox("confidence mask", initial_value=False, disabled=not has_conf,
                                 hint="VGGT depth confidence (vggt_predictions.npz)" if has_conf
                                 else "this folder has no vggt_predictions.npz with depth_conf")
    conf_drop = gui.add_slider("drop lowest %", min=0, max=99, step=1, initial_value=25, disabled=not has_conf)
    # about the spacing of the shown points spread over the scene's extent (sparser clouds get bigger points)
    n = max(1, min(self.selector.max_points, int(s.masks.sum())))
    size = point_size if point_size is not None else self.extent * 1.4 / np.sqrt(n)
    point = gui.add_slider("point size", min=size / 10, max=size * 10, step=size / 20, initial_value=size)
    cameras = gui.add_checkbox("cameras", initial_value=True)
    status = gui.add_markdown("")
    ply = gui.add_button("download points.ply", disabled=s.ply_path is None)
    shown = gui.add_button("download shown points")
    c = Controls(frame, play, frames, depth_mask, conf_mask, conf_drop, point, cameras, status)
    for handle in (frames, depth_mask, conf_mask, conf_drop):
      handle.on_update(lambda _: self.update())
    frame.on_update(lambda _: self._on_frame())
    point.on_update(lambda _: setattr(self.cloud, "point_size", float(point.value)))
    cameras.on_update(lambda _: self._show_cameras(bool(cameras.value)))
    ply.on_click(lambda event: self._download(event, "points.ply", self._file_bytes(s.ply_path)))
    shown.on_click(lambda event: self._download(event, "shown_points.ply", self.shown_ply()))
    return c

  def selection(self) -> Selection:
    c = self.controls
    return Selection(frame=int(c.frame.value), frames=str(c.frames.value), depth_mask=bool(c.depth_mask.value),
                     conf_mask=bool(c.conf_mask.value), conf_drop_percent=float(c.conf_drop.value))

  # -- point cloud
  def update(self) -> int:
    """Send the points of the panel's selection; returns how many."""
    with self.lock:
      idx = self.selector.select(self.selection())
      self.shown = idx
      pts = (self.selector.points[idx] - self.centre).astype(np.float32) if idx.size else np.zeros((1, 3), np.float32)
      col = self.selector.colors[idx] if idx.size else np.zeros((1, 3), np.uint8)
      self.cloud.points, self.cloud.colors = pts, col
      self.controls.status.content = f"{idx.size:,} points shown"
      return int(idx.size)

  def shown_ply(self) -> bytes:
    idx = self.shown
    return ply_bytes(self.selector.points[idx], self.selector.colors[idx])

  @staticmethod
  def _file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
      return f.read()

  @staticmethod
  def _download(event, name: str, data: bytes) -> None:
    if event.client is not None:
      event.client.send_file_download(name, data)

  # -- cameras
  def _pose(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    c2w = self.scene.c2w[i]
    wxyz = self.viser.transforms.SO3.from_matrix(c2w[:3, :3]).wxyz
    return wxyz, c2w[:3, 3] - self.centre

  def _add_cameras(self) -> None:
    s = self.scene
    h, w = s.height, s.width
    spacing = np.linalg.norm(np.diff(s.c2w[:, :3, 3], axis=0), axis=-1)
    scale = 0.06 * self.extent if spacing.size == 0 or not np.median(spacing) > 0 else \
        float(np.clip(np.median(spacing) * 0.8, 0.02 * self.extent, 0.1 * self.extent))
    for i in range(s.num_frames):
      wxyz, pos = self._pose(i)
      handle = self.server.scene.add_camera_frustum(
          f"/cameras/{i:04d}", fov=vertical_fov(s.K[i], h), aspect=w / h, scale=scale, image=thumbnail(s.rgb[i]),
          format="jpeg", wxyz=wxyz, position=pos, color=CURRENT_COLOR if i == 0 else CAMERA_COLOR,
          thickness=1.5, thickness_units="screen")
      handle.on_click(lambda event, i=i: self._go_to_camera(event, i))
      self.frustums.append(handle)

  def _show_cameras(self, visible: bool) -> None:
    for f in self.frustums:
      f.visible = visible

  def _go_to_camera(self, event, i: int) -> None:
    wxyz, pos = self._pose(i)
    if event.client is not None:
      with event.client.atomic():
        event.client.camera.wxyz = wxyz
        event.client.camera.position = pos
    self.controls.frame.value = i

  def _on_frame(self) -> None:
    i = int(self.controls.frame.value)
    if self.frustums and i != self._current:
      self.frustums[self._current].color = CAMERA_COLOR
      self.frustums[i].color = CURRENT_COLOR
      self._current = i
    if self.controls.frames.value != FRAME_MODES[0]:
      self.update()

  def _initial_view(self) -> None:
    """Look at the scene centre from behind and above the first camera (0.8 and 0.4 extents)."""
    c2w = self.scene.c2w[0]
    forward, down = c2w[:3, 2], c2w[:3, 1]
    pos = c2w[:3, 3] - self.centre
    cam = self.server.initial_camera
    cam.position = pos - forward * 0.8 * self.extent - down * 0.4 * self.extent
    cam.look_at = np.zeros(3)
    cam.up = -down

  def step_play(self) -> None:
    """One tick of **play**: the slider moves on by one frame (wrapping)."""
    if self.controls.play.value and self.scene.num_frames > 1:
      self.controls.frame.value = (int(self.controls.frame.value) + 1) % self.scene.num_frames

  def run_forever(self) -> None:
    """Drive **play** until interrupted (Ctrl-C)."""
    while True:
      self.step_play()
      time.sleep(1.0 / max(self.fps, 0.1))


def url(host: str, port: int) -> str:
  shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "localhost", "") else host
  return f"http://{shown}:{port}"


def _positive(x, integer: bool = False) -> bool:
  kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
  return isinstance(x, kinds) and not isinstance(x, bool) and bool(np.isfinite(x)) and x > 0


def check_view_options(*, host: str = "127.0.0.1", port: int = 8080, max_points: int = 1_000_000,
                       point_size: float | None = None, fps: float = 8.0) -> None:
  """The viewer's options (``launch/view.py``'s flags), checked before anything is read or a server started: a
  one-line :class:`Gen3RInputError` naming the flag."""
  require(isinstance(host, str) and host.strip() != "", f"--host must be an address (e.g. 127.0.0.1), got {host!r}.")
  require(isinstance(port, (int, np.integer)) and not isinstance(port, bool) and 0 <= port <= 65535,
          f"--port must be an integer in 0..65535, got {port!r}.")
  require(_positive(max_points, integer=True), f"--max_points must be a positive integer (the most points the "
                                               f"browser receives), got {max_points!r}.")
  require(point_size is None or _positive(point_size), f"--point_size must be a positive number of scene units "
                                                       f"(leave it out for one from the scene's extent), got "
                                                       f"{point_size!r}.")
  require(_positive(fps), f"--fps must be a positive number (frames per second of play), got {fps!r}.")


def serve(path: str, *, host: str = "127.0.0.1", port: int = 8080, max_points: int = 1_000_000,
          point_size: float | None = None, fps: float = 8.0, log=print):
  """Check the options (:func:`check_view_options`), load ``path`` (one-line error if incomplete), start the
  server and build the scene; ``(server, Viewer)``.

  viser takes the next free port when ``port`` is busy; the URL printed is the one it serves on.
  """
  check_view_options(host=host, port=port, max_points=max_points, point_size=point_size, fps=fps)
  scene = load_output_dir(path)
  viser = require_viser()
  log(f"[view] {path}: {scene.num_frames} frames {scene.height}x{scene.width}, "
      f"{int(scene.valid().sum()):,} masked points" + (", VGGT confidence" if scene.confidence is not None else ""))
  server = viser.ViserServer(host=host, port=int(port), verbose=False)
  viewer = Viewer(server, scene, max_points=max_points, point_size=point_size, fps=fps)
  log(f"[view] open {url(host, server.get_port())} in a browser (Ctrl-C stops the server)")
  return server, viewer


def view(path: str, **kwargs) -> None:
  """``launch/view.py``: :func:`serve`, then drive **play** until Ctrl-C, which stops the server."""
  server, viewer = serve(path, **kwargs)
  try:
    viewer.run_forever()
  except KeyboardInterrupt:
    print("[view] stopped")
  finally:
    server.stop()


__all__ = ("FRAME_MODES", "Selection", "PointSelector", "Viewer", "require_viser", "scene_frame", "up_direction",
           "check_view_options", "serve", "url", "view")
