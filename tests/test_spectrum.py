"""Tests for tinyldm.evaluation.spectrum against independent computations: a ring average written with loops over
numpy's FFT, sinusoids whose power sits at their frequency, and the high-frequency ratio of blurred and noisy copies."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyldm.evaluation.spectrum import high_frequency_ratio, radial_power_spectrum


def reference_spectrum(image: np.ndarray) -> np.ndarray:
    """The radial average of one (S, S) channel with explicit loops, from the definition in the docstring."""
    S = image.shape[0]
    w = np.hanning(S)  # the symmetric Hann window
    window = np.outer(w, w)
    power = np.abs(np.fft.fft2((image - image.mean()) * window)) ** 2 / (window ** 2).sum()
    sums, counts = np.zeros(S // 2 + 1), np.zeros(S // 2 + 1)
    for i in range(S):
        for j in range(S):
            ky, kx = (i if i < S / 2 else i - S), (j if j < S / 2 else j - S)
            ring = int(np.floor(math.hypot(kx, ky) + 0.5))
            if ring <= S // 2:
                sums[ring] += power[i, j]
                counts[ring] += 1
    return sums / counts


def sinusoid(S: int, kx: int, ky: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(S, dtype=torch.float64), torch.arange(S, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (kx * x + ky * y) / S + 0.3)[None, None]  # (1, 1, S, S)


def test_the_ring_average_matches_a_loop_over_numpys_fft():
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    spectrum = radial_power_spectrum(images)
    assert spectrum.shape == (2, 3, 7) and spectrum.dtype == torch.float64
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(spectrum[b, c].numpy(), reference_spectrum(images[b, c].double().numpy()),
                                       rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kx, ky, ring", [(5, 0, 5), (0, 9, 9), (3, 4, 5), (6, 8, 10), (12, 0, 12)])
def test_a_sinusoids_power_peaks_at_its_frequency(kx, ky, ring):
    spectrum = radial_power_spectrum(sinusoid(32, kx, ky))[0, 0]
    assert int(spectrum.argmax()) == ring
    assert spectrum[ring - 1:ring + 2].sum() > 0.95 * spectrum.sum()  # the window spreads it over one ring a side


def test_identical_images_give_exactly_one():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert high_frequency_ratio(images, images.clone()) == 1.0


def test_a_blurred_copy_is_well_below_one_and_added_noise_above():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(16, 3, 32, 32, generator=g) * 2 - 1
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), 3, stride=1)  # 3x3 box blur
    assert high_frequency_ratio(images, blurred) < 0.1
    noisy = images + 0.3 * torch.randn(images.shape, generator=g)
    assert 1.1 < high_frequency_ratio(images, noisy) < 1.5  # white noise adds 0.3^2 / (1/3) = 27% of the power


def test_a_sinusoid_above_half_nyquist_is_kept_by_a_copy_and_lost_by_a_low_pass():
    x = sinusoid(32, 11, 3) + 0.5 * sinusoid(32, 2, 1)  # (1, 1, 32, 32): detail at ring 11, a slow wave at 2
    low_pass = 0.5 * sinusoid(32, 2, 1)  # what a perfect blur keeps
    assert high_frequency_ratio(x, x) == 1.0 and high_frequency_ratio(x, low_pass) < 1e-3


def test_refuses_shapes_it_cannot_measure():
    with pytest.raises(ValueError, match="square images"):
        radial_power_spectrum(torch.zeros(1, 3, 8, 16))
    with pytest.raises(ValueError, match="one shape"):
        high_frequency_ratio(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))
    with pytest.raises(ValueError, match="no power in some ring"):
        high_frequency_ratio(torch.zeros(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
