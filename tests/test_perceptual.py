"""The LPIPS wrapper: equal to lpips.LPIPS with the same AlexNet weights, frozen, offline, with clear errors.

Tests that need the real AlexNet weights read the safetensors path from TINYLDM_LPIPS_WEIGHTS and skip without it.
"""

import os
import urllib.error

import lpips
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tinyldm import perceptual
from tinyldm.data.shapes import Shapes
from tinyldm.perceptual import LPIPS, LPIPS_WEIGHTS_VAR

# lpips.LPIPS, built directly here as the reference, still passes torchvision's deprecated `pretrained=`.
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning")

WEIGHTS = os.environ.get(LPIPS_WEIGHTS_VAR)
needs_weights = pytest.mark.skipif(not WEIGHTS, reason=f"set {LPIPS_WEIGHTS_VAR} to an alexnet-features.safetensors "
                                   "file (torchvision AlexNet 'features.N.*' tensors) to run LPIPS offline")


@pytest.fixture(scope="module")
def metric():
    return LPIPS(backbone_weights=WEIGHTS)


@pytest.fixture(scope="module")
def shapes():
    data = Shapes(16, seed=1, split="test")
    return torch.stack([data[i]["image"] for i in range(16)])  # (16, 3, 32, 32)


@needs_weights
def test_equals_lpips_with_the_same_backbone_loaded_by_hand(metric, shapes):
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    state = load_file(WEIGHTS)
    slices = {0: 1, 1: 1, 3: 2, 4: 2, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5}  # layer index -> lpips slice
    reference.net.load_state_dict({f"slice{slices[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v
                                   for k, v in state.items()})
    x, y = shapes[:8], shapes[8:]
    torch.testing.assert_close(metric(x, y), reference(x, y).flatten())
    assert metric(x, y).shape == (8,)


@needs_weights
def test_the_env_var_is_read(monkeypatch):
    monkeypatch.setenv(LPIPS_WEIGHTS_VAR, WEIGHTS)
    a = LPIPS().model.net.slice1[0].weight
    torch.testing.assert_close(a, load_file(WEIGHTS)["features.0.weight"])


@needs_weights
def test_blur_scores_worse_than_a_one_pixel_shift(metric, shapes):
    """The lesson's claim: a 1-pixel shift costs more in PSNR than a light blur, but LPIPS, closer to how we see,
    finds the blur worse."""
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(shapes, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    shifted = torch.cat([shapes[..., :1], shapes[..., :-1]], dim=-1)
    mse_blur, mse_shift = ((blurred - shapes).square().mean(), (shifted - shapes).square().mean())
    assert mse_blur < 0.5 * mse_shift  # pixels: the blur is much closer
    assert metric(shapes, blurred).mean() > 1.3 * metric(shapes, shifted).mean()  # LPIPS: the blur is worse


@needs_weights
def test_frozen_eval_zero_on_identical_and_gradients_reach_the_inputs(metric, shapes):
    assert not any(p.requires_grad for p in metric.parameters())
    metric.train()
    assert not metric.training and not any(m.training for m in metric.modules())
    x = shapes[:2].clone().requires_grad_(True)
    assert metric(x, x.detach()).abs().max() < 1e-6
    d = metric(x, shapes[2:4])
    assert (d > 0).all()
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@needs_weights
def test_mismatched_inputs_are_named(metric):
    with pytest.raises(ValueError, match=r"same shape \(B, 3, H, W\), got \(1, 3, 32, 32\) and \(1, 3, 16, 16\)"):
        metric(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 16, 16))


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no AlexNet weights file at {tmp_path / 'absent.safetensors'}"):
        LPIPS(backbone_weights=tmp_path / "absent.safetensors")


def test_the_env_var_pointing_nowhere_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(LPIPS_WEIGHTS_VAR, str(tmp_path / "absent.safetensors"))
    with pytest.raises(FileNotFoundError, match=f"point {LPIPS_WEIGHTS_VAR}"):
        LPIPS()


def test_a_file_with_wrong_keys_is_named(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 11, 11), "features.0.bias": torch.zeros(64),
               "classifier.1.weight": torch.zeros(2, 2), "features.3.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=r"not a torchvision AlexNet 'features' state dict: missing \['features.10"
                                         r".bias'.*unexpected \['classifier.1.weight'\].*features.3.weight: file "
                                         r"\(1,\), AlexNet \(192, 64, 5, 5\)"):
        LPIPS(backbone_weights=path)


def test_offline_weights_are_only_for_alexnet(tmp_path):
    with pytest.raises(ValueError, match="gives AlexNet weights, but net='vgg'"):
        LPIPS(net="vgg", backbone_weights=tmp_path / "any.safetensors")


def test_a_failed_download_says_both_fixes(monkeypatch):
    def offline(**kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.delenv(LPIPS_WEIGHTS_VAR, raising=False)
    monkeypatch.setattr(perceptual.lpips, "LPIPS", offline)
    with pytest.raises(RuntimeError, match=f"set {LPIPS_WEIGHTS_VAR} to an alexnet-features.safetensors.*connect "
                                           "to the internet once"):
        LPIPS()


def test_building_does_not_move_the_global_rng(tmp_path):
    path = tmp_path / "zeros.safetensors"
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    save_file({f"features.{k.split('.', 1)[1]}": torch.zeros_like(v) for k, v in reference.net.state_dict().items()},
              str(path))
    torch.manual_seed(0)
    LPIPS(backbone_weights=path)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))
