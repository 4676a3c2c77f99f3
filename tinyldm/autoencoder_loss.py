"""The autoencoder's training objective: pixels + LPIPS + KL + a PatchGAN with the adaptive weight.

Each term fixes a failure of the others (Esser et al. 2021, Sec. 3.1; Rombach et al. 2022, App. G):

- L1 on pixels gets colours and positions right, but averaging over possible details gives blur.
- LPIPS (``tinyldm.perceptual``) compares the images as a pretrained network sees them, which penalises blur.
- A tiny KL term toward N(0, I) keeps the latents from growing without bound; it is far too small to make them
  Gaussian, so the latents are rescaled afterwards (``autoencoder.estimate_scale_factor``).
- A patch discriminator (``tinyldm.discriminator``) calls blurry or artificial patches fake. It joins only after
  ``disc_start`` steps, once reconstructions are already decent, and its term is weighted adaptively so that its
  gradient on the decoder's last layer is as large as the reconstruction loss's (Esser et al. 2021, Eq. 7).
  ``disc_warmup`` lets the discriminator train alone for a while before its term joins. On photographs that
  alone does not save the game at ``disc_weight`` 0.5: the autoencoder fools a well-trained discriminator within
  a few steps and it falls back to a constant output; a GAN weight of 0.1 keeps it learning (the measurements are
  in ``tinyldm.jobs.autoencoder.with_loss_recipe``).

The generator (encoder + decoder) and the discriminator have separate losses and optimisers; a training loop calls
``generator_loss`` and ``discriminator_loss`` in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from tinyldm.autoencoder import DiagonalGaussian
from tinyldm.discriminator import (
    GAN_LOSSES,
    NORMS,
    DiscriminatorConfig,
    PatchDiscriminator,
    generator_adversarial_loss,
    hinge_d_loss,
    vanilla_d_loss,
)
from tinyldm.perceptual import LPIPS

__all__ = ["AutoencoderLossConfig", "AutoencoderLoss", "adaptive_weight", "PIXEL_LOSSES"]

PIXEL_LOSSES = ("l1", "l2")


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4,
                    eps: float = 1e-4, average: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The weight that balances the GAN term against the reconstruction term (Esser et al. 2021, Eq. 7):

        lambda = ||grad_{G_L}(L_rec)|| / (||grad_{G_L}(L_GAN)|| + eps),  clamped to [0, max_weight],

    where G_L is the decoder's last layer. Scaled by it, the GAN's gradient there is as large as the
    reconstruction's, whatever their raw sizes: the discriminator can sharpen detail but never take over.

    Args:
        rec_loss: scalar reconstruction (pixel + perceptual) loss, still attached to the graph.
        g_loss: scalar adversarial loss of the generator, attached to the same graph.
        last_layer: the decoder's last weight (``AutoencoderKL.last_layer``).
        max_weight: upper clamp.
        eps: keeps the ratio finite when the GAN gradient vanishes.
        average: averages a gradient over data-parallel processes (the training loop passes
            ``tinyldm.training.distributed.mean_over_processes``); None for a single process.
    Returns:
        Scalar, detached: no gradient flows through the weight itself.
    """
    rec_grad, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    if average is not None:
        # Data-parallel: each process holds its share's gradients; the global batch's are their mean.
        rec_grad, g_grad = average(rec_grad), average(g_grad)
    weight = rec_grad.norm() / (g_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


@dataclass
class AutoencoderLossConfig:
    """Weights and schedule of ``AutoencoderLoss``; the discriminator's fields are flat so the config stays one
    JSON object (``discriminator_config()`` builds its ``DiscriminatorConfig``)."""

    pixel_loss: str = "l1"  # "l1" (taming, LDM: sharper) or "l2" (the Gaussian likelihood of a plain VAE)
    pixel_weight: float = 1.0  # weight of the per-pixel loss
    perceptual_weight: float = 1.0  # weight of LPIPS; 0 turns it off and no LPIPS network is built
    # Weight of KL(q(z|x) || N(0, I)) per image (summed over the latent) against the *mean* reconstruction loss.
    # LDM's 1e-6 sits against a per-image *sum* over pixels, so it is H*W*C times weaker than the same number here.
    kl_weight: float = 1e-6
    disc_weight: float = 0.5  # weight of the GAN term on top of the adaptive weight; 0 turns the GAN off
    disc_start: int = 2000  # generator step at which the discriminator's training begins
    # Steps after disc_start during which the discriminator trains alone, before its term enters the autoencoder's
    # loss (at disc_start + disc_warmup); 0: both start together, as in taming.
    disc_warmup: int = 0
    disc_loss: str = "hinge"  # "hinge" (taming) or "vanilla" (non-saturating cross-entropy)
    image_channels: int = 3  # channels of the images, the discriminator's input (1 or 3 when LPIPS is on)
    disc_channels: int = 64  # DiscriminatorConfig.base_channels
    disc_layers: int = 3  # DiscriminatorConfig.num_layers: 3 judges 70x70 patches, 2 judges 34x34
    disc_norm: str = "group"  # DiscriminatorConfig.norm: "group", "batch" or "spectral"
    disc_groups: int = 32  # DiscriminatorConfig.groups
    max_adaptive_weight: float = 1e4  # clamp of the adaptive weight (Esser et al. 2021 code)

    @classmethod
    def tiny(cls) -> AutoencoderLossConfig:
        """A narrow 34x34-patch discriminator that starts after 50 steps: tests and quick runs."""
        return cls(disc_start=50, disc_channels=16, disc_layers=2, disc_groups=8)

    def discriminator_config(self) -> DiscriminatorConfig:
        """The ``DiscriminatorConfig`` these fields describe."""
        return DiscriminatorConfig(in_channels=self.image_channels, base_channels=self.disc_channels,
                                   num_layers=self.disc_layers, norm=self.disc_norm, groups=self.disc_groups)

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range, and how to fix it."""
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"AutoencoderLossConfig.pixel_loss must be one of {PIXEL_LOSSES}, got "
                             f"{self.pixel_loss!r}")
        if self.disc_loss not in GAN_LOSSES:
            raise ValueError(f"AutoencoderLossConfig.disc_loss must be one of {GAN_LOSSES}, got {self.disc_loss!r}")
        if self.disc_norm not in NORMS:
            raise ValueError(f"AutoencoderLossConfig.disc_norm must be one of {NORMS}, got {self.disc_norm!r}")
        for name in ("pixel_weight", "perceptual_weight", "kl_weight", "disc_weight", "max_adaptive_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"AutoencoderLossConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("disc_start", "disc_warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"AutoencoderLossConfig.{name} must be an int >= 0, got {value!r}")
        if self.perceptual_weight > 0 and self.image_channels not in (1, 3):
            raise ValueError(f"LPIPS needs RGB or grey images, but image_channels={self.image_channels}; set "
                             "perceptual_weight=0")
        self.discriminator_config().validate()


def _zero(device: torch.device) -> Tensor:
    return torch.zeros((), device=device)


class AutoencoderLoss(nn.Module):
    """The generator and discriminator losses of the KL autoencoder (Esser et al. 2021, Eq. 6-7; Rombach et al.
    2022, App. G).

    Holds the LPIPS network (only when perceptual_weight > 0) and the PatchDiscriminator (only when
    disc_weight > 0), so ``.to(device)`` moves them together and the discriminator's weights live in
    ``state_dict()`` (LPIPS is frozen and left out of it: it is rebuilt from its own files).

    Args:
        config: the loss settings; ``AutoencoderLossConfig()`` when None.
        lpips: an already-built ``LPIPS`` to share (e.g. with the evaluation); built here when None and needed.
        generator: source of the discriminator's initial weights.
    """

    def __init__(self, config: AutoencoderLossConfig | None = None, lpips: LPIPS | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.config = config = config if config is not None else AutoencoderLossConfig()
        config.validate()
        if config.perceptual_weight > 0:
            # Kept out of the module tree: a frozen metric's weights do not belong in training checkpoints.
            self.__dict__["lpips"] = lpips if lpips is not None else LPIPS()
        else:
            self.__dict__["lpips"] = None
        self.discriminator = PatchDiscriminator(config.discriminator_config(), generator=generator) \
            if config.disc_weight > 0 else None

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .half() must reach the LPIPS network too, although it is not a registered submodule.
        if self.lpips is not None:
            self.lpips._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def discriminator_active(self, step: int) -> bool:
        """Whether the discriminator trains at generator step ``step`` (from ``disc_start`` on)."""
        return self.discriminator is not None and step >= self.config.disc_start

    def adversarial_active(self, step: int) -> bool:
        """Whether the GAN term is in the autoencoder's loss at generator step ``step``: from
        ``disc_start + disc_warmup`` on, once the discriminator has trained alone for ``disc_warmup`` steps."""
        return self.discriminator is not None and step >= self.config.disc_start + self.config.disc_warmup

    def _perceptual(self, x: Tensor, reconstruction: Tensor) -> Tensor:
        if x.shape[1] == 1:  # LPIPS's backbone wants RGB: grey images are repeated over three channels
            x, reconstruction = x.expand(-1, 3, -1, -1), reconstruction.expand(-1, 3, -1, -1)
        return self.lpips(x, reconstruction)  # (B,)

    def generator_loss(self, x: Tensor, reconstruction: Tensor, posterior: DiagonalGaussian, step: int,
                       last_layer: Tensor, average: Callable[[Tensor], Tensor] | None = None
                       ) -> tuple[Tensor, dict[str, float]]:
        """The encoder-decoder loss: nll + kl_weight * KL + lambda * disc_weight * L_GAN (once step >= disc_start +
        disc_warmup).

        nll = mean over pixels of pixel_weight * |x - x_rec| plus perceptual_weight * LPIPS(x, x_rec) per image
        (taming's "nll" with a fixed unit variance). The discriminator judges the reconstruction, but with its own
        weights frozen here: this loss trains only the autoencoder. Under ``torch.no_grad`` (validation) the
        adaptive weight cannot be computed and is 0, as in the taming code.

        Args:
            x: (B, C, H, W) images in [-1, 1].
            reconstruction: (B, C, H, W) the decoder's output.
            posterior: q(z|x) from the encoder.
            step: the generator's optimiser step (0-based).
            last_layer: ``AutoencoderKL.last_layer``.
            average: averages the adaptive weight's gradients over data-parallel processes (see
                ``adaptive_weight``); None for a single process.
        Returns:
            (scalar loss, logs): logs hold python floats under the same keys at every step: the pixel loss under
            its name ("l1" or "l2"), "lpips", "nll", "kl", "g_loss", "adaptive_weight", "total"; a term that is
            off logs 0.
        """
        cfg = self.config
        if x.shape != reconstruction.shape:
            raise ValueError(f"x and reconstruction must have the same shape, got {tuple(x.shape)} and "
                             f"{tuple(reconstruction.shape)}")
        diff = reconstruction - x
        pixel = (diff.abs() if cfg.pixel_loss == "l1" else diff.square()).mean()
        lpips = self._perceptual(x, reconstruction).mean() if self.lpips is not None else _zero(x.device)
        nll = cfg.pixel_weight * pixel + cfg.perceptual_weight * lpips
        kl = posterior.kl().mean()  # per image, summed over the latent
        loss = nll + cfg.kl_weight * kl
        g_loss, weight = _zero(x.device), _zero(x.device)
        if self.adversarial_active(step):
            self.discriminator.requires_grad_(False)
            try:
                g_loss = generator_adversarial_loss(self.discriminator(reconstruction), cfg.disc_loss)
            finally:
                self.discriminator.requires_grad_(True)
            if torch.is_grad_enabled() and nll.requires_grad:
                weight = adaptive_weight(nll, g_loss, last_layer, cfg.max_adaptive_weight, average=average)
            loss = loss + weight * cfg.disc_weight * g_loss
        logs = {cfg.pixel_loss: pixel, "lpips": lpips, "nll": nll, "kl": kl, "g_loss": g_loss,
                "adaptive_weight": weight, "total": loss}
        return loss, {k: float(v.detach()) for k, v in logs.items()}

    def discriminator_loss(self, x: Tensor, reconstruction: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        """The discriminator's loss on real images and (detached) reconstructions: hinge or vanilla.

        Before ``disc_start`` (or with the GAN off) it is a constant 0 with no graph: skip the discriminator's
        optimiser step then (``discriminator_active(step)`` says when).

        Args:
            x: (B, C, H, W) real images in [-1, 1].
            reconstruction: (B, C, H, W) the decoder's output; detached here.
            step: the generator's optimiser step (0-based).
        Returns:
            (scalar loss, logs with "d_loss", "logits_real", "logits_fake" as python floats).
        """
        if not self.discriminator_active(step):
            return _zero(x.device), {"d_loss": 0.0, "logits_real": 0.0, "logits_fake": 0.0}
        logits_real = self.discriminator(x.detach())  # (B, 1, h, w)
        logits_fake = self.discriminator(reconstruction.detach())  # (B, 1, h, w)
        d_loss = (hinge_d_loss if self.config.disc_loss == "hinge" else vanilla_d_loss)(logits_real, logits_fake)
        logs = {"d_loss": float(d_loss.detach()), "logits_real": float(logits_real.detach().mean()),
                "logits_fake": float(logits_fake.detach().mean())}
        return d_loss, logs

    def extra_repr(self) -> str:
        return f"lpips={'on' if self.lpips is not None else 'off'}"
