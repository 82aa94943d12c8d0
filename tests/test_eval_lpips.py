"""LPIPS-AlexNet: random weights through the converter against an independent torch forward, and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gen3r_jax.convert.lpips import load_lpips
from gen3r_jax.errors import Gen3RInputError
from gen3r_jax.eval import lpips
from gen3r_jax.models.lpips import LPIPSConfig

_CONVS = [(0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1), (8, 384, 256, 3, 1, 1),
          (10, 256, 256, 3, 1, 1)]


def _random_state_dict(seed=0):
  """A state dict laid out as ``lpips.LPIPS(net='alex').state_dict()`` (random values)."""
  g = torch.Generator().manual_seed(seed)
  sd = {"scaling_layer.shift": torch.tensor([-.030, -.088, -.188])[None, :, None, None],
        "scaling_layer.scale": torch.tensor([.458, .448, .450])[None, :, None, None]}
  for k, (j, cin, cout, ks, _, _) in enumerate(_CONVS):
    sd[f"net.slice{k + 1}.{j}.weight"] = torch.randn(cout, cin, ks, ks, generator=g) * (2.0 / (cin * ks * ks)) ** 0.5
    sd[f"net.slice{k + 1}.{j}.bias"] = torch.randn(cout, generator=g) * 0.05
  for k, (_, _, cout, _, _, _) in enumerate(_CONVS):
    w = torch.rand(1, cout, 1, 1, generator=g) * 0.1
    sd[f"lin{k}.model.1.weight"] = w
    sd[f"lins.{k}.model.1.weight"] = w.clone()
  return sd


def _torch_lpips(sd, x0, x1):
  """LPIPS forward written from the paper / lpips package structure; inputs NCHW in [-1, 1]."""
  def feats(x):
    x = (x - sd["scaling_layer.shift"]) / sd["scaling_layer.scale"]
    out = []
    for k, (j, _, _, _, stride, pad) in enumerate(_CONVS):
      if k in (1, 2):
        x = F.max_pool2d(x, 3, 2)
      x = F.relu(F.conv2d(x, sd[f"net.slice{k + 1}.{j}.weight"], sd[f"net.slice{k + 1}.{j}.bias"], stride, pad))
      out.append(x)
    return out

  total = 0
  for k, (a, b) in enumerate(zip(feats(x0), feats(x1))):
    a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    total = total + F.conv2d((a - b) ** 2, sd[f"lin{k}.model.1.weight"]).mean((2, 3))
  return total[:, 0]


def test_lpips_matches_torch_forward(tmp_path):
  sd = _random_state_dict()
  path = tmp_path / "lpips_alex.pth"
  torch.save(sd, path)
  model = load_lpips(str(path))
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, size=(3, 64, 72, 3)).astype(np.float32)
  y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  ours = lpips.lpips_distance(model, x, y)
  to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2) * 2 - 1  # noqa: E731
  ref = _torch_lpips(sd, to_t(x), to_t(y)).numpy()
  assert ours.shape == (3,)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(lpips.lpips_distance(model, x, x), 0.0, atol=1e-6)


def test_lpips_loads_torchvision_plus_linear_heads(tmp_path):
  sd = _random_state_dict(1)
  backbone = {f"features.{j}.{p}": sd[f"net.slice{k + 1}.{j}.{p}"]
              for k, (j, *_rest) in enumerate(_CONVS) for p in ("weight", "bias")}
  backbone["classifier.1.weight"] = torch.zeros(4, 9216)  # dropped: not part of LPIPS
  heads = {f"lin{k}.model.1.weight": sd[f"lin{k}.model.1.weight"] for k in range(5)}
  torch.save(backbone, tmp_path / "alexnet.pth")
  torch.save(heads, tmp_path / "alex.pth")
  model = load_lpips(f"{tmp_path / 'alexnet.pth'},{tmp_path / 'alex.pth'}")
  np.testing.assert_allclose(np.asarray(model.convs[2].kernel[...]),
                             sd["net.slice3.6.weight"].permute(2, 3, 1, 0).numpy())
  np.testing.assert_allclose(np.asarray(model.lins[4].kernel[...])[:, 0], sd["lin4.model.1.weight"].flatten())


def test_lpips_missing_weights_messages(tmp_path):
  with pytest.raises(Gen3RInputError, match="lpips_weights"):
    load_lpips(None)
  with pytest.raises(Gen3RInputError, match="not found"):
    load_lpips(str(tmp_path / "nope.pth"))
  with pytest.raises(Gen3RInputError, match="only the AlexNet"):
    LPIPSConfig(net="vgg")
