"""Checkers for lesson 4, perceptual compression: the KL term, the hinge loss and the adaptive GAN weight."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from tinyldm.autoencoder import DiagonalGaussian
from tinyldm.autoencoder_loss import adaptive_weight
from tinyldm.discriminator import hinge_d_loss
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed

__all__ = ["check_gaussian_kl", "check_hinge_d_loss", "check_adaptive_weight"]


def check_gaussian_kl(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(mean, logvar) -> (B,)``, KL(N(mean, exp(logvar)) || N(0, I)) per image, summed over C, H, W
    (Kingma & Welling 2014, App. B)."""
    name = "gaussian_kl"
    gen = torch.Generator().manual_seed(4)
    mean = torch.randn(3, 4, 5, 5, generator=gen)
    logvar = torch.randn(3, 4, 5, 5, generator=gen)
    got = attempt(fn, mean.clone(), logvar.clone())
    if got is NOT_ATTEMPTED:
        not_attempted(name)
        return
    expect_close(
        name, got, DiagonalGaussian(mean, logvar).kl(), atol=1e-4,
        hint="per number, KL = 0.5 * (mean^2 + var - 1 - logvar) with var = exp(logvar); then sum over the "
        "channel and both spatial dimensions (dim=(1, 2, 3)), one value per image, not a mean",
    )
    passed(name, "one KL per image, summed over every latent number")


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
