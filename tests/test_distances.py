"""Sample-quality distances against exact values: 1-D optimal transport, translations, explicit MMD sums."""

import math

import numpy as np
import pytest
import torch

from tinyldm.evaluation.distances import mmd2, sliced_wasserstein, wasserstein_1d


def _points(n, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_wasserstein_1d_of_equal_sizes_matches_sorted_pairs():
    u, v = _points(100, 3, seed=0), _points(100, 3, seed=1) * 2 + 1
    for p in (1.0, 2.0):
        expected = (u.sort(0).values - v.sort(0).values).abs().pow(p).mean(0)
        torch.testing.assert_close(wasserstein_1d(u, v, p), expected)


def test_wasserstein_1d_of_unequal_sizes_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    u, v = _points(37, 1, seed=0), _points(101, 1, seed=1) + 0.5
    expected = stats.wasserstein_distance(u[:, 0].numpy(), v[:, 0].numpy())
    assert wasserstein_1d(u, v, p=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_repeating_a_set_does_not_change_its_distribution():
    x = _points(50)
    assert sliced_wasserstein(x, x.repeat(3, 1), generator=torch.Generator().manual_seed(0)).item() < 1e-6
    assert sliced_wasserstein(x, x, generator=torch.Generator().manual_seed(0)).item() == 0.0


def test_sliced_wasserstein_of_a_translate_is_norm_over_sqrt_d():
    # Every projection of a translate moves by theta . c; averaging (theta . c)^2 over the sphere gives |c|^2 / D.
    x = _points(200)
    c = torch.tensor([3.0, 4.0])
    sw = sliced_wasserstein(x, x + c, num_projections=20000, generator=torch.Generator().manual_seed(0))
    assert sw.item() == pytest.approx(5.0 / math.sqrt(2), rel=0.01)


def test_sliced_wasserstein_is_seeded_symmetric_and_orders_shifts():
    x, y = _points(300, seed=0), _points(300, seed=1)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert sliced_wasserstein(x, y, generator=g()).item() == sliced_wasserstein(x, y, generator=g()).item()
    assert sliced_wasserstein(x, y, generator=g()).item() == pytest.approx(
        sliced_wasserstein(y, x, generator=g()).item(), rel=1e-6)
    shifts = [sliced_wasserstein(x, y + s, generator=g()).item() for s in (0.0, 0.5, 1.0)]
    assert shifts == sorted(shifts)


def test_mmd2_matches_an_explicit_double_sum():
    x, y = _points(20, 3, seed=0), _points(30, 3, seed=1) + 0.3
    widths = (0.5, 2.0)
    k = lambda a, b: sum(np.exp(-np.sum((a - b) ** 2) / (2 * s**2)) for s in widths)  # noqa: E731
    xs, ys = x.double().numpy(), y.double().numpy()
    xx = sum(k(a, b) for i, a in enumerate(xs) for j, b in enumerate(xs) if i != j) / (20 * 19)
    yy = sum(k(a, b) for i, a in enumerate(ys) for j, b in enumerate(ys) if i != j) / (30 * 29)
    xy = sum(k(a, b) for a in xs for b in ys) / (20 * 30)
    assert mmd2(x, y, widths).item() == pytest.approx(xx + yy - 2 * xy, rel=1e-5)
    biased = (sum(k(a, b) for a in xs for b in xs) / 400 + sum(k(a, b) for a in ys for b in ys) / 900 - 2 * xy)
    assert mmd2(x, y, widths, unbiased=False).item() == pytest.approx(biased, rel=1e-5)


def test_mmd2_is_zero_for_the_same_set_and_grows_with_a_shift():
    x, y = _points(200, seed=0), _points(200, seed=1)
    assert abs(mmd2(x, x, unbiased=False).item()) < 1e-6
    values = [mmd2(x, y + s).item() for s in (0.0, 0.5, 1.0)]
    assert abs(values[0]) < 0.01 and values == sorted(values)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"x must be a non-empty \(N, D\) tensor of points, got \(3, 2, 2\)"):
        sliced_wasserstein(torch.zeros(3, 2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same dimension D, got 2 and 3"):
        mmd2(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="at least 2 points"):
        mmd2(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="positive widths"):
        mmd2(torch.zeros(3, 2), torch.zeros(3, 2), bandwidths=(0.0,))
    with pytest.raises(ValueError, match="num_projections and p must be >= 1"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), num_projections=0)
