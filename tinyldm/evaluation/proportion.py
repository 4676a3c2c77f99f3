"""How sure a measured rate is: the Wilson score interval of a proportion (Wilson 1927).

A judged-valid rate of 60% on 32 samples and on 512 samples are different claims. The Wilson interval says how
different: unlike p +- 1.96 * sqrt(p (1 - p) / n), it stays inside [0, 1] and is not empty at 0% or 100%.
"""

from __future__ import annotations

import math

__all__ = ["wilson_interval", "Z95"]

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


def wilson_interval(rate: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion ``rate`` measured on ``n`` trials.

    Args:
        rate: the measured fraction of successes, in [0, 1].
        n: the number of trials, >= 1.
        z: the normal quantile of the interval's confidence.
    Returns:
        (low, high), with 0 <= low <= rate <= high <= 1.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a fraction in [0, 1], got {rate}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of trials, got {n!r}")
    centre = (rate + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
    spread = z * math.sqrt(rate * (1 - rate) / n + z ** 2 / (4 * n * n)) / (1 + z ** 2 / n)
    # Clamped to the rate as well: at 0% or 100% rounding can leave the bound a hair on the wrong side of it.
    return max(0.0, min(rate, centre - spread)), min(1.0, max(rate, centre + spread))
