"""The web app and the viewer in a real browser, as a user meets them: headless Chromium (the system's, Debian
package ``chromium``) driven by Playwright.

* ``launch/app.py`` on the tiny demo bundle: the page loads, Generate runs the whole pipeline with live progress,
  the RGB and depth videos, the 3D point cloud (a non-blank canvas) and the output files appear.
* ``launch/view.py`` on that run's output folder (tiny bundle) and on a rendered synthetic scene: the 3D canvas
  draws the point cloud and the cameras (not blank), the panel's toggles change what is shown.

Each test saves its screenshots under the test's tmp folder and, when ``GEN3R_SCREENSHOTS`` names a folder (the
README's pictures: ``GEN3R_SCREENSHOTS=docs/img``), the page screenshots (app.png, viewer.png,
viewer_synthetic.png) there too. No Chromium is a failure naming the install, never a
skip: ``.ci/run`` installs it (``apt-get install -y chromium``); ``GEN3R_CHROMIUM`` may point at another binary.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image
import pytest
from playwright.sync_api import sync_playwright

from gen3r_jax.apps.glb import GLB_MAGIC
from tests.helpers import write_synthetic_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# few points: SwiftShader draws every frame on the CPU, and its time grows with the points
MAX_POINTS, GLB_POINTS = 150_000, 100_000
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# software WebGL (SwiftShader): the CI box has no GPU
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def chromium_path() -> str:
  given = os.environ.get("GEN3R_CHROMIUM")
  found = [given] if given else [shutil.which(n) for n in CHROMIUM_NAMES]
  found = [p for p in found if p and os.path.isfile(p)]
  if not found:
    pytest.fail("no Chromium found for the browser tests: install the Debian package (apt-get install -y chromium; "
                ".ci/run does) or set GEN3R_CHROMIUM=<path of a chromium binary>", pytrace=False)
  return found[0]


@pytest.fixture(scope="module")
def browser():
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield b
    b.close()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  """A launch/ tool in a subprocess; :meth:`wait_for` reads its output until a line matches."""

  def __init__(self, *args: str):
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)                                  # one CPU device, as a user has
    self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
    self.lines: queue.Queue = queue.Queue()
    self.output: list[str] = []
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self) -> None:
    for line in self.proc.stdout:
      self.output.append(line)
      self.lines.put(line)

  def wait_for(self, pattern: str, timeout: float) -> re.Match:
    end = time.time() + timeout
    while time.time() < end:
      try:
        line = self.lines.get(timeout=0.5)
      except queue.Empty:
        assert self.proc.poll() is None, f"server exited ({self.proc.returncode}):\n{''.join(self.output)[-3000:]}"
        continue
      m = re.search(pattern, line)
      if m:
        return m
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{''.join(self.output)[-3000:]}")

  def stop(self) -> None:
    if self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGINT)                   # Ctrl-C: the tools stop their servers
      try:
        self.proc.wait(timeout=20)
      except subprocess.TimeoutExpired:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def save_screenshot(png: bytes, tmp_path, name: str, publish: bool = False) -> np.ndarray:
  """Write ``png`` under ``tmp_path`` (and, with ``publish``, into ``$GEN3R_SCREENSHOTS``); return its pixels."""
  (tmp_path / name).write_bytes(png)
  folder = os.environ.get("GEN3R_SCREENSHOTS")
  if folder and publish:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
      f.write(png)
  return np.asarray(Image.open(tmp_path / name).convert("RGB"), np.float32)


def assert_not_blank(img: np.ndarray, what: str) -> None:
  """A drawn 3D canvas: many distinct colours and real variance (a blank or one-colour canvas has neither)."""
  colours = np.unique(img.reshape(-1, 3).astype(np.uint8), axis=0).shape[0]
  assert img.std() > 8.0 and colours > 200, f"{what} looks blank: std {img.std():.1f}, {colours} colours"


# ---------------------------------------------------------------------------------------------------- the app
@pytest.fixture
def app_run(browser, tmp_path_factory):
  """launch/app.py on the tiny demo bundle, Generate clicked once in the browser: ``(page, run folder, times)``."""
  tmp = tmp_path_factory.mktemp("app")
  port = free_port()
  server = Server(os.path.join(ROOT, "launch", "app.py"), f"--port={port}", f"--out={tmp / 'runs'}",
                  f"--demo_cache={tmp / 'demo_cache'}", f"--glb_points={GLB_POINTS}")
  page = browser.new_page(viewport={"width": 1400, "height": 1100})
  try:
    url = server.wait_for(r"open (http://\S+) in a browser", timeout=300).group(1)
    t0 = time.time()
    page.goto(url)
    page.wait_for_selector("#generate", timeout=60_000)
    page.fill("#steps input[type=number]", "2")
    page.locator("#steps input[type=number]").press("Enter")
    page.click("#generate")
    # the bar names the stage and, while denoising, the step
    page.wait_for_selector("text=/denoising step \\d+\\/2/", timeout=240_000)
    page.wait_for_selector("#rgb_video video", timeout=240_000)
    page.wait_for_selector("#cloud canvas", timeout=60_000)
    seconds = time.time() - t0
    runs = os.listdir(tmp / "runs")
    assert len(runs) == 1, runs
    yield page, str(tmp / "runs" / runs[0]), seconds
  finally:
    page.close()                                                # its WebGL canvas and videos keep drawing
    server.stop()


def check_app_outputs(app_run, tmp_path) -> None:
  page, out, seconds = app_run
  for vid in ("#rgb_video video", "#depth_video video"):
    src = page.locator(vid).get_attribute("src")
    assert src and ".mp4" in src, (vid, src)
  # a bounded wait for the video's metadata or an error, the element looked up afresh each poll (gradio may replace
  # it while a slow machine renders; a promise on a replaced element never resolved and hung the suite)
  page.wait_for_function("() => { const v = document.querySelector('#rgb_video video');"
                         " return v !== null && (v.readyState >= 1 || v.error !== null); }", timeout=120_000)
  assert page.locator("#rgb_video video").evaluate(
      "v => v.error === null ? v.videoWidth : `error ${v.error.code}: ${v.error.message}`") == 560
  listed = page.locator("#files").inner_text().replace("\n", "")
  for name in ("rgb.mp4", "depth.mp4", "points.ply", "points.glb", "cameras.json", "depth.npz", "points.npz",
               "preview.png", "latents.npz", "vggt_predictions.npz"):
    assert name in listed, name
    assert os.path.isfile(os.path.join(out, name)), name
  assert open(os.path.join(out, "points.glb"), "rb").read(4) == GLB_MAGIC
  assert "launch/view.py" in page.locator("#where").inner_text()
  time.sleep(3)                                                 # Babylon draws the cloud after it loads
  cloud = save_screenshot(page.locator("#cloud canvas").screenshot(), tmp_path, "app_cloud.png")
  assert_not_blank(cloud, "the app's point cloud canvas")
  page.evaluate("window.scrollTo(0, 0)")
  save_screenshot(page.screenshot(), tmp_path, "app.png", publish=True)
  print(f"Generate -> outputs shown in {seconds:.0f} s")


# ------------------------------------------------------------------------------------------------- the viewer
def open_viewer(browser, out: str):
  server = Server(os.path.join(ROOT, "launch", "view.py"), out, f"--port={free_port()}", f"--max_points={MAX_POINTS}")
  url = server.wait_for(r"open (http://\S+) in a browser", timeout=120).group(1)
  page = browser.new_page(viewport={"width": 1280, "height": 800})
  page.goto(url)
  page.wait_for_selector("canvas", timeout=60_000)
  page.wait_for_selector("text=/points shown/", timeout=60_000)
  for close in page.locator(".mantine-Notification-closeButton").all():   # the "software WebGL" notice
    close.click()
  return server, page


def shown(page) -> int:
  return int(page.locator("text=/points shown/").inner_text().split()[0].replace(",", ""))


def set_points_from(page, option: str) -> None:
  page.get_by_label("points from").click()
  page.get_by_role("option", name=option).click()


def slider_thumb(page, label: str):
  """The handle of a viser slider (its label names the slider, which is no form element)."""
  target = page.locator("label", has_text=re.compile(f"^{re.escape(label)}$")).get_attribute("for")
  return page.locator(f"[id='{target}'] [role=slider]")


def check_viewer_on_the_run(browser, app_run, tmp_path) -> None:
  _, out, _ = app_run
  server, page = open_viewer(browser, out)
  try:
    assert shown(page) == MAX_POINTS                            # 5 frames of 560x560, capped by --max_points
    for label in ("play", "points from", "depth mask", "confidence mask", "cameras"):
      assert page.get_by_label(label, exact=True).count() == 1, label
    for label in ("frame", "drop lowest %", "point size"):
      assert slider_thumb(page, label).count() == 1, label
    for button in ("download points.ply", "download shown points"):
      assert page.get_by_role("button", name=button).is_enabled(), button
    assert page.get_by_label("confidence mask").is_enabled()   # the sampler writes VGGT's depth confidence
    time.sleep(1)
    img = save_screenshot(page.locator("canvas").first.screenshot(), tmp_path, "viewer_canvas.png")
    assert_not_blank(img, "the viewer's canvas")
    save_screenshot(page.screenshot(), tmp_path, "viewer.png", publish=True)
  finally:
    page.close()
    server.stop()
  assert "stopped" in "".join(server.output)


def test_app_generate_then_view_the_run(browser, app_run, tmp_path):
  """Generate in the app shows the videos, the 3D point cloud and the files; the viewer then shows that run (one
  test: the pipeline runs once, also under pytest-xdist)."""
  check_app_outputs(app_run, tmp_path)
  check_viewer_on_the_run(browser, app_run, tmp_path)


def test_viewer_on_a_synthetic_scene(browser, tmp_path):
  """A rendered room with exact depth (what a perfect reconstruction gives; no confidence file, so that toggle is
  disabled): the canvas is drawn, and the panel's frame selection and depth mask change what is shown."""
  frames, h, w = 8, 240, 320
  out = str(tmp_path / "synthetic")
  ref = write_synthetic_output(out, frames=frames, hw=(h, w), seed=3)
  server, page = open_viewer(browser, out)
  try:
    assert shown(page) == MAX_POINTS
    assert page.get_by_label("confidence mask").is_disabled()
    time.sleep(1)
    img = save_screenshot(page.locator("canvas").first.screenshot(), tmp_path, "viewer_synthetic_canvas.png")
    assert_not_blank(img, "the viewer's canvas")
    save_screenshot(page.screenshot(), tmp_path, "viewer_synthetic.png", publish=True)
    set_points_from(page, "the slider's frame")                # frame 0: its masked pixels
    page.wait_for_function(f"() => !document.body.innerText.includes('{MAX_POINTS:,} points shown')", timeout=30_000)
    assert shown(page) == int(ref["masks"][0].sum())
    thumb = slider_thumb(page, "frame")
    for _ in range(3):                                          # the slider to frame 3, from the keyboard
      thumb.press("ArrowRight")
    page.wait_for_function(f"() => document.body.innerText.includes('{int(ref['masks'][3].sum()):,} points shown')",
                           timeout=30_000)
    page.get_by_label("depth mask").uncheck()                   # every pixel of frame 3
    page.wait_for_function(f"() => document.body.innerText.includes('{h * w:,} points shown')", timeout=30_000)
  finally:
    page.close()
    server.stop()
