"""Tests for tinyldm.evaluation.two_sample: the classifier two-sample test is at chance on one distribution, near
certain on separable sets, seeded, and its interval and p-value match their formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinyldm.evaluation.two_sample import classifier_two_sample_test

FAST = {"steps": 150, "batch_size": 32}  # enough for the cases below, under a second each


def textures(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 16, 16) images in [-1, 1]: random smooth colour fields plus fine noise."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)
    return (smooth + 0.25 * torch.randn(n, 3, 16, 16, generator=g)).clamp(0, 1) * 2 - 1


def test_identical_sets_give_exactly_one_half():
    x = textures(64, 0)
    result = classifier_two_sample_test(x, x.clone(), **FAST)
    assert result.accuracy == 0.5 and result.num_test == 64 and result.p_value == 0.5


def test_two_samples_of_one_distribution_stay_near_one_half():
    result = classifier_two_sample_test(textures(256, 1), textures(256, 2), **FAST)
    assert abs(result.accuracy - 0.5) < 3 * 0.5 / math.sqrt(result.num_test)  # within 3 standard errors of chance
    assert result.ci95[0] < 0.5 < result.ci95[1]


def test_blurred_copies_are_told_apart_almost_always():
    x = textures(128, 3)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    result = classifier_two_sample_test(x, blurred, **FAST)
    assert result.accuracy > 0.95 and result.p_value < 1e-6 and result.ci95[0] > 0.85


def test_the_same_seed_gives_the_same_result_and_leaves_the_global_rng_alone():
    x, y = textures(64, 4), textures(64, 5)
    state = torch.random.get_rng_state()
    first = classifier_two_sample_test(x, y, seed=7, **FAST)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert classifier_two_sample_test(x, y, seed=7, **FAST) == first


def test_the_interval_and_p_value_follow_their_formulas():
    x = textures(40, 6)
    result = classifier_two_sample_test(x, -x, **FAST)  # any accuracy: the formulas hold for each
    a, n, z = result.accuracy, result.num_test, 1.959963984540054
    assert n == 40 and result.stderr == pytest.approx(math.sqrt(a * (1 - a) / n))
    centre, spread = (a + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(a * (1 - a) / n + z * z / (4 * n * n))
    assert result.ci95 == pytest.approx((centre - spread / (1 + z * z / n), centre + spread / (1 + z * z / n)))
    assert result.p_value == pytest.approx(0.5 * math.erfc((a - 0.5) / (0.5 / math.sqrt(n)) / math.sqrt(2)))


def test_refuses_batches_it_cannot_split():
    with pytest.raises(ValueError, match="N >= 2"):
        classifier_two_sample_test(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        classifier_two_sample_test(torch.zeros(4, 3, 8, 8), torch.zeros(5, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 4x4"):
        classifier_two_sample_test(torch.zeros(4, 3, 2, 2), torch.zeros(4, 3, 2, 2))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        classifier_two_sample_test(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8), steps=0)
