"""The UNet noise predictor: down-sampling path, middle, up-sampling path, and the skip connections between them.

The encoder halves the resolution at each level while it widens the feature maps, so a 3x3 convolution at a low
level sees a large part of the image; the decoder doubles the resolution back, and at each level it concatenates
the encoder's features of the same size (the skip connections of Ronneberger et al. 2015), which hand back the
fine detail the bottleneck has thrown away. The step t enters every ResBlock through a sinusoidal embedding and an
MLP (Ho et al. 2020, App. B). The layout follows the DDPM / Improved DDPM UNet at a size a laptop can train.

With ``context_dim`` set (lesson 6) the attention levels and the middle hold SpatialTransformers instead of
self-attention, and the UNet reads a text context through cross-attention (Rombach et al. 2022, Sec. 3.3):
eps_theta(x_t, t, tau(y)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinyldm.attention import SelfAttention, SpatialTransformer, group_norm
from tinyldm.pretrained import PretrainedMixin
from tinyldm.time_embedding import TimeEmbedding
from tinyldm.unet_blocks import DOWNSAMPLES, TIME_CONDITIONINGS, UPSAMPLES, Downsample, ResBlock, Upsample

__all__ = ["UNetConfig", "UNet"]


@dataclass
class UNetConfig:
    """Hyperparameters of ``UNet``; ``tiny()``, ``small()`` and ``full()`` are the course's presets."""

    in_channels: int = 3  # channels of x_t (3 for RGB pixels, the latent channels in lesson 5)
    out_channels: int = 3  # channels of the prediction (eps has the shape of x_t)
    base_channels: int = 64  # width of the first level; level i has base_channels * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level; len - 1 downsamplings
    blocks_per_level: int = 2  # ResBlocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) that get attention (and the middle)
    num_heads: int = 4  # heads of every attention layer
    dropout: float = 0.0  # dropout inside the ResBlocks
    groups: int = 32  # GroupNorm groups (fewer when a width is not a multiple)
    time_conditioning: str = "scale_shift"  # "shift" (DDPM) or "scale_shift" (Improved DDPM)
    downsample: str = "conv"  # "conv" (strided 3x3) or "avgpool"
    upsample: str = "nearest"  # "nearest" (+ 3x3 conv) or "transposed" (transposed conv)
    skip_connections: bool = True  # False removes the encoder-to-decoder concatenations (an ablation)
    context_dim: int | None = None  # D_c of the text context; None = unconditional, else cross-attention (lesson 6)

    @classmethod
    def tiny(cls, context_dim: int | None = None) -> UNetConfig:
        """About 0.3M parameters: seconds per hundred steps on a CPU at 32x32 (tests, the lesson's quick runs).

        ``context_dim`` (the text encoder's width) turns its attention into SpatialTransformers."""
        return cls(base_channels=16, channel_mults=(1, 2, 2), blocks_per_level=1, attention_levels=(2,),
                   groups=4, context_dim=context_dim)

    @classmethod
    def small(cls, context_dim: int | None = None) -> UNetConfig:
        """The shipped 32x32 pixel model: about 1.2M parameters, 80 minutes of training on a 2-core CPU."""
        return cls(base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=1, attention_levels=(2,),
                   groups=8, context_dim=context_dim)

    @classmethod
    def full(cls, context_dim: int | None = None) -> UNetConfig:
        """A GPU-sized model for 64x64 images (about 40M parameters): the DDPM CIFAR-10 UNet's widths and depth
        (Ho et al. 2020, App. B), run at 64x64, with attention at 16x16 and 8x8."""
        return cls(base_channels=128, channel_mults=(1, 2, 2, 2), blocks_per_level=2, attention_levels=(2, 3),
                   dropout=0.1, context_dim=context_dim)

    @property
    def num_downsamples(self) -> int:
        """How many times the UNet halves the resolution: input sides must be multiples of 2 ** this."""
        return len(self.channel_mults) - 1

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot build a UNet, and how to fix it."""
        for name in ("in_channels", "out_channels", "base_channels", "blocks_per_level", "num_heads", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive int, got {value!r}")
        mults = self.channel_mults
        if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"UNetConfig.channel_mults must be a non-empty tuple of positive ints, got {mults!r}; "
                             "e.g. (1, 2, 2) for three levels")
        bad = [level for level in self.attention_levels if not 0 <= level < len(mults)]
        if bad:
            raise ValueError(f"UNetConfig.attention_levels {tuple(self.attention_levels)} name levels {bad} that "
                             f"do not exist: channel_mults={tuple(mults)} has levels 0..{len(mults) - 1}")
        for level in self.attention_levels:
            width = self.base_channels * mults[level]
            if width % self.num_heads:
                raise ValueError(f"level {level} is {width} channels wide, not divisible by num_heads="
                                 f"{self.num_heads}; choose num_heads among the divisors of {width}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"UNetConfig.dropout must lie in [0, 1), got {self.dropout}")
        for name, value, allowed in (("time_conditioning", self.time_conditioning, TIME_CONDITIONINGS),
                                     ("downsample", self.downsample, DOWNSAMPLES),
                                     ("upsample", self.upsample, UPSAMPLES)):
            if value not in allowed:
                raise ValueError(f"UNetConfig.{name} must be one of {allowed}, got {value!r}")
        dim = self.context_dim
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"UNetConfig.context_dim must be None (unconditional) or the text encoder's width, a "
                             f"positive int, got {dim!r}")


class UNet(PretrainedMixin, nn.Module):
    """eps_theta(x_t, t): predicts the noise in x_t with a UNet (Ronneberger et al. 2015; Ho et al. 2020, App. B).

    With ``config.context_dim`` set it is eps_theta(x_t, t, context), conditioned through cross-attention
    (Rombach et al. 2022, Eq. 3).

    Args:
        config: the hyperparameters; ``UNetConfig()`` when None.
    """

    config_class = UNetConfig

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else UNetConfig()
        config.validate()
        ch = config.base_channels
        temb_dim = 4 * ch
        widths = [ch * m for m in config.channel_mults]  # width of each level

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, temb_dim, config.dropout, config.groups, config.time_conditioning)

        def attn(c: int, level: int | None = None) -> nn.Module:
            if level is not None and level not in config.attention_levels:
                return nn.Identity()
            if config.context_dim is None:
                return SelfAttention(c, config.num_heads, config.groups)
            return SpatialTransformer(c, config.context_dim, config.num_heads, config.groups)

        self.time_embed = TimeEmbedding(ch, temb_dim)
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)

        # Encoder: every block's output is kept for the decoder (skip_widths records their channel counts).
        self.down = nn.ModuleList()
        skip_widths = [ch]
        c = ch
        for level, width in enumerate(widths):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            stage.attns = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                stage.blocks.append(res(c, width))
                stage.attns.append(attn(width, level))
                c = width
                skip_widths.append(c)
            is_last = level == len(widths) - 1
            stage.downsample = nn.Identity() if is_last else Downsample(c, config.downsample)
            if not is_last:
                skip_widths.append(c)
            self.down.append(stage)

        self.mid_block1 = res(c, c)
        self.mid_attn = attn(c)
        self.mid_block2 = res(c, c)

        # Decoder: one more block per level than the encoder, each eating one skip (in reverse order).
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            stage = nn.Module()
            stage.blocks = nn.ModuleList()
            stage.attns = nn.ModuleList()
            for _ in range(config.blocks_per_level + 1):
                skip = skip_widths.pop() if config.skip_connections else 0
                stage.blocks.append(res(c + skip, widths[level]))
                stage.attns.append(attn(widths[level], level))
                c = widths[level]
            stage.upsample = Upsample(c, config.upsample) if level > 0 else nn.Identity()
            self.up.append(stage)

        self.norm_out = group_norm(c, config.groups)
        self.conv_out = nn.Conv2d(c, config.out_channels, 3, padding=1)
        # A zero last layer makes the untrained network predict eps = 0, a calm starting point (Ho et al. 2020 code).
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def check_input(self, xt: Tensor, t: Tensor) -> None:
        """Raise ValueError unless xt is (B, in_channels, H, W) with H, W multiples of 2 ** num_downsamples."""
        cfg = self.config
        if not isinstance(xt, Tensor) or xt.ndim != 4 or xt.shape[1] != cfg.in_channels:
            shape = tuple(xt.shape) if isinstance(xt, Tensor) else type(xt).__name__
            raise ValueError(f"xt must have shape (B, {cfg.in_channels}, H, W), got {shape}; set "
                             "UNetConfig.in_channels to your data's channels")
        factor = 2 ** cfg.num_downsamples
        H, W = xt.shape[-2:]
        if H % factor or W % factor:
            fix_h, fix_w = -(-H // factor) * factor, -(-W // factor) * factor
            raise ValueError(f"image size {H}x{W} is not a multiple of {factor}: the UNet halves the resolution "
                             f"{cfg.num_downsamples} times (channel_mults={tuple(cfg.channel_mults)}); use "
                             f"{fix_h}x{fix_w} (pad or resize), or fewer levels")
        if not isinstance(t, Tensor) or t.shape != (xt.shape[0],):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must have shape ({xt.shape[0]},), one step per image, got {shape}")

    def check_context(self, xt: Tensor, context: Tensor | None, context_mask: Tensor | None) -> None:
        """Raise ValueError unless the context fits the config: none without context_dim, (B, L, context_dim) with."""
        dim = self.config.context_dim
        if dim is None:
            if context is not None or context_mask is not None:
                raise ValueError("this UNet has no cross-attention (UNetConfig.context_dim is None), so it cannot use "
                                 "context; build it with UNetConfig(context_dim=<the text encoder's width>)")
            return
        B = xt.shape[0]
        if context is None:
            raise ValueError(f"this UNet is text-conditioned (UNetConfig.context_dim={dim}): pass context "
                             f"({B}, L, {dim}) from a text encoder; for the unconditional prediction of "
                             "classifier-free guidance pass the encoding of the empty caption")
        if not isinstance(context, Tensor) or context.ndim != 3 or context.shape[0] != B or context.shape[2] != dim:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"context must have shape ({B}, L, {dim}), one sequence of {dim}-wide tokens per "
                             f"image, got {shape}")
        if context_mask is not None and (not isinstance(context_mask, Tensor) or context_mask.dtype != torch.bool
                                         or tuple(context_mask.shape) != tuple(context.shape[:2])):
            got = f"{context_mask.dtype} {tuple(context_mask.shape)}" if isinstance(context_mask, Tensor) \
                else type(context_mask).__name__
            raise ValueError(f"context_mask must be a bool tensor of shape {tuple(context.shape[:2])} (True = a real "
                             f"token, False = padding), got {got}")

    def forward(self, xt: Tensor, t: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        """Predict the noise in ``xt``, optionally conditioned on a text context.

        Args:
            xt: (B, in_channels, H, W) noisy images, H and W multiples of 2 ** num_downsamples.
            t: (B,) int64 step indices.
            context: (B, L, context_dim) text tokens; required when config.context_dim is set, refused otherwise.
            context_mask: (B, L) bool, True for real tokens and False for padding; None means all real.
        Returns:
            (B, out_channels, H, W) eps_pred.
        """
        self.check_input(xt, t)
        self.check_context(xt, context, context_mask)

        def attend(attn: nn.Module, h: Tensor) -> Tensor:
            return attn(h, context, context_mask) if isinstance(attn, SpatialTransformer) else attn(h)

        temb = self.time_embed(t)  # (B, 4 * base_channels)
        h = self.conv_in(xt)  # (B, base_channels, H, W)
        skips = [h]
        for stage in self.down:
            for block, attn in zip(stage.blocks, stage.attns):
                h = attend(attn, block(h, temb))  # (B, width, H_level, W_level)
                skips.append(h)
            if not isinstance(stage.downsample, nn.Identity):
                h = stage.downsample(h)  # (B, width, H_level / 2, W_level / 2)
                skips.append(h)
        h = self.mid_block2(attend(self.mid_attn, self.mid_block1(h, temb)), temb)  # (B, C_bottom, H_b, W_b)
        for stage in self.up:
            for block, attn in zip(stage.blocks, stage.attns):
                if self.config.skip_connections:
                    h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H_level, W_level)
                h = attend(attn, block(h, temb))  # (B, width, H_level, W_level)
            h = stage.upsample(h)  # (B, width, 2 H_level, 2 W_level) except at level 0
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
