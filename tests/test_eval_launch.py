"""End to end: a synthetic scene folder and a sample output directory through ``launch/eval.py``'s main."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.apps import evaluate
from gen3r_jax.eval import camera
from gen3r_jax.eval import io as eio

H, W, N_GT = 32, 48, 8
FX = 40.0


def _gt_cameras(n):
  c2w = np.tile(np.eye(4), (n, 1, 1))
  for k in range(n):
    c2w[k, :3, :3] = Rotation.from_euler("yx", [4.0 * k, 1.5 * k], degrees=True).as_matrix()
    c2w[k, :3, 3] = [0.15 * k, 0.02 * k, 0.05 * k]
  return c2w


def _depth(k):
  v, u = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
  return (2.0 + 0.3 * np.sin(3 * u + k) * np.cos(2 * v)).astype(np.float32)


def _image(k):
  v, u = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
  rgb = np.stack([0.5 + 0.4 * np.sin(2 * u + 0.3 * k), 0.5 + 0.4 * np.cos(3 * v), 0.3 + 0.3 * u * v], -1)
  return (rgb * 255).round().astype(np.uint8)


def make_scene(root, n=N_GT, depth=True):
  os.makedirs(os.path.join(root, "images"))
  if depth:
    os.makedirs(os.path.join(root, "depths"))
  frames = []
  for k, c2w in enumerate(_gt_cameras(n)):
    name = f"frame{k:05d}"
    Image.fromarray(_image(k)).save(os.path.join(root, "images", name + ".png"))
    if depth:
      np.save(os.path.join(root, "depths", name + ".npy"), _depth(k))
    frames.append({"file_path": f"images/{name}.png", "w": W, "h": H, "fl_x": FX, "fl_y": FX, "cx": W / 2,
                   "cy": H / 2, "transform_matrix": c2w.tolist()})
  with open(os.path.join(root, "transforms.json"), "w") as f:
    json.dump({"frames": frames}, f)
  with open(os.path.join(root, "captions.txt"), "w") as f:
    f.write("a synthetic scene\n")
  return root


def make_prediction(root, gt_indices, *, scale=2.5, source_index=False):
  """The ground truth itself, expressed in another world frame and scale (a perfect sample)."""
  rw = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
  tw = np.array([0.5, -1.0, 2.0])
  c2w = _gt_cameras(N_GT)[gt_indices]
  c2w_p = c2w.copy()
  c2w_p[:, :3, :3] = rw @ c2w[:, :3, :3]
  c2w_p[:, :3, 3] = scale * c2w[:, :3, 3] @ rw.T + tw
  K = np.tile(np.array([[FX, 0, W / 2], [0, FX, H / 2], [0, 0, 1.0]]), (len(gt_indices), 1, 1))
  eio.write_prediction(root, rgb=np.stack([_image(k) for k in gt_indices]),
                       depth=scale * np.stack([_depth(k) for k in gt_indices]), c2w=c2w_p, K=K,
                       source_indices=list(gt_indices) if source_index else None)
  return root


def _run_main(argv):
  from launch import eval as eval_launch
  try:
    eval_launch.flags.FLAGS(["eval.py"] + argv)
    return eval_launch.main([])
  finally:
    eval_launch.flags.FLAGS.unparse_flags()


def test_eval_main_end_to_end(tmp_path, capsys):
  gt = make_scene(str(tmp_path / "scene"))
  pred = make_prediction(str(tmp_path / "sample"), [1, 3, 5, 7])
  out = str(tmp_path / "metrics.json")
  rc = _run_main([f"--pred={pred}", f"--gt={gt}", "--gt_start=1", "--gt_stride=2", f"--output_json={out}",
                  "--num_points=1000", "--voxel_size=0.01"])
  assert rc == 0
  cap = capsys.readouterr()
  printed = cap.out
  assert "image/psnr" in printed and "camera/auc@30" in printed and "pointcloud/corrected/chamfer" in printed
  # progress: a line as each step starts and ends (plain lines: not a terminal)
  for step in ("reading the prediction", "reading 4 ground-truth frames", "image metrics", "point-cloud metrics",
               "camera metrics"):
    assert f"[eval] {step}" in cap.err and cap.err.count(f"[eval] {step}") == 2, cap.err
  assert "\r" not in cap.err and ": done (" in cap.err
  with open(out) as f:
    res = json.load(f)
  assert res["frames"]["gt_indices"] == [1, 3, 5, 7] and res["frames"]["size"] == [H, W]
  assert res["image"]["psnr"] > 28 and res["image"]["ssim"] > 0.9  # H.264 round trip of the GT frames
  assert "lpips skipped" in res["image"]["notes"][0]
  for proto in ("official", "corrected"):
    r = res["pointcloud"][proto]
    assert r["chamfer"] < 1e-3 and r["scale"] == pytest.approx(1 / 2.5, rel=1e-3)
  assert res["camera"]["auc@30"] == 1.0 and res["camera"]["num_pairs"] == 6


def test_eval_source_index_and_camera_only(tmp_path):
  gt = make_scene(str(tmp_path / "scene"), depth=False)
  pred = make_prediction(str(tmp_path / "sample"), [0, 2, 4], source_index=True)
  res = evaluate.evaluate(pred, gt, evaluate.EvalOptions(metrics=("camera",)))
  assert res["frames"]["gt_indices"] == [0, 2, 4]
  assert res["camera"]["auc@30"] == 1.0
  # A prediction with a wrong camera scores worse.
  cams = json.load(open(os.path.join(pred, "cameras.json")))
  c2w = np.asarray(cams["frames"][1]["c2w"])
  c2w[:3, :3] = Rotation.from_euler("z", 25, degrees=True).as_matrix() @ c2w[:3, :3]
  cams["frames"][1]["c2w"] = c2w.tolist()
  json.dump(cams, open(os.path.join(pred, "cameras.json"), "w"))
  res = evaluate.evaluate(pred, gt, evaluate.EvalOptions(metrics=("camera",)))
  assert res["camera"]["auc@30"] < 0.9


def test_eval_bad_inputs(tmp_path, capsys):
  gt_nodepth = make_scene(str(tmp_path / "scene"), depth=False)
  pred = make_prediction(str(tmp_path / "sample"), [0, 1, 2])
  with pytest.raises(Gen3RInputError, match="mismatched frame counts"):
    evaluate.evaluate(pred, gt_nodepth)
  with pytest.raises(Gen3RInputError, match="ground-truth depth is missing"):
    evaluate.evaluate(pred, gt_nodepth, evaluate.EvalOptions(metrics=("pointcloud",), gt_start=0))
  os.remove(os.path.join(gt_nodepth, "transforms.json"))
  with pytest.raises(Gen3RInputError, match="ground-truth cameras missing"):
    evaluate.evaluate(pred, gt_nodepth)
  gt = make_scene(str(tmp_path / "scene2"))
  os.remove(os.path.join(pred, "cameras.json"))
  with pytest.raises(Gen3RInputError, match="cameras.json is missing"):
    evaluate.evaluate(pred, gt, evaluate.EvalOptions(metrics=("camera",), gt_stride=1))
  with pytest.raises(Gen3RInputError, match="outside the scene"):
    evaluate.evaluate(pred, gt, evaluate.EvalOptions(metrics=("image",), gt_start=6, gt_stride=1))
  # Through main: a clear one-line error and a non-zero exit code.
  assert _run_main([f"--pred={tmp_path / 'missing'}", f"--gt={gt}"]) == 2
  assert "prediction directory not found" in capsys.readouterr().err


def test_camera_conventions_of_the_pipeline(tmp_path):
  """cameras.json / transforms.json hold c2w; the metric receives w2c (their inverse)."""
  c2w = _gt_cameras(3)
  w2c = camera.inverse_se3(c2w)
  np.testing.assert_allclose(w2c @ c2w, np.tile(np.eye(4), (3, 1, 1)), atol=1e-12)


def test_nonfinite_prediction_pixels_are_reported_and_scored_by_policy(tmp_path):
  """NaN depth in the prediction: counted, warned, and excluded (default), scored as misses, or refused."""
  gt = make_scene(str(tmp_path / "scene"), n=3)
  pred = make_prediction(str(tmp_path / "sample"), [0, 1, 2])
  with np.load(os.path.join(pred, "depth.npz")) as z:
    depth = z["depth"].copy()
  depth[:, :, : W // 3] = np.nan  # the left third of every frame: a region no other frame covers
  np.savez(os.path.join(pred, "depth.npz"), depth=depth)
  base = dict(metrics=("pointcloud",), pc_protocols=("corrected",), num_points=800, voxel_size=0.02)
  res = {}
  for policy in ("exclude", "miss"):
    with pytest.warns(evaluate.NonFinitePredictionWarning, match=r"1536 of the 4608 .*\(33\.3%\)"):
      res[policy] = evaluate.evaluate(pred, gt, evaluate.EvalOptions(pc_nonfinite=policy, **base))["pointcloud"]
    nf = res[policy]["nonfinite"]
    assert nf == {"policy": policy, "pixels": 3 * H * (W // 3), "of": 3 * H * W, "fraction": pytest.approx(1 / 3)}
    assert policy in res[policy]["notes"][0]
  ex, miss = res["exclude"]["corrected"], res["miss"]["corrected"]
  assert ex["chamfer"] < 1e-3  # what is left is perfect
  # The uncovered third is a miss: completeness grows by orders of magnitude (accuracy only by the sparser FPS
  # sampling of the larger ground-truth cloud).
  assert miss["completeness"] > 1e4 * ex["completeness"] and miss["completeness"] > 2 * miss["accuracy"]
  assert res["exclude"]["valid_pixels"] == res["miss"]["valid_pixels"] == 3 * H * (W - W // 3)
  with pytest.raises(Gen3RInputError, match=r"hold NaN or infinite points \(--pc_nonfinite=error\)"):
    evaluate.evaluate(pred, gt, evaluate.EvalOptions(pc_nonfinite="error", **base))
  # --pc_mask=none (every pixel) takes both policies too, and a clean prediction reports zero.
  for policy in ("exclude", "miss"):
    with pytest.warns(evaluate.NonFinitePredictionWarning):
      r = evaluate.evaluate(pred, gt, evaluate.EvalOptions(pc_nonfinite=policy, pc_mask="none", **base))
    assert r["pointcloud"]["nonfinite"]["pixels"] == 3 * H * (W // 3)
  clean = make_prediction(str(tmp_path / "clean"), [0, 1, 2])
  r = evaluate.evaluate(clean, gt, evaluate.EvalOptions(**base))["pointcloud"]
  assert r["nonfinite"]["pixels"] == 0 and "notes" not in r


def test_eval_cli_reports_conventions(tmp_path, capsys):
  gt = make_scene(str(tmp_path / "scene"), n=3, depth=False)
  pred = make_prediction(str(tmp_path / "sample"), [0, 1, 2])
  out = str(tmp_path / "m.json")
  assert _run_main([f"--pred={pred}", f"--gt={gt}", "--metrics=image,camera", f"--output_json={out}"]) == 0
  printed = capsys.readouterr().out
  assert re.search(r"image/ssim_convention\s+torchmetrics", printed)
  assert re.search(r"camera/convention\s+vggt: E_i inv\(E_j\)", printed)
  res = json.load(open(out))
  assert res["image"]["ssim_convention"] == "torchmetrics" and res["camera"]["convention"] == "vggt"
  assert _run_main([f"--pred={pred}", f"--gt={gt}", "--metrics=image,camera", f"--output_json={out}",
                    "--ssim=skimage", "--camera_convention=vggt_early"]) == 0
  assert "vggt_early" in capsys.readouterr().out
  res2 = json.load(open(out))
  assert res2["image"]["ssim_convention"] == "skimage" and res2["camera"]["convention"] == "vggt_early"
  assert res2["image"]["ssim"] != res["image"]["ssim"]
