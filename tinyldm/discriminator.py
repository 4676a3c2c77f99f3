"""The PatchGAN discriminator and the GAN losses that train the autoencoder to draw sharp detail.

L1 and LPIPS alone let a decoder hedge its bets with a little blur. A discriminator that calls every patch of an
image real or fake punishes that blur (Isola et al. 2017, "pix2pix", Sec. 3.2.2; Esser et al. 2021, "taming
transformers", Sec. 3.1). It is a stack of 4x4 convolutions: stride 2 to grow the receptive field quickly, then
stride 1, so each output logit judges one patch of the input (70x70 pixels with three stride-2 layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinyldm.attention import group_norm
from tinyldm.pretrained import PretrainedMixin

__all__ = ["DiscriminatorConfig", "PatchDiscriminator", "hinge_d_loss", "vanilla_d_loss",
           "generator_adversarial_loss", "GAN_LOSSES", "NORMS"]

GAN_LOSSES = ("hinge", "vanilla")
NORMS = ("group", "batch", "spectral")


@dataclass
class DiscriminatorConfig:
    """Hyperparameters of ``PatchDiscriminator``."""

    in_channels: int = 3  # channels of the images it judges
    base_channels: int = 64  # width of the first layer; layer n has base_channels * min(2**n, 8)
    num_layers: int = 3  # stride-2 layers after the first (3 gives pix2pix's 70x70 patches)
    # "group": GroupNorm, the default here: it does not depend on the batch, so real and fake batches (judged
    # separately) are normalised alike and train/eval behave the same. "batch": BatchNorm, as in pix2pix and taming.
    # "spectral": no normalisation layer; every convolution's weight is divided by its largest singular value
    # (Miyato et al. 2018), which bounds how fast the logits can change with the input.
    norm: str = "group"
    groups: int = 32  # GroupNorm groups (fewer when a width is not a multiple)

    @classmethod
    def tiny(cls) -> DiscriminatorConfig:
        """Narrow, with 34x34 patches: tests and 32x32 quick runs."""
        return cls(base_channels=16, num_layers=2, groups=8)

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot build a discriminator, and how to fix it."""
        for name in ("in_channels", "base_channels", "num_layers", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DiscriminatorConfig.{name} must be a positive int, got {value!r}")
        if self.norm not in NORMS:
            raise ValueError(f"DiscriminatorConfig.norm must be one of {NORMS}, got {self.norm!r}")


class PatchDiscriminator(PretrainedMixin, nn.Module):
    """The pix2pix / taming NLayerDiscriminator: per-patch real/fake logits (Isola et al. 2017, Sec. 3.2.2).

    Weights start from N(0, 0.02) (norm scales from N(1, 0.02)) as in DCGAN (Radford et al. 2016, Sec. 4).
    ``save_pretrained`` / ``from_pretrained`` keep a trained one: ``tinyldm train autoencoder`` writes the
    discriminator of a GAN run into ``discriminator/`` next to the model, so its verdicts can be looked at later.

    Args:
        config: the hyperparameters; ``DiscriminatorConfig()`` when None.
        generator: source of the initial weights; seed it (or wrap the call in ``tinyldm.runtime.seeded``) for a
            reproducible discriminator.
    """

    config_class = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config = config if config is not None else DiscriminatorConfig()
        config.validate()
        ch = config.base_channels

        spectral = config.norm == "spectral"

        def norm(c: int) -> nn.Module:
            if spectral:
                return nn.Identity()
            return group_norm(c, config.groups) if config.norm == "group" else nn.BatchNorm2d(c)

        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = ch
        for n in range(1, config.num_layers + 1):
            # The last of these keeps the resolution (stride 1), widening the patch without shrinking the grid.
            stride = 2 if n < config.num_layers else 1
            width = ch * min(2 ** n, 8)
            # No bias before a normalisation layer: it would subtract it again.
            layers += [nn.Conv2d(c, width, 4, stride=stride, padding=1, bias=spectral), norm(width),
                       nn.LeakyReLU(0.2)]
            c = width
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self._init_weights(generator)
        if spectral:
            for conv in self._convs():
                _spectral_norm(conv, generator)

    def _convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0.0, 0.02, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
                module.weight.normal_(1.0, 0.02, generator=generator)
                module.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Per-patch logits: high means "looks real".

        Args:
            x: (B, in_channels, H, W) images in [-1, 1]; H, W at least 2 ** (num_layers + 2) or so.
        Returns:
            (B, 1, h, w): one logit per patch (2x2 for 32x32 inputs and num_layers = 3, 6x6 for 64x64).
        """
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.config.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"images must have shape (B, {self.config.in_channels}, H, W), got {shape}")
        size = min(x.shape[-2:])
        if size < self.min_input_size():
            raise ValueError(f"image size {size} is too small for a PatchDiscriminator with num_layers="
                             f"{self.config.num_layers}; use images of at least {self.min_input_size()} pixels "
                             "or fewer layers")
        return self.layers(x)

    def min_input_size(self) -> int:
        """The smallest image side that still leaves one output logit."""
        size = 1
        for conv in reversed(self._convs()):
            size = (size - 1) * conv.stride[0] + conv.kernel_size[0] - 2 * conv.padding[0]
        return size

    def receptive_field(self) -> int:
        """The side, in pixels, of the input patch that one output logit sees (70 for num_layers = 3).

        Walking back from one output pixel, each convolution turns a span of r pixels into (r - 1) * stride +
        kernel pixels of its input.
        """
        r = 1
        for conv in reversed(self._convs()):
            r = (r - 1) * conv.stride[0] + conv.kernel_size[0]
        return r

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@torch.no_grad()
def _spectral_norm(conv: nn.Conv2d, generator: torch.Generator | None) -> None:
    """Divide ``conv``'s weight by its largest singular value (Miyato et al. 2018, Eq. 8), estimated by one power
    iteration per training forward pass from vectors u, v kept as buffers (so a checkpoint restores them).

    PyTorch draws the starting u from the global RNG; it is drawn again here from ``generator`` (the global state is
    left as it was), then refined by 15 power iterations as PyTorch does.
    """
    with torch.random.fork_rng(devices=[]):
        nn.utils.parametrizations.spectral_norm(conv)
    sn = conv.parametrizations.weight[0]
    w = sn._reshape_weight_to_matrix(conv.parametrizations.weight.original)  # (out, in * k * k)
    sn._u.copy_(F.normalize(torch.randn(w.shape[0], generator=generator).to(w), dim=0, eps=sn.eps))
    sn._v.copy_(F.normalize(torch.randn(w.shape[1], generator=generator).to(w), dim=0, eps=sn.eps))
    sn._power_method(w, 15)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Hinge loss of the discriminator (Lim & Ye 2017; Miyato et al. 2018, Eq. 16; as in taming):
    0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec)))).

    Args:
        logits_real: (B, 1, h, w) logits on real images.
        logits_fake: (B, 1, h, w) logits on reconstructions.
    Returns:
        Scalar loss.
    """
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The original GAN loss of the discriminator, binary cross-entropy on logits (Goodfellow et al. 2014, Eq. 1):
    0.5 * (mean(softplus(-D(x))) + mean(softplus(D(x_rec)))), since -log sigmoid(a) = softplus(-a).

    Args:
        logits_real: (B, 1, h, w) logits on real images.
        logits_fake: (B, 1, h, w) logits on reconstructions.
    Returns:
        Scalar loss.
    """
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def generator_adversarial_loss(logits_fake: Tensor, kind: str = "hinge") -> Tensor:
    """The decoder's adversarial loss on its reconstructions' logits.

    "hinge": -mean(D(x_rec)) (Miyato et al. 2018, Eq. 17; taming). "vanilla": mean(softplus(-D(x_rec))) =
    -mean(log sigmoid(D(x_rec))), the non-saturating loss (Goodfellow et al. 2014, Sec. 3), whose gradient stays
    large while the discriminator still wins easily.

    Args:
        logits_fake: (B, 1, h, w) logits on reconstructions.
        kind: "hinge" or "vanilla".
    Returns:
        Scalar loss.
    """
    if kind == "hinge":
        return -logits_fake.mean()
    if kind == "vanilla":
        return F.softplus(-logits_fake).mean()
    raise ValueError(f"kind must be one of {GAN_LOSSES}, got {kind!r}")
