"""Toy 2-D point clouds for the noise-prediction lesson: small enough to train on in seconds and to plot whole.

Every kind is a curve or a set of modes traced by one uniform parameter u in [0, 1), plus Gaussian noise. The
points are standardised with the population mean and std (computed once from a dense grid of u), not with the
sample's own, so ``toy_2d(1)`` works and every sample size lives in the same coordinates.
"""

import math
import numbers
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["TOY_KINDS", "toy_2d"]

TOY_KINDS = ("moons", "swiss_roll", "gaussians")
_NOISE = {"moons": 0.08, "swiss_roll": 0.5, "gaussians": 0.1}  # noise std, in the curve's own units
_GRID = 1 << 16  # points of u used to compute the population mean and std


def _curve(kind: str, u: Tensor) -> Tensor:
    """Map the parameter u in [0, 1) to the noise-free point.

    Args:
        kind: one of TOY_KINDS.
        u: float64 (n,) in [0, 1).

    Returns:
        float64 (n, 2).
    """
    if kind == "moons":
        # u < 1/2 traces the upper moon, u >= 1/2 the lower one, shifted as in scikit-learn's make_moons.
        t = math.pi * (2 * u % 1)
        upper = u < 0.5
        x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    elif kind == "swiss_roll":
        t = 1.5 * math.pi * (1 + 2 * u)  # one and a half turns, as in scikit-learn's make_swiss_roll
        x, y = t * torch.cos(t), t * torch.sin(t)
    else:  # eight equally likely modes on the unit circle
        angle = 2 * math.pi * torch.floor(8 * u) / 8
        x, y = torch.cos(angle), torch.sin(angle)
    return torch.stack([x, y], dim=1)  # (n, 2)


@lru_cache(maxsize=None)
def _population_stats(kind: str) -> tuple[Tensor, Tensor]:
    """Mean and std per axis of the noisy distribution: float64 (2,) each."""
    u = (torch.arange(_GRID, dtype=torch.float64) + 0.5) / _GRID  # midpoint rule over [0, 1)
    clean = _curve(kind, u)  # (G, 2)
    # Noise is independent of the curve, so the variances add.
    return clean.mean(0), (clean.var(0, unbiased=False) + _NOISE[kind] ** 2).sqrt()


def toy_2d(n: int, kind: str = "moons", seed: int = 0) -> Tensor:
    """Sample a standardised 2-D toy distribution: two moons, a swiss roll or 8 Gaussians on a ring.

    Args:
        n: number of points, at least 1.
        kind: "moons", "swiss_roll" or "gaussians".
        seed: seed of the CPU generator that draws the points; same seed -> same points.

    Returns:
        float32 (n, 2), about zero mean and unit std per axis.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int, got {n!r} of type {type(n).__name__}; pass a count, e.g. toy_2d(2048)")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}; pass the number of points, e.g. toy_2d(2048)")
    if kind not in TOY_KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {TOY_KINDS}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r} of type {type(seed).__name__}; e.g. seed=0")
    generator = torch.Generator().manual_seed(int(seed))
    u = torch.rand(int(n), generator=generator, dtype=torch.float64)  # (n,)
    noise = torch.randn(int(n), 2, generator=generator, dtype=torch.float64) * _NOISE[kind]  # (n, 2)
    mean, std = _population_stats(kind)
    return ((_curve(kind, u) + noise - mean) / std).float()  # (n, 2)
