"""The UNet's building blocks: a ResBlock that knows the step, and down- and up-sampling.

Each block keeps the tensor layout (B, C, H, W). The ResBlock follows the DDPM UNet (Ho et al. 2020, App. B),
which took it from the Wide ResNet; the time embedding enters every ResBlock, either as a per-channel shift or,
as in Improved DDPM (Nichol & Dhariwal 2021, Sec. 3 "use_scale_shift_norm"), as a scale and a shift of the
normalised features. Down- and up-sampling come in two flavours each, because lesson 3 compares them.
The attention layers (self-attention, and lesson 6's cross-attention) are in ``tinyldm.attention``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tinyldm.attention import group_norm, zero_module

__all__ = ["TIME_CONDITIONINGS", "DOWNSAMPLES", "UPSAMPLES", "ResBlock", "Downsample", "Upsample"]

TIME_CONDITIONINGS = ("shift", "scale_shift")
DOWNSAMPLES = ("conv", "avgpool")
UPSAMPLES = ("nearest", "transposed")


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection, told the step through ``temb``.

    h = conv1(SiLU(norm1(x))); h = h + shift(temb) or norm2(h) * (1 + scale) + shift; out = x' + conv2(...),
    where x' is x itself, or x through a 1x1 convolution when the channel count changes (Ho et al. 2020, App. B).

    Args:
        in_channels: C_in of the input.
        out_channels: C_out of the output.
        temb_dim: width of the time embedding.
        dropout: dropout probability before the second convolution.
        groups: GroupNorm groups.
        time_conditioning: "shift" (add a per-channel bias) or "scale_shift" (FiLM: scale and shift).
    """

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, dropout: float = 0.0, groups: int = 32,
                 time_conditioning: str = "scale_shift"):
        super().__init__()
        if time_conditioning not in TIME_CONDITIONINGS:
            raise ValueError(f"time_conditioning must be one of {TIME_CONDITIONINGS}, got {time_conditioning!r}")
        self.time_conditioning = time_conditioning
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        factor = 2 if time_conditioning == "scale_shift" else 1
        self.time_proj = nn.Linear(temb_dim, factor * out_channels)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """Args:
            x: (B, C_in, H, W) features.
            temb: (B, temb_dim) time embedding.
        Returns:
            (B, C_out, H, W).
        """
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        cond = self.time_proj(F.silu(temb))[:, :, None, None]  # (B, factor * C_out, 1, 1)
        if self.time_conditioning == "scale_shift":
            scale, shift = cond.chunk(2, dim=1)  # (B, C_out, 1, 1) each
            # Nichol & Dhariwal 2021: GroupNorm(h) * (1 + scale) + shift, so the step can gate whole channels
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + cond)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, C_out, H, W)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve the resolution: a 3x3 convolution with stride 2 ("conv") or 2x2 average pooling ("avgpool").

    The strided convolution learns what to keep; pooling is fixed and parameter-free.

    Args:
        channels: C, unchanged.
        kind: "conv" or "avgpool".
    """

    def __init__(self, channels: int, kind: str = "conv"):
        super().__init__()
        if kind not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {kind!r}")
        self.kind = kind
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if kind == "conv" else nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.op(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour copy then a 3x3 convolution ("nearest"), or a transposed
    convolution ("transposed", kernel 3, stride 2).

    A transposed convolution whose kernel size is not a multiple of its stride covers some output pixels with more
    kernel taps than others, which prints a checkerboard on its output (Odena et al. 2016, "Deconvolution and
    Checkerboard Artifacts"); resizing first and then convolving covers every pixel evenly.

    Args:
        channels: C, unchanged.
        kind: "nearest" or "transposed".
    """

    def __init__(self, channels: int, kind: str = "nearest"):
        super().__init__()
        if kind not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {kind!r}")
        self.kind = kind
        if kind == "nearest":
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        else:
            self.conv = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        if self.kind == "nearest":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        return self.conv(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}"
