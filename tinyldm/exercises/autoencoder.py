"""Checkers for lesson 4, perceptual compression: a distortion only the pixels notice, the hinge loss and the
adaptive GAN weight."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from tinyldm.autoencoder_loss import adaptive_weight
from tinyldm.data.photos import photos_tensor
from tinyldm.discriminator import hinge_d_loss
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed

__all__ = ["check_mse_blind_spot", "check_hinge_d_loss", "check_adaptive_weight", "BLIND_SPOT_MSE", "BLIND_SPOT_LPIPS"]


BLIND_SPOT_IMAGES = 64  # test-photo crops (seed 1) the blind-spot experiment distorts
BLIND_SPOT_MSE = 4.0  # the distortion's MSE must be at least this many times the blur's ...
BLIND_SPOT_LPIPS = 0.25  # ... and its LPIPS at most this fraction of the blur's


def _blur(x: torch.Tensor) -> torch.Tensor:
    """The reference distortion: a 7x7 Gaussian blur of sigma 1 pixel (borders reflected)."""
    return gaussian_blur(x, kernel_size=[7, 7], sigma=[1.0, 1.0])


def check_mse_blind_spot(fn: Callable[[torch.Tensor], torch.Tensor], lpips: nn.Module) -> None:
    """Experiment: ``fn(images) -> distorted images`` that a pixel loss calls a far larger change than a slight blur
    (MSE at least BLIND_SPOT_MSE times the blur's) and LPIPS a far smaller one (at most BLIND_SPOT_LPIPS of the
    blur's), on crops of the test photographs; ``lpips`` is the ``tinyldm.perceptual.LPIPS`` that measures it."""
    name = "mse_blind_spot"
    x = photos_tensor(BLIND_SPOT_IMAGES, 32, seed=1, split="test")
    got = attempt(fn, x.clone())
    if got is NOT_ATTEMPTED:
        return not_attempted(name)
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise AssertionError(f"{name}: return images shaped like the input {tuple(x.shape)}, got {shape}")
    if not torch.isfinite(got).all() or got.min() < -1 or got.max() > 1:
        raise AssertionError(f"{name}: pictures live in [-1, 1]; clamp what you return (x.clamp(-1, 1))")
    with torch.no_grad():
        mse = {k: ((x - y) / 2).square().mean().item() for k, y in (("yours", got), ("blur", _blur(x)))}
        dist = {k: lpips(x, y).mean().item() for k, y in (("yours", got), ("blur", _blur(x)))}
    ratios = f"MSE {mse['yours'] / mse['blur']:.1f}x the blur's, LPIPS {dist['yours'] / dist['blur']:.2f}x"
    if mse["yours"] < BLIND_SPOT_MSE * mse["blur"]:
        raise AssertionError(f"{name}: {ratios}; the pixels must change more, at least {BLIND_SPOT_MSE:.0f}x the "
                             "blur's MSE. Hint: change every pixel, by the same amount or by moving the picture")
    if dist["yours"] > BLIND_SPOT_LPIPS * dist["blur"]:
        raise AssertionError(f"{name}: {ratios}; LPIPS must stay below {BLIND_SPOT_LPIPS}x the blur's. Hint: which "
                             "changes leave the edges and textures where they were (section 4's table)?")
    return passed(name, f"{ratios}: a pixel loss and a perceptual one disagree on what changed")


def check_hinge_d_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(logits_real, logits_fake) -> scalar``, the discriminator's hinge loss over per-patch logits."""
    name = "hinge_d_loss"
    cases = [
        (torch.tensor([[[[2.0, 0.5], [-1.0, 1.0]]]]), torch.tensor([[[[-2.0, 0.0], [0.5, -0.5]]]])),
        (torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(5)),
         torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(6))),
    ]
    for real, fake in cases:
        got = attempt(fn, real.clone(), fake.clone())
        if got is NOT_ATTEMPTED:
            not_attempted(name)
            return
        expect_close(
            name, got, hinge_d_loss(real, fake),
            hint="a real patch costs relu(1 - logit) (nothing once it is scored above +1), a fake patch "
            "relu(1 + logit) (nothing below -1); average each over all patches and images, add the two and halve",
        )
    passed(name, "real patches above +1 and fake ones below -1 cost nothing")


def _toy_autoencoder_losses(seed: int) -> tuple[torch.Tensor, torch.Tensor, nn.Parameter]:
    """A two-layer toy decoder, a reconstruction loss and a GAN-like loss that share its last layer."""
    gen = torch.Generator().manual_seed(seed)
    hidden = nn.Linear(6, 8)
    last = nn.Linear(8, 6)
    with torch.no_grad():
        for p in (*hidden.parameters(), *last.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    z, target = torch.randn(5, 6, generator=gen), torch.randn(5, 6, generator=gen)
    out = last(torch.tanh(hidden(z)))
    rec_loss = (out - target).abs().mean()
    g_loss = -out.sum(1).mean() * 0.01  # small on purpose: the weight must scale it up
    return rec_loss, g_loss, last.weight


def check_adaptive_weight(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(rec_loss, g_loss, last_layer) -> scalar``, lambda of Esser et al. 2021, Eq. 7."""
    name = "adaptive_weight"
    for seed in (0, 1):
        rec_loss, g_loss, last_layer = _toy_autoencoder_losses(seed)
        got = attempt(fn, rec_loss, g_loss, last_layer)
        if got is NOT_ATTEMPTED:
            not_attempted(name)
            return
        hint = ("take the gradient of each loss with respect to last_layer only (torch.autograd.grad(loss, "
                "last_layer, retain_graph=True), so the graph survives for the second call), then "
                "norm(grad_rec) / (norm(grad_gan) + 1e-4), clamped to [0, 1e4] and detached")
        if isinstance(got, torch.Tensor) and got.requires_grad:
            raise AssertionError(f"{name}: the weight still carries a gradient; it must be a constant factor, or "
                                 f"the GAN term would be trained to shrink its own weight. Hint: {hint}")
        expected = adaptive_weight(rec_loss, g_loss, last_layer)
        expect_close(name, got, expected, hint=hint, atol=1e-3)
    passed(name, "scales the GAN gradient at the decoder's last layer to the size of the reconstruction's")
