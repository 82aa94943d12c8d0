"""The evaluation driver behind ``launch/eval.py``: one sample output directory against one scene folder.

``evaluate(pred_dir, gt_dir, EvalOptions(...))`` returns a JSON-ready dict::

  {"pred": ..., "gt": ..., "frames": {"num": F, "gt_indices": [...], "size": [H, W]},
   "image": {"psnr", "ssim", "lpips"?, "frames_scored", "per_frame": {...}, "notes"?},
   "pointcloud": {"official": {...}, "corrected": {...}, "mask": "valid" | "none",
                  "nonfinite": {"policy", "pixels", "of", "fraction"}, "notes"?},
   "camera": {"auc@5", ..., "auc@30", "rra@30", "rta@30", ..., "convention", "relative_pose"}}

Choices the paper leaves open are options here, recorded in the output (``docs/evaluation.md``). What the
evaluation leaves out is said in a section's ``notes`` (printed in the table too, and warned), never silently.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from gen3r_jax.convert.lpips import load_lpips
from gen3r_jax.errors import require
from gen3r_jax.eval import camera as cam_metrics
from gen3r_jax.eval import image as img_metrics
from gen3r_jax.eval import io as eio
from gen3r_jax.eval import lpips
from gen3r_jax.eval import pointcloud as pc
from gen3r_jax.eval import scene as sc
from gen3r_jax.progress import stage

METRICS = ("image", "pointcloud", "camera")
# What to do with predicted pixels whose point is NaN or infinite (``docs/evaluation.md``, "Non-finite points").
NONFINITE_POLICIES = ("exclude", "miss", "error")


class NonFinitePredictionWarning(UserWarning):
  """The prediction has NaN or infinite points among the pixels the point-cloud metrics would score."""


@dataclasses.dataclass
class EvalOptions:
  metrics: tuple[str, ...] = METRICS
  lpips_weights: str | None = None  # LPIPS skipped (with a note) when None
  exclude_frames: tuple[int, ...] = ()  # prediction frame indices not scored by the image metrics
  gt_start: int | None = None  # ground-truth frame selection when cameras.json has no source_index
  gt_stride: int | None = None
  pc_protocols: tuple[str, ...] = pc.PROTOCOLS
  pc_mask: str = "valid"  # "valid": GT depth > 0 and predicted mask (repo Path B); "none": every pixel (Path A)
  voxel_size: float = 0.005
  num_points: int = pc.EVAL_POINTS
  depth_png_scale: float = 1000.0
  nn_chunk: int = 512
  ssim_convention: str = img_metrics.DEFAULT_SSIM_CONVENTION  # "torchmetrics" | "skimage"
  camera_convention: str = cam_metrics.DEFAULT_CONVENTION  # "vggt" | "vggt_early"
  pc_nonfinite: str = "exclude"  # "exclude" | "miss" | "error": predicted NaN/inf pixels (always reported)

  def validate(self) -> None:
    bad = [m for m in self.metrics if m not in METRICS]
    require(not bad and self.metrics, f"--metrics: choose from {', '.join(METRICS)}; got {list(self.metrics)}.")
    bad = [p for p in self.pc_protocols if p not in pc.PROTOCOLS]
    require(not bad and self.pc_protocols,
            f"--pc_protocol: choose from {', '.join(pc.PROTOCOLS)} or 'both'; got {list(self.pc_protocols)}.")
    require(self.pc_mask in ("valid", "none"), f"--pc_mask must be 'valid' or 'none', got {self.pc_mask!r}.")
    require(self.voxel_size > 0, f"--voxel_size must be positive, got {self.voxel_size}.")
    require(self.num_points > 0, f"--num_points must be positive, got {self.num_points}.")
    require(self.ssim_convention in img_metrics.SSIM_CONVENTIONS,
            f"--ssim: choose from {', '.join(img_metrics.SSIM_CONVENTIONS)}; got {self.ssim_convention!r}.")
    require(self.camera_convention in cam_metrics.CONVENTIONS,
            f"--camera_convention: choose from {', '.join(cam_metrics.CONVENTIONS)}; got "
            f"{self.camera_convention!r}.")
    require(self.pc_nonfinite in NONFINITE_POLICIES,
            f"--pc_nonfinite: choose from {', '.join(NONFINITE_POLICIES)}; got {self.pc_nonfinite!r}.")


def _image_metrics(pred: eio.Prediction, gt: sc.Scene, opts: EvalOptions) -> dict[str, Any]:
  require(pred.rgb is not None, f"{pred.path}: rgb.mp4 is missing; the image metrics need it "
          "(or drop 'image' from --metrics).")
  bad = [i for i in opts.exclude_frames if not 0 <= i < pred.num_frames]
  require(not bad, f"--exclude_frames {bad} are outside the prediction's {pred.num_frames} frames.")
  keep = [i for i in range(pred.num_frames) if i not in set(opts.exclude_frames)]
  require(keep, "--exclude_frames removes every frame; nothing left to score.")
  x, y = pred.rgb[keep], gt.images[keep]
  out: dict[str, Any] = {"frames_scored": keep, "ssim_convention": opts.ssim_convention}
  per = {"psnr": np.asarray(img_metrics.psnr(x, y)),
         "ssim": np.asarray(img_metrics.ssim(x, y, convention=opts.ssim_convention))}
  if opts.lpips_weights:
    per["lpips"] = lpips.lpips_distance(load_lpips(opts.lpips_weights), x, y)
  else:
    out["notes"] = ["lpips skipped: no --lpips_weights given"]
  for k, v in per.items():
    out[k] = float(np.mean(v))
  out["per_frame"] = {k: [float(a) for a in v] for k, v in per.items()}
  return out


def _pointcloud_metrics(pred: eio.Prediction, gt: sc.Scene, opts: EvalOptions) -> dict[str, Any]:
  g_pts, g_valid = gt.world_points()
  p_pts, p_claimed = pred.point_map()
  require(p_pts.shape == g_pts.shape,
          f"point maps differ in shape: prediction {p_pts.shape}, ground truth {g_pts.shape}.")
  p_finite = np.isfinite(p_pts).all(-1)
  # The pixels that would be scored if every predicted point were finite, and the non-finite ones among them.
  scope = (g_valid & p_claimed) if opts.pc_mask == "valid" else np.ones(p_finite.shape, bool)
  nonfinite = scope & ~p_finite
  n_bad, n_scope = int(nonfinite.sum()), int(scope.sum())
  report = {"policy": opts.pc_nonfinite, "pixels": n_bad, "of": n_scope,
            "fraction": n_bad / n_scope if n_scope else 0.0}
  notes: list[str] = []
  if n_bad:
    msg = (f"{n_bad} of the {n_scope} prediction pixels in scope ({100.0 * report['fraction']:.3g}%) hold NaN "
           "or infinite points")
    require(opts.pc_nonfinite != "error", f"{pred.path}: {msg} (--pc_nonfinite=error); pass "
            "--pc_nonfinite=exclude or miss to score the rest.")
    msg += (": left out of both clouds (--pc_nonfinite=exclude)" if opts.pc_nonfinite == "exclude" else
            ": scored as misses, their ground-truth points kept (--pc_nonfinite=miss)")
    warnings.warn(msg, NonFinitePredictionWarning, stacklevel=3)
    notes.append(msg)

  p_in, g_in, miss = p_pts, g_pts, None
  if opts.pc_mask == "valid":
    mask = g_valid & p_claimed & (p_finite | (opts.pc_nonfinite == "miss"))
    miss = nonfinite if opts.pc_nonfinite == "miss" and n_bad else None
    require(mask.any(), "no pixel has both valid ground-truth depth and a valid prediction: the point "
            "clouds are empty.")
  else:
    mask = None
    if n_bad and opts.pc_nonfinite == "exclude":  # score every *finite* pixel (Path A on those)
      p_in, g_in = p_pts[p_finite], g_pts[p_finite]
    elif n_bad:
      miss = nonfinite
  out: dict[str, Any] = {"mask": opts.pc_mask, "voxel_size": opts.voxel_size, "num_points": opts.num_points,
                         "nonfinite": report}
  if mask is not None:
    out["valid_pixels"] = int((mask & ~nonfinite).sum())
  if notes:
    out["notes"] = notes
  for name in opts.pc_protocols:
    res = pc.chamfer_metrics(p_in, g_in, mask, protocol=name, voxel_size=opts.voxel_size,
                             num_points=opts.num_points, chunk=opts.nn_chunk, pred_missing=miss)
    out[name] = {**res.metrics(), "num_pred": res.num_pred, "num_gt": res.num_gt}
  return out


def _camera_metrics(pred: eio.Prediction, gt: sc.Scene, opts: EvalOptions) -> dict[str, Any]:
  require(pred.c2w is not None, f"{pred.path}: cameras.json is missing; the camera metrics need it "
          "(or drop 'camera' from --metrics).")
  return cam_metrics.camera_metrics(cam_metrics.inverse_se3(pred.c2w), cam_metrics.inverse_se3(gt.c2w),
                                    convention=opts.camera_convention)


def evaluate(pred_dir: str, gt_dir: str, opts: EvalOptions | None = None, *,
             progress: bool = False) -> dict[str, Any]:
  """Score one sample output directory against one ground-truth scene folder. ``progress``: one line on stderr
  as each step starts and ends (``launch/eval.py``; the point-cloud metrics take minutes on a CPU)."""
  opts = opts or EvalOptions()
  opts.validate()
  step = lambda msg: stage("eval", msg, enabled=progress)  # noqa: E731
  with step("reading the prediction"):
    pred = eio.read_prediction(pred_dir)
  frames = sc.read_transforms(gt_dir)
  size = pred.size
  require(size is not None or opts.metrics == ("camera",),
          f"{pred_dir}: no rgb.mp4, depth.npz or points.npz to take the evaluation resolution from.")
  idx = sc.select_frames(len(frames), pred.num_frames, source_indices=pred.source_indices,
                         start=opts.gt_start, stride=opts.gt_stride)
  with step(f"reading {len(idx)} ground-truth frames"):
    gt = sc.read_scene(gt_dir, idx, size or (1, 1), images="image" in opts.metrics,
                       depth="pointcloud" in opts.metrics, depth_png_scale=opts.depth_png_scale)
  result: dict[str, Any] = {"pred": pred_dir, "gt": gt_dir,
                            "frames": {"num": pred.num_frames, "gt_indices": idx, "size": list(size or ())}}
  if "image" in opts.metrics:
    with step("image metrics (PSNR, SSIM" + (", LPIPS)" if opts.lpips_weights else ")")):
      result["image"] = _image_metrics(pred, gt, opts)
  if "pointcloud" in opts.metrics:
    with step(f"point-cloud metrics ({', '.join(opts.pc_protocols)}: alignment, voxel + FPS subsampling, "
              "Chamfer)"):
      result["pointcloud"] = _pointcloud_metrics(pred, gt, opts)
  if "camera" in opts.metrics:
    with step("camera metrics (AUC)"):
      result["camera"] = _camera_metrics(pred, gt, opts)
  return result


def format_table(result: dict[str, Any]) -> str:
  """Human-readable summary of :func:`evaluate`'s result (the conventions used included)."""
  rows: list[tuple[str, str]] = []
  if "image" in result:
    r = result["image"]
    for k in ("psnr", "ssim", "lpips"):
      if k in r:
        rows.append((f"image/{k}", f"{r[k]:.6g}"))
    if "ssim_convention" in r:
      rows.append(("image/ssim_convention", r["ssim_convention"]))
    rows += [("image/note", n) for n in r.get("notes", [])]
  if "pointcloud" in result:
    r = result["pointcloud"]
    for proto in pc.PROTOCOLS:
      for k in ("accuracy", "completeness", "chamfer", "relative_percent"):
        if proto in r:
          rows.append((f"pointcloud/{proto}/{k}", f"{r[proto][k]:.6g}"))
    if "nonfinite" in r:
      nf = r["nonfinite"]
      rows.append(("pointcloud/nonfinite_pred", f"{nf['pixels']} of {nf['of']} pixels ({100.0 * nf['fraction']:.3g}%), "
                   f"policy {nf['policy']}"))
    rows += [("pointcloud/note", n) for n in r.get("notes", [])]
  if "camera" in result:
    r = result["camera"]
    for k in ("auc@30", "auc@15", "auc@10", "auc@5", "rra@30", "rta@30"):
      rows.append((f"camera/{k}", f"{r[k]:.4f}"))
    if "convention" in r:
      rows.append(("camera/convention", f"{r['convention']}: {r['relative_pose']}"))
  width = max([len(k) for k, _ in rows] + [6])
  lines = [f"{'metric':<{width}}  value", "-" * (width + 8)]
  lines += [f"{k:<{width}}  {v}" for k, v in rows]
  return "\n".join(lines)
