"""The Wilson interval against values computed by hand and its limits."""

import math

import pytest

from tinyldm.evaluation.proportion import wilson_interval


def test_known_values():
    # 8 of 10: centre (0.8 + z^2/20) / (1 + z^2/10), the textbook interval (0.490, 0.943)
    low, high = wilson_interval(0.8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(0.5, 10_000)  # large n: close to p +- 1.96 sqrt(p(1-p)/n)
    assert high - 0.5 == pytest.approx(1.959964 * math.sqrt(0.25 / 10_000), rel=1e-3)


@pytest.mark.parametrize("n", [1, 7, 200, 1000, 12345])
def test_the_bounds_bracket_the_rate_exactly_at_zero_and_one(n):
    for rate in (0.0, 1.0, 0.5):
        low, high = wilson_interval(rate, n)
        assert 0.0 <= low <= rate <= high <= 1.0


def test_the_interval_stays_in_zero_one_and_is_not_empty_at_the_ends():
    low, high = wilson_interval(0.0, 20)
    assert low == 0.0 and 0.1 < high < 0.2
    low, high = wilson_interval(1.0, 20)
    assert high == 1.0 and 0.8 < low < 0.9
    assert wilson_interval(0.3, 40)[1] - wilson_interval(0.3, 40)[0] > wilson_interval(0.3, 400)[1] - \
        wilson_interval(0.3, 400)[0]


@pytest.mark.parametrize("rate, n, message", [(1.2, 10, "rate must be a fraction"), (0.5, 0, "positive number"),
                                              (0.5, 2.5, "positive number")])
def test_bad_input_is_named(rate, n, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(rate, n)
