"""LPIPS, the learned perceptual distance, with a way to run it offline.

Pixel losses treat every pixel alike, so a blurry reconstruction that is right on average scores well. LPIPS
(Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", Eq. 1) compares
images in the feature space of an ImageNet classifier instead: at each layer l it unit-normalises the features
over channels, takes the squared difference, weights the channels with a learned w_l (fitted to human judgements
of which of two distortions looks closer), and averages over space; the layers' scores add up:

    d(x, y) = sum_l mean_hw || w_l * (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|) ||^2.

The ``lpips`` package does this maths and ships the w_l; the AlexNet backbone it builds on comes from torchvision,
which downloads it on first use. Without a network, point ``TINYLDM_LPIPS_WEIGHTS`` (or ``backbone_weights``) at a
safetensors file of torchvision's AlexNet ``features.N.*`` tensors, and the backbone is loaded from there instead.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lpips
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

__all__ = ["LPIPS", "LPIPS_WEIGHTS_VAR", "load_alexnet_features"]

LPIPS_WEIGHTS_VAR = "TINYLDM_LPIPS_WEIGHTS"


def _build(**kwargs) -> lpips.LPIPS:
    with warnings.catch_warnings():
        # lpips still calls torchvision's deprecated `pretrained=` argument; the warning is not ours to fix.
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        return lpips.LPIPS(verbose=False, **kwargs)


def load_alexnet_features(model: lpips.LPIPS, path: str | os.PathLike) -> None:
    """Load torchvision-named AlexNet ``features.N.weight`` / ``features.N.bias`` tensors into an LPIPS backbone.

    The ``lpips`` package splits ``alexnet().features`` into five slices but keeps each layer's index as its name
    (slice2 holds layers "2", "3", "4"), so ``features.3.weight`` belongs to ``slice2.3.weight``. Every tensor of
    the backbone must be in the file and every tensor in the file must find a place, with the same shape.

    Args:
        model: an ``lpips.LPIPS(net='alex')`` whose backbone is to be overwritten.
        path: the safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no AlexNet weights file at {path}; point {LPIPS_WEIGHTS_VAR} (or backbone_weights) "
                                "at a safetensors file of torchvision AlexNet 'features.N.*' tensors")
    state = load_file(path, device="cpu")
    targets = {}  # "features.N.weight" -> the backbone's tensor
    for slice_ in model.net.children():
        for index, layer in slice_.named_children():
            for name, tensor in layer.named_parameters(recurse=False):
                targets[f"features.{index}.{name}"] = tensor
    missing, unexpected = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
    wrong = [f"{k}: file {tuple(state[k].shape)}, AlexNet {tuple(t.shape)}" for k, t in targets.items()
             if k in state and state[k].shape != t.shape]
    if missing or unexpected or wrong:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {unexpected}"] if unexpected else []) \
            + ([f"shape mismatches {wrong}"] if wrong else [])
        raise ValueError(f"{path} is not a torchvision AlexNet 'features' state dict: " + "; ".join(parts)
                         + f". Expected exactly the keys {sorted(targets)}")
    with torch.no_grad():
        for key, tensor in targets.items():
            tensor.copy_(state[key])


class LPIPS(nn.Module):
    """The LPIPS distance (Zhang et al. 2018, Eq. 1), frozen and always in eval mode.

    Args:
        net: the backbone, "alex" (the default of LPIPS and of the CompVis losses), "vgg" or "squeeze".
        backbone_weights: a safetensors file of AlexNet ``features.N.*`` tensors to load instead of downloading;
            when None, the path in the ``TINYLDM_LPIPS_WEIGHTS`` environment variable is used if set. Only "alex"
            can be loaded this way.
    """

    def __init__(self, net: str = "alex", backbone_weights: str | os.PathLike | None = None):
        super().__init__()
        source = "backbone_weights"
        if backbone_weights is None and os.environ.get(LPIPS_WEIGHTS_VAR):
            backbone_weights, source = os.environ[LPIPS_WEIGHTS_VAR], LPIPS_WEIGHTS_VAR
        if backbone_weights is not None:
            if net != "alex":
                raise ValueError(f"{source} gives AlexNet weights, but net={net!r}; use net='alex', or unset "
                                 f"{LPIPS_WEIGHTS_VAR} to let torchvision download the {net} weights")
            # pnet_rand: build the backbone without downloading; its random weights are all overwritten below. The
            # forked RNG keeps that throw-away initialisation from moving the caller's global random state.
            with torch.random.fork_rng(devices=[]):
                self.model = _build(net="alex", pnet_rand=True)
            load_alexnet_features(self.model, backbone_weights)
        else:
            try:
                self.model = _build(net=net)
            except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
                raise RuntimeError(
                    f"LPIPS could not get the ImageNet {net} weights from torchvision ({error}). Either pass "
                    f"backbone_weights= or set {LPIPS_WEIGHTS_VAR} to an alexnet-features.safetensors file "
                    "(torchvision AlexNet 'features.N.*' tensors), or connect to the internet once so that "
                    "torchvision caches the weights (in $TORCH_HOME/hub/checkpoints)") from error
        self.net = net
        self.model.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode whatever is asked: LPIPS is a fixed metric, and its dropout must stay off."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Perceptual distance between two batches; gradients flow to both.

        Args:
            x: (B, 3, H, W) images in [-1, 1].
            y: (B, 3, H, W) images in [-1, 1].
        Returns:
            (B,) distances, 0 for identical images.
        """
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape or x.ndim != 4 \
                or x.shape[1] != 3:
            shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (x, y)]
            raise ValueError(f"LPIPS compares two RGB batches of the same shape (B, 3, H, W), got {shapes[0]} and "
                             f"{shapes[1]}")
        return self.model(x, y).reshape(x.shape[0])  # (B, 1, 1, 1) -> (B,)

    def extra_repr(self) -> str:
        return f"net={self.net!r}"
