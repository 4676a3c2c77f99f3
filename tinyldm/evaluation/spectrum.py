"""How much fine detail a reconstruction keeps: radially averaged power spectra and the high-frequency ratio.

A pixel loss lets an autoencoder trade texture for blur: a blurred picture is close to the original in every pixel,
but the power in its top frequencies is gone. The power spectrum shows it directly (the measure that Durall et al.
2020 and Dzanic et al. 2020 use to tell generated images from real ones):

- ``radial_power_spectrum``: |DFT|^2 of each image and channel (mean removed, Hann window), averaged over rings of
  equal frequency |k|, in cycles per image: one curve per image from k = 0 to the Nyquist frequency S/2;
- ``high_frequency_ratio``: the reconstructions' curve over the originals', averaged over the top half of the
  frequencies (S/4 < k <= S/2). About 1 keeps the texture, well below 1 is blur, above 1 adds artefacts or noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["radial_power_spectrum", "high_frequency_ratio"]


def _check_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be square images (B, C, S, S), got {shape}; crop them square first")
    if images.shape[-1] < 4:
        raise ValueError(f"{name} are {images.shape[-1]} pixels wide; the spectrum needs at least 4 (S/4 < k <= S/2 "
                         "must hold a frequency)")


def radial_power_spectrum(images: Tensor) -> Tensor:
    """The radially averaged power spectrum of each image and channel.

    For each (image, channel) x of side S: subtract its mean, multiply by a 2-D Hann window w (so that the jump
    between opposite edges of a crop does not leak power into every frequency), take the 2-D DFT X, and average
    the power |X(ky, kx)|^2 / sum(w^2) over the ring of integer frequency k = round(sqrt(kx^2 + ky^2)), with kx, ky
    in cycles per image (from -S/2 to S/2 - 1). Rings beyond S/2, the corners that only some directions reach, are
    dropped. Computed in float64.

    Args:
        images: (B, C, S, S) real images, any range (the ratio of two spectra does not depend on it).
    Returns:
        (B, C, S // 2 + 1) float64 power per ring, ring k at index k (k = 0 holds the residual of the mean).
    """
    _check_images(images, "images")
    S = images.shape[-1]
    x = images.detach().to(torch.float64)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    w1 = torch.hann_window(S, periodic=False, dtype=torch.float64, device=x.device)  # (S,)
    window = w1[:, None] * w1[None, :]  # (S, S)
    power = torch.fft.fft2(x * window).abs().square() / window.square().sum()  # (B, C, S, S)
    k = torch.fft.fftfreq(S, d=1 / S, dtype=torch.float64, device=x.device)  # (S,) cycles per image
    ring = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).round().long().flatten()  # (S*S,) ring of each frequency
    keep = ring <= S // 2
    ring = ring[keep]
    sums = torch.zeros(*power.shape[:2], S // 2 + 1, dtype=torch.float64, device=x.device)  # (B, C, K)
    sums.index_add_(-1, ring, power.flatten(-2)[..., keep])
    counts = torch.bincount(ring, minlength=S // 2 + 1).to(torch.float64)  # (K,) frequencies per ring
    return sums / counts


def high_frequency_ratio(originals: Tensor, reconstructions: Tensor) -> float:
    """The reconstructions' high-frequency power relative to the originals', a measure of blur.

    With P_x(k) the radial power spectrum (``radial_power_spectrum``) averaged over the images and channels of x,
    and the top half of the frequencies K = {k : S/4 < k <= S/2} (S/4 rings):

        ratio = 1/|K| sum_{k in K} P_rec(k) / P_orig(k)

    Each ring counts alike, so the fast fall of natural images' power with k does not leave the ratio to the
    lowest of these rings. Identical sets give exactly 1; a blurred copy well below 1 (a 3x3 box blur leaves about
    3% of the power of white noise, or of photo crops, there); added noise or artefacts above 1.

    Args:
        originals: (B, C, S, S) images.
        reconstructions: (B, C, S, S) their reconstructions.
    Returns:
        The ratio, a float >= 0.
    """
    _check_images(originals, "originals")
    _check_images(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals and reconstructions must have one shape, got {tuple(originals.shape)} and "
                         f"{tuple(reconstructions.shape)}")
    S = originals.shape[-1]
    top = slice(S // 4 + 1, S // 2 + 1)  # rings S/4 < k <= S/2
    p_orig = radial_power_spectrum(originals).mean(dim=(0, 1))[top]  # (K,)
    p_rec = radial_power_spectrum(reconstructions).mean(dim=(0, 1))[top]
    if not bool((p_orig > 0).all()):
        raise ValueError("the originals have no power in some ring above half the Nyquist frequency (flat images?), "
                         "so the high-frequency ratio is undefined; measure it on images with detail")
    return (p_rec / p_orig).mean().item()
