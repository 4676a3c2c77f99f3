"""Can a fresh classifier tell reconstructions from originals? The classifier two-sample test (Lopez-Paz & Oquab 2017).

PSNR and LPIPS compare each reconstruction with its own original; neither asks whether the reconstructions *look
like* real pictures. A two-sample test does: train a small CNN to label originals 1 and reconstructions 0 on half of
the images, and measure its accuracy on the other half. If the two sets come from one distribution no classifier
can beat chance, so the accuracy stays near 50%; the more it rises toward 100%, the more visibly the reconstructions
differ (blur, colour casts, checkerboards). Nothing in an autoencoder's training loss is this classifier, so it is a
realism measure the training did not optimise (unlike its own discriminator).

Under the null hypothesis the test accuracy on n held-out images is approximately N(1/2, 1/(4n)) (Lopez-Paz & Oquab
2017, Sec. 3), which gives a p-value; the standard error and the Wilson 95% interval describe the accuracy measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinyldm.evaluation.proportion import wilson_interval
from tinyldm.runtime import seeded

__all__ = ["TwoSampleTest", "classifier_two_sample_test"]

_EVAL_BATCH = 256


@dataclass
class TwoSampleTest:
    """What ``classifier_two_sample_test`` returns."""

    accuracy: float  # fraction of held-out images classified right: 0.5 = indistinguishable, 1.0 = always told apart
    stderr: float  # binomial standard error of the accuracy, sqrt(a (1 - a) / n)
    ci95: tuple[float, float]  # Wilson 95% interval of the accuracy
    p_value: float  # one-sided, against "no better than chance", with accuracy ~ N(1/2, 1/(4n))
    num_test: int  # n, the held-out images classified (originals and reconstructions together)


def _classifier(channels: int, width: int) -> nn.Sequential:
    """A small CNN: two stride-2 convolutions (the first one sees every pixel, and so the finest detail), a third
    convolution, global average pooling and a linear read-out; no normalisation, so images are judged one by one."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, w, S/2, S/2)
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, 2w, S/4, S/4)
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1),  # (B, 1) logit of "original"
    )


def _as_8bit(images: Tensor) -> Tensor:
    """Round to the 256 levels of a saved picture, so that the classifier cannot tell the sets apart by the
    originals' 8-bit quantisation alone."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def classifier_two_sample_test(originals: Tensor, reconstructions: Tensor, steps: int = 600, batch_size: int = 64,
                               lr: float = 2e-3, width: int = 16, seed: int = 0) -> TwoSampleTest:
    """Train a fresh CNN to tell originals from reconstructions and report its accuracy on held-out pairs.

    Lopez-Paz & Oquab 2017, Sec. 3: the pairs (original i, reconstruction i) are split at random into two halves,
    so that no image has its partner on the other side; the classifier (``_classifier``, seeded) trains for
    ``steps`` Adam steps (learning rate ``lr`` decayed to 0 on a cosine) on balanced batches from the first half
    (binary cross-entropy, originals labelled 1), and the accuracy is measured on every image of the second half
    (logit > 0 reads "original"). Both sets are rounded to 8 bits first. Identical sets give exactly 0.5: each
    held-out image then appears once with each label, and gets the same logit both times.

    Args:
        originals: (N, C, S, S) images in [-1, 1], N >= 2; held out from the autoencoder's training.
        reconstructions: (N, C, S, S) their reconstructions, paired by index.
        steps, batch_size, lr, width: the classifier's training and its width (channels of the first layer).
        seed: the split, the batches and the classifier's initial weights.
    Returns:
        ``TwoSampleTest``: accuracy, its standard error, the Wilson 95% interval, the p-value and n.
    """
    if originals.shape != reconstructions.shape or originals.ndim != 4 or originals.shape[0] < 2:
        raise ValueError(f"originals and reconstructions must be two batches (N, C, H, W) of one shape with N >= 2, "
                         f"got {tuple(originals.shape)} and {tuple(reconstructions.shape)}; the test needs pairs to "
                         "train on and pairs to hold out, a few hundred for an accuracy within a few per cent")
    if min(originals.shape[-2:]) < 4:
        raise ValueError(f"the two-sample classifier halves the image twice and needs images of at least 4x4 pixels, "
                         f"got {tuple(originals.shape[-2:])}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    device = originals.device
    real, fake = _as_8bit(originals), _as_8bit(reconstructions.to(device))
    generator = torch.Generator().manual_seed(seed)  # the split and the batches: always on the CPU
    order = torch.randperm(real.shape[0], generator=generator)
    train, test = order[: real.shape[0] // 2], order[real.shape[0] // 2:]
    with seeded(seed):  # the layers' default initialisation draws from the global RNG, which this leaves alone
        classifier = _classifier(real.shape[1], width)
    classifier = classifier.to(device)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=lr)
    # Cosine decay to 0: the last steps settle the classifier, so its held-out accuracy varies less with the seed.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    half = max(1, batch_size // 2)
    labels = torch.cat([torch.ones(half), torch.zeros(half)]).to(device)  # (2 * half,) 1 = original
    with torch.enable_grad():
        for _ in range(steps):
            pick = train[torch.randint(0, len(train), (2, half), generator=generator)]  # (2, half) pair indices
            x = torch.cat([real[pick[0].to(device)], fake[pick[1].to(device)]])  # (2 * half, C, S, S)
            loss = F.binary_cross_entropy_with_logits(classifier(x)[:, 0], labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), _EVAL_BATCH):
            idx = test[start:start + _EVAL_BATCH].to(device)
            correct += int((classifier(real[idx])[:, 0] > 0).sum()) + int((classifier(fake[idx])[:, 0] <= 0).sum())
    n = 2 * len(test)
    accuracy = correct / n
    # Lopez-Paz & Oquab 2017, Sec. 3: under the null the accuracy is ~ N(1/2, 1/(4n)).
    p_value = 0.5 * math.erfc((accuracy - 0.5) * math.sqrt(4 * n) / math.sqrt(2))
    return TwoSampleTest(accuracy, math.sqrt(accuracy * (1 - accuracy) / n), wilson_interval(accuracy, n), p_value, n)
