"""The KL autoencoder of latent diffusion: an encoder to a small latent grid, a diagonal Gaussian, a decoder back.

Pixels are expensive: most of their bits describe detail that the eye barely notices. Latent diffusion (Rombach et
al. 2022, Sec. 3) first trains an autoencoder that squeezes an H x W x 3 image into an (H/f) x (W/f) x C latent
grid and back, and then runs diffusion on the latents, f**2 * 3 / C times fewer numbers. The encoder outputs a mean
and a log-variance per latent number (a VAE, Kingma & Welling 2014); a very small KL weight keeps the latent space
from drifting to huge values without blurring the reconstructions. The layout follows the CompVis/taming
Encoder/Decoder: ResBlocks without time, strided-conv down-sampling, nearest up-sampling, one self-attention in the
middle, GroupNorm throughout.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinyldm.attention import SelfAttention, group_norm
from tinyldm.pretrained import PretrainedMixin
from tinyldm.unet_blocks import Downsample, Upsample

__all__ = ["AutoencoderConfig", "DiagonalGaussian", "Encoder", "Decoder", "AutoencoderKL", "estimate_scale_factor",
           "LOGVAR_RANGE", "FACTORS"]

LOGVAR_RANGE = (-30.0, 20.0)  # as in the CompVis code: exp(+-30) keeps std away from 0 and overflow
FACTORS = (2, 4, 8)  # the down-sampling factors the presets are meant for


@dataclass
class AutoencoderConfig:
    """Hyperparameters of ``AutoencoderKL``; ``tiny()``, ``small()``, ``full()`` are the course's presets.

    The down-sampling factor is f = 2 ** (len(channel_mults) - 1); ``with_factor(f)`` gives the same preset at
    another f by cutting or extending ``channel_mults``.
    """

    in_channels: int = 3  # channels of the images (3 for RGB)
    latent_channels: int = 4  # C of the latent grid z: (B, C, H/f, W/f)
    base_channels: int = 64  # width of the first level; level i has base_channels * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level; len - 1 down-samplings
    blocks_per_level: int = 1  # ResBlocks per level in the encoder (the decoder has one more, as in taming)
    groups: int = 32  # GroupNorm groups (fewer when a width is not a multiple)
    mid_attention: bool = True  # one self-attention between two ResBlocks at the lowest resolution
    num_heads: int = 1  # heads of that self-attention (taming's AttnBlock has one)

    @classmethod
    def tiny(cls) -> AutoencoderConfig:
        """f = 4, about 0.24M parameters: tests and the lesson's quick runs (seconds per hundred small steps)."""
        return cls(base_channels=16, channel_mults=(1, 2, 2), groups=8)

    @classmethod
    def small(cls) -> AutoencoderConfig:
        """f = 4, the shipped 32x32 Shapes model: 32x32x3 -> 8x8x4 (12x fewer numbers), about 0.95M parameters."""
        return cls(base_channels=32, channel_mults=(1, 2, 2), groups=8)

    @classmethod
    def full(cls) -> AutoencoderConfig:
        """f = 8 for 64x64 images on a GPU (64x64x3 -> 8x8x4): the widths of the LDM KL-f8 autoencoder halved,
        with two ResBlocks per level (Rombach et al. 2022, App. G); about 21M parameters."""
        return cls(base_channels=64, channel_mults=(1, 2, 4, 4), blocks_per_level=2, groups=32)

    def with_factor(self, factor: int) -> AutoencoderConfig:
        """The same config with down-sampling factor ``factor`` (2, 4 or 8).

        Levels are cut from the end, or added by repeating the last multiplier: (1, 2, 2) becomes (1, 2) at
        f = 2 and (1, 2, 2, 2) at f = 8.
        """
        if isinstance(factor, bool) or not isinstance(factor, int) or factor not in FACTORS:
            raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}")
        levels = int(math.log2(factor)) + 1
        mults = tuple(self.channel_mults) + (self.channel_mults[-1],) * levels
        return dataclasses.replace(self, channel_mults=mults[:levels])

    @property
    def downsampling_factor(self) -> int:
        """f: the image side divided by the latent side."""
        return 2 ** (len(self.channel_mults) - 1)

    def check_image_size(self, height: int, width: int | None = None) -> None:
        """Raise ValueError, naming the size and the nearest one that works, unless the encoder can halve an image
        of ``height`` x ``width`` (square when ``width`` is None) log2(f) times."""
        f, width = self.downsampling_factor, height if width is None else width
        if height < f or width < f or height % f or width % f:
            size = f"{height}" if height == width else f"{height}x{width}"
            fix = [max(f, -(-side // f) * f) for side in (height, width)]
            fix_text = f"{fix[0]}" if height == width else f"{fix[0]}x{fix[1]}"
            raise ValueError(f"image size {size} is not a multiple of {f}: the autoencoder downsamples "
                             f"{len(self.channel_mults) - 1} times; use {fix_text}")

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot build an autoencoder, and how to fix it."""
        for name in ("in_channels", "latent_channels", "base_channels", "blocks_per_level", "groups", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AutoencoderConfig.{name} must be a positive int, got {value!r}")
        mults = self.channel_mults
        if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"AutoencoderConfig.channel_mults must be a non-empty tuple of positive ints, got "
                             f"{mults!r}; e.g. (1, 2, 2) for f = 4")
        width = self.base_channels * mults[-1]
        if self.mid_attention and width % self.num_heads:
            raise ValueError(f"the middle is {width} channels wide, not divisible by num_heads={self.num_heads}; "
                             f"choose num_heads among the divisors of {width}")


class DiagonalGaussian:
    """The posterior q(z|x) = N(mean, diag(exp(logvar))) that the encoder outputs (Kingma & Welling 2014).

    Args:
        mean: (B, C, h, w).
        logvar: (B, C, h, w), clamped to LOGVAR_RANGE.
    """

    def __init__(self, mean: Tensor, logvar: Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} and "
                             f"{tuple(logvar.shape)}")
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)

    @property
    def std(self) -> Tensor:
        """(B, C, h, w) standard deviation exp(logvar / 2)."""
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> Tensor:
        """(B, C, h, w) variance exp(logvar)."""
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None, eps: Tensor | None = None) -> Tensor:
        """z = mean + std * eps with eps ~ N(0, I) drawn from ``generator`` (on mean's device): the
        reparameterisation trick, so gradients reach mean and logvar (Kingma & Welling 2014, Sec. 2.4).

        Args:
            generator: source of eps.
            eps: (B, C, h, w) the standard normal noise itself, instead of drawing it.
        Returns:
            (B, C, h, w).
        """
        if eps is None:
            eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        elif eps.shape != self.mean.shape:
            raise ValueError(f"eps must have the posterior's shape {tuple(self.mean.shape)}, got {tuple(eps.shape)}")
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        """(B, C, h, w): the most likely z, the mean."""
        return self.mean

    def kl(self) -> Tensor:
        """KL(N(mean, var) || N(0, I)) per image, summed over C, h, w (Kingma & Welling 2014, App. B):
        0.5 * sum(mean^2 + var - 1 - logvar).

        Returns:
            (B,).
        """
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))

    def __repr__(self) -> str:
        return f"DiagonalGaussian(shape={tuple(self.mean.shape)})"


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection, without a time input (taming's ResnetBlock).

    out = x' + conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))), where x' is x, or x through a 1x1 convolution when the
    width changes. The UNet's ResBlock is the same block plus the step embedding, which an autoencoder has no use for.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _middle(c: int, config: AutoencoderConfig) -> nn.Sequential:
    attention = SelfAttention(c, config.num_heads, config.groups) if config.mid_attention else nn.Identity()
    return nn.Sequential(_ResBlock(c, c, config.groups), attention, _ResBlock(c, c, config.groups))


class Encoder(nn.Module):
    """(B, in_channels, H, W) images -> (B, 2 * latent_channels, H/f, W/f): the mean and log-variance of z."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mults]
        self.conv_in = nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)
        layers: list[nn.Module] = []
        c = config.base_channels
        for level, width in enumerate(widths):
            for _ in range(config.blocks_per_level):
                layers.append(_ResBlock(c, width, config.groups))
                c = width
            if level < len(widths) - 1:
                layers.append(Downsample(c, "conv"))
        self.down = nn.Sequential(*layers)
        self.mid = _middle(c, config)
        self.norm_out = group_norm(c, config.groups)
        self.conv_out = nn.Conv2d(c, 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))  # (B, C_bottom, H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 2 * latent_channels, H/f, W/f)


class Decoder(nn.Module):
    """(B, latent_channels, h, w) latents -> (B, in_channels, h*f, w*f) images (unbounded; trained toward [-1, 1])."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_mults]
        c = widths[-1]
        self.conv_in = nn.Conv2d(config.latent_channels, c, 3, padding=1)
        self.mid = _middle(c, config)
        layers: list[nn.Module] = []
        for level in reversed(range(len(widths))):
            for _ in range(config.blocks_per_level + 1):
                layers.append(_ResBlock(c, widths[level], config.groups))
                c = widths[level]
            if level > 0:
                layers.append(Upsample(c, "nearest"))
        self.up = nn.Sequential(*layers)
        self.norm_out = group_norm(c, config.groups)
        self.conv_out = nn.Conv2d(c, config.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))  # (B, base_channels * channel_mults[0], H, W)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, in_channels, H, W)


class AutoencoderKL(PretrainedMixin, nn.Module):
    """The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, Sec. 3.1 and App. G).

    ``encode`` gives the posterior q(z|x), ``decode`` maps z back to pixels; ``latents`` and ``decode_latents``
    work with z * scale_factor, the unit-variance latents that the diffusion model sees (Sec. 4.3.2).

    Args:
        config: the hyperparameters; ``AutoencoderConfig()`` when None.
    """

    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else AutoencoderConfig()
        config.validate()
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # Saved with the weights, so a checkpoint carries the scale its latent diffusion model was trained with.
        self.register_buffer("scale_factor", torch.tensor(1.0, dtype=torch.float32))

    @property
    def downsampling_factor(self) -> int:
        """f: the image side divided by the latent side."""
        return self.config.downsampling_factor

    @property
    def last_layer(self) -> nn.Parameter:
        """The weight of the decoder's last convolution, where the adaptive GAN weight compares gradients
        (Esser et al. 2021, Eq. 7)."""
        return self.decoder.conv_out.weight

    def _check_images(self, x: Tensor) -> None:
        cfg = self.config
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != cfg.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"images must have shape (B, {cfg.in_channels}, H, W), got {shape}; the autoencoder "
                             f"was built for {cfg.in_channels} channels (AutoencoderConfig.in_channels)")
        cfg.check_image_size(*x.shape[-2:])

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) for images ``x``.

        Args:
            x: (B, in_channels, H, W) images in [-1, 1], H and W multiples of f.
        Returns:
            DiagonalGaussian over z of shape (B, latent_channels, H/f, W/f).
        """
        self._check_images(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)  # (B, latent_channels, H/f, W/f) each
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: Tensor) -> Tensor:
        """Images from latents.

        Args:
            z: (B, latent_channels, h, w) unscaled latents.
        Returns:
            (B, in_channels, h*f, w*f) reconstructions, roughly in [-1, 1].
        """
        c = self.config.latent_channels
        if not isinstance(z, Tensor) or z.ndim != 4 or z.shape[1] != c:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"latents must have shape (B, {c}, h, w), got {shape}; this autoencoder has "
                             f"{c} latent channels (AutoencoderConfig.latent_channels)")
        return self.decoder(z)

    def forward(self, x: Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None,
                eps: Tensor | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """Encode, draw z (or take the mean), decode.

        Args:
            x: (B, in_channels, H, W) images in [-1, 1].
            sample_posterior: draw z ~ q(z|x) (training) rather than use its mean.
            generator: source of the posterior sample (on x's device).
            eps: (B, latent_channels, H/f, W/f) the posterior sample's standard normal noise, instead of drawing it.
        Returns:
            (reconstruction (B, in_channels, H, W), posterior).
        """
        posterior = self.encode(x)
        z = posterior.sample(generator, eps) if sample_posterior else posterior.mode()  # (B, C, H/f, W/f)
        return self.decode(z), posterior

    def latents(self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """z0 for latent diffusion: scale_factor * z, with z the posterior's mean (or a sample).

        Args:
            x: (B, in_channels, H, W) images in [-1, 1].
        Returns:
            (B, latent_channels, H/f, W/f).
        """
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.scale_factor * z

    def decode_latents(self, z_scaled: Tensor) -> Tensor:
        """Images from scaled latents: decode(z_scaled / scale_factor).

        Args:
            z_scaled: (B, latent_channels, h, w), as ``latents`` returns them.
        Returns:
            (B, in_channels, h*f, w*f).
        """
        return self.decode(z_scaled / self.scale_factor)

    def set_scale_factor(self, value: float) -> None:
        """Set the latent scale (see ``estimate_scale_factor``); it must be a positive finite number."""
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"scale_factor must be a positive finite number, got {value}; estimate it with "
                             "estimate_scale_factor(model, images)")
        self.scale_factor.fill_(value)

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@torch.no_grad()
def estimate_scale_factor(model: AutoencoderKL, images: Tensor, batch_size: int = 256,
                          generator: torch.Generator | None = None) -> float:
    """1 / std of the latents z ~ q(z|x) over ``images``, so that scale_factor * z has unit variance, like the
    noise that diffusion adds to it (Rombach et al. 2022, Sec. 4.3.2 and App. G).

    Args:
        model: the trained autoencoder.
        images: (N, in_channels, H, W) images in [-1, 1] (moved to the model's device in batches).
        batch_size: images per encoder call.
        generator: source of the posterior samples (on the model's device).
    Returns:
        The scale factor, a float; set it with ``model.set_scale_factor``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(images, Tensor) or images.ndim != 4 or len(images) < 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {shape}")
    device = next(model.parameters()).device
    # Running sums in float64 rather than one big tensor: the whole training set can be passed.
    n, total, total_sq = 0, 0.0, 0.0
    for i in range(0, len(images), batch_size):
        z = model.encode(images[i:i + batch_size].to(device)).sample(generator).double()  # (b, C, h, w)
        n, total, total_sq = n + z.numel(), total + float(z.sum()), total_sq + float(z.square().sum())
    var = (total_sq - total * total / n) / (n - 1)  # the unbiased variance of every latent number
    if not math.isfinite(var) or var <= 0:
        raise ValueError(f"the latents have variance {var}; the model's encoder is broken or untrained")
    return 1.0 / math.sqrt(var)
