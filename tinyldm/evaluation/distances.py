"""How far a set of samples is from the data: distances between two point clouds.

Both work on flat vectors (N, D), so they score the 2-D toy samples directly and images once flattened or
embedded. The sliced Wasserstein distance is in the data's own units ("the samples are 0.05 off");
MMD is a kernel two-sample statistic that needs no random projections. Both compute on the CPU in float64,
wherever the points come from (Apple's MPS has no float64), and return a CPU scalar.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["wasserstein_1d", "sliced_wasserstein", "mmd2"]


def _check_points(x: Tensor, y: Tensor) -> None:
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, Tensor) or value.ndim != 2 or value.shape[0] < 1:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a non-empty (N, D) tensor of points, got {shape}; flatten images first")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}")


def wasserstein_1d(u: Tensor, v: Tensor, p: float = 2.0) -> Tensor:
    """W_p^p between empirical distributions on the line, for many lines at once (Villani 2009, Remark 2.19).

    On the line the optimal transport matches quantiles: W_p^p = int_0^1 |F^{-1}(s) - G^{-1}(s)|^p ds. Both
    quantile functions are step functions, so the integral is an exact sum over the union of their steps;
    the two sets may have different sizes.

    Args:
        u: (N, K) samples of K distributions, one per column.
        v: (M, K) samples of the K distributions to compare with.
        p: the order, >= 1.
    Returns:
        (K,) W_p^p per column.
    """
    n, m = u.shape[0], v.shape[0]
    u_sorted, v_sorted = u.sort(dim=0).values, v.sort(dim=0).values  # (N, K), (M, K)
    steps_u = torch.arange(1, n + 1, dtype=torch.float64, device=u.device) / n
    steps_v = torch.arange(1, m + 1, dtype=torch.float64, device=u.device) / m
    levels = torch.cat([steps_u, steps_v]).sort().values  # (N + M,) right ends of pieces where both are constant
    widths = torch.diff(levels, prepend=levels.new_zeros(1))  # (N + M,)
    mids = levels - widths / 2
    i = (mids * n).long().clamp(max=n - 1)  # which sorted u is the quantile at each piece
    j = (mids * m).long().clamp(max=m - 1)
    gaps = (u_sorted[i] - v_sorted[j]).abs().double() ** p  # (N + M, K)
    return (widths[:, None] * gaps).sum(0).to(u.dtype)  # (K,)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    num_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The sliced p-Wasserstein distance: W_p averaged over random 1-D projections (Bonneel et al. 2015, Eq. 5).

    SW_p(x, y) = ( E_theta W_p^p(theta . x, theta . y) )^(1/p), theta uniform on the unit sphere, estimated
    with ``num_projections`` directions. It is in the units of the data, 0 for identical point sets, and for y a
    translate of x by c it tends to |c| / sqrt(D) (p = 2).

    Args:
        x: (N, D) points.
        y: (M, D) points; M may differ from N.
        num_projections: random directions to average over.
        p: the order, >= 1.
        generator: source of the directions (a CPU generator); same generator state, same value.
    Returns:
        scalar tensor.
    """
    _check_points(x, y)
    if num_projections < 1 or p < 1:
        raise ValueError(f"num_projections and p must be >= 1, got {num_projections} and {p}")
    x, y = x.detach().cpu().double(), y.detach().cpu().double()
    directions = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)  # (D, K)
    directions = directions / directions.norm(dim=0, keepdim=True)
    per_direction = wasserstein_1d(x @ directions, y @ directions, p)  # (K,)
    return (per_direction.mean() ** (1 / p)).float()


def mmd2(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.1, 0.3, 1.0, 3.0), unbiased: bool = True) -> Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (Gretton et al. 2012, Eqs. 3 and 5).

    k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2)) over the bandwidths s. MMD^2 = E k(x, x') + E k(y, y')
    - 2 E k(x, y); the unbiased estimate (Eq. 3) drops the diagonal terms and can dip just below 0 when the
    two sets come from the same distribution; the biased one (Eq. 5) is >= 0.

    Args:
        x: (N, D) points, N >= 2.
        y: (M, D) points, M >= 2.
        bandwidths: kernel widths, in the units of the data.
        unbiased: use the U-statistic (Eq. 3) instead of the V-statistic (Eq. 5).
    Returns:
        scalar tensor.
    """
    _check_points(x, y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"mmd2 needs at least 2 points in each set, got {x.shape[0]} and {y.shape[0]}")
    if not bandwidths or min(bandwidths) <= 0:
        raise ValueError(f"bandwidths must be a non-empty list of positive widths, got {bandwidths}")
    x, y = x.detach().cpu().double(), y.detach().cpu().double()

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        sq = torch.cdist(a, b).pow(2)  # (Na, Nb)
        return sum(torch.exp(-sq / (2 * s**2)) for s in bandwidths)

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        # Gretton et al. 2012, Eq. 3: the diagonal k(x_i, x_i) terms are left out
        xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
        yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    else:
        xx, yy = k_xx.mean(), k_yy.mean()
    return (xx + yy - 2 * k_xy.mean()).float()
