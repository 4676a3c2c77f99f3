"""Telling a network which step it is at: sinusoidal timestep embeddings and the MLP that follows them.

A denoiser shares its weights across all T steps, so it needs t as an input. A raw integer in [0, 1000) is a
poor feature; the Transformer's positional encoding (Vaswani et al. 2017, Sec. 3.5) turns it into a vector of
sines and cosines at geometrically spaced frequencies, which a small MLP then maps to whatever width the
network needs (Ho et al. 2020, App. B). The 2-D denoiser of lesson 2 and the UNet of lesson 3 both use it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["timestep_embedding", "TimeEmbedding"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of the step index (Vaswani et al. 2017, Sec. 3.5; Ho et al. 2020, App. B).

    With half = dim // 2 and frequencies w_k = max_period^(-k / half) for k = 0..half-1, the embedding is
    [cos(t w_0), ..., cos(t w_{half-1}), sin(t w_0), ..., sin(t w_{half-1})], zero-padded when dim is odd.

    Args:
        t: (B,) step indices, int64 or float (fractional steps are allowed).
        dim: the embedding width, at least 2.
        max_period: the longest wavelength, in steps; sets the lowest frequency.
    Returns:
        (B, dim) float32 tensor on ``t``'s device.
    """
    if not isinstance(t, Tensor) or t.ndim != 1:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must be a 1-D tensor of step indices (B,), got {shape}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2 (one sine and one cosine at least), got {dim!r}")
    if max_period <= 1:
        raise ValueError(f"max_period must be > 1, got {max_period}; the usual choice is 10000")
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half  # (half,)
    freqs = torch.exp(-math.log(max_period) * exponents)  # (half,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)  # (B, 2 * half)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal features followed by a two-layer MLP: t -> (B, out_dim) (Ho et al. 2020, App. B).

    The DDPM UNet uses ``dim`` = its base width and ``out_dim`` = 4 * dim; the MLP lets the network learn
    which mix of frequencies matters at which step.

    Args:
        dim: width of the sinusoidal features.
        out_dim: width of the output; 4 * dim when None.
        max_period: see ``timestep_embedding``.
    """

    def __init__(self, dim: int, out_dim: int | None = None, max_period: float = 10000.0):
        super().__init__()
        out_dim = 4 * dim if out_dim is None else out_dim
        self.dim = dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        """Embed the step indices.

        Args:
            t: (B,) step indices, int64 or float.
        Returns:
            (B, out_dim) embedding.
        """
        emb = timestep_embedding(t, self.dim, self.max_period)  # (B, dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (B, out_dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}"
