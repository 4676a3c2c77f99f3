"""Scoring generated Shapes images with the judge: validity, attribute frequencies, and a FID on judge features.

Three questions about a batch of generated images, each answered by ``tinyldm.evaluation.judge.Judge``:

1. **Validity**: what fraction shows one valid, well-formed object? An image counts as valid when the judge's
   valid head says so (p >= 0.5) *and* each attribute head is confident (top probability >= 0.5): a blob between
   two grid cells, or half-way between a square and a circle, is not a Shapes image.
2. **Frequencies**: do the valid images show colours, shapes, sizes and positions as often as the real data
   does? Measured per attribute by the total variation distance 1/2 sum_k |p_k - q_k| (0: identical, 1: disjoint).
3. **FID**: the Frechet distance between Gaussians fitted to judge features of real and generated images
   (Heusel et al. 2017, Eq. 6), with the judge standing in for Inception, as fast.ai did for Fashion-MNIST.

And one question about an autoencoder's reconstructions (lesson 4): how close are they to the originals, by PSNR,
by LPIPS (what a network trained to match human judgements sees), and by what the judge reads in them?
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tinyldm.data.shapes import HELD_OUT, parse_caption
from tinyldm.evaluation.judge import ATTRIBUTES, Judge, attribute_targets

__all__ = ["Judgement", "judge_images", "judge_accuracy", "caption_accuracy", "caption_errors", "frechet_distance",
           "attribute_frequencies", "total_variation", "evaluate_samples", "psnr", "evaluate_reconstructions",
           "VALID_THRESHOLD", "CONFIDENCE_THRESHOLD"]

VALID_THRESHOLD = 0.5  # p(valid) needed to count an image as valid
CONFIDENCE_THRESHOLD = 0.5  # top probability every attribute head needs


@dataclass
class Judgement:
    """The judge's reading of a batch of B images."""

    predictions: dict[str, Tensor]  # attribute -> (B,) int64 class index (into ATTRIBUTES[attribute])
    confidence: dict[str, Tensor]  # attribute -> (B,) top probability
    p_valid: Tensor  # (B,) probability that the image is a valid Shapes image
    valid: Tensor  # (B,) bool: p_valid >= VALID_THRESHOLD and every confidence >= CONFIDENCE_THRESHOLD
    features: Tensor  # (B, feature_dim) penultimate features

    def names(self, index: int) -> dict[str, str]:
        """The predicted attributes of image ``index`` as names, e.g. {"color": "red", ...}."""
        return {name: ATTRIBUTES[name][int(self.predictions[name][index])] for name in ATTRIBUTES}


@torch.no_grad()
def judge_images(judge: Judge, images: Tensor, batch_size: int = 256) -> Judgement:
    """Run the judge over ``images`` (B, 3, H, W) in [-1, 1], in batches, on the judge's device."""
    device = next(judge.parameters()).device
    judge.eval()
    parts = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        logits = judge(x)
        parts.append(({k: v.float().cpu() for k, v in logits.items()}, judge.features(x).float().cpu()))
    logits = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
    features = torch.cat([p[1] for p in parts])
    probs = {name: logits[name].softmax(-1) for name in ATTRIBUTES}
    confidence = {name: p.amax(-1) for name, p in probs.items()}
    p_valid = logits["valid"].sigmoid()
    valid = p_valid >= VALID_THRESHOLD
    for c in confidence.values():
        valid &= c >= CONFIDENCE_THRESHOLD
    return Judgement({name: p.argmax(-1) for name, p in probs.items()}, confidence, p_valid, valid, features)


def _attributes_right(verdict: Judgement, attributes: list[dict[str, str]]) -> dict[str, Tensor]:
    """Per attribute, a (B,) bool tensor: whether the judge's reading of image i is attributes[i]'s."""
    targets = attribute_targets(attributes)
    return {name: verdict.predictions[name] == targets[name] for name in ATTRIBUTES}


def judge_accuracy(judge: Judge, images: Tensor, attributes: list[dict[str, str]]) -> dict[str, float]:
    """How often the judge reads real images right: accuracy per attribute, all four at once, and valid rate.

    Args:
        images: (B, 3, H, W) real Shapes images, e.g. a split and seed the judge never trained on.
        attributes: the B attribute dicts of those images.
    Returns:
        {"color": ..., "shape": ..., "size": ..., "position": ..., "all": ..., "valid": ...}, fractions in [0, 1].
    """
    verdict = judge_images(judge, images)
    correct = _attributes_right(verdict, attributes)
    result = {name: c.float().mean().item() for name, c in correct.items()}
    result["all"] = torch.stack(list(correct.values())).all(0).float().mean().item()
    result["valid"] = verdict.valid.float().mean().item()
    return result


def caption_accuracy(judge: Judge, images: Tensor, captions: list[str]) -> dict[str, float]:
    """How often generated images show what their captions ask for, read by the judge.

    The judge reads colour, shape, size and position off each image; they are compared with the attributes the
    caption names (``tinyldm.data.shapes.parse_caption``). The same computation as ``judge_accuracy``, with the captions
    as the truth: on real images it measures the judge, on generated ones the generator (given a judge that is
    right on real images).

    Args:
        images: (B, 3, H, W) generated images in [-1, 1].
        captions: the B Shapes captions they were generated from.
    Returns:
        {"color", "shape", "size", "position": fraction right; "all": all four right; "valid": judged valid}.
    """
    if len(captions) != images.shape[0]:
        raise ValueError(f"caption_accuracy needs one caption per image, got {len(captions)} captions for "
                         f"{images.shape[0]} images")
    return judge_accuracy(judge, images, [parse_caption(c) for c in captions])


def caption_errors(judge: Judge, images: Tensor, captions: list[str]) -> Tensor:
    """(B,) bool: the images that do not show their caption, read by the judge: judged invalid, or any of colour,
    shape, size and position other than the caption names (``caption_accuracy``'s "valid" and "all", per image)."""
    if len(captions) != images.shape[0]:
        raise ValueError(f"caption_errors needs one caption per image, got {len(captions)} captions for "
                         f"{images.shape[0]} images")
    verdict = judge_images(judge, images)
    right = torch.stack(list(_attributes_right(verdict, [parse_caption(c) for c in captions]).values())).all(0)
    return ~verdict.valid | ~right


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, Eq. 6).

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), computed in float64; the trace of the matrix
    square root is the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2).

    Args:
        features_a: (N_a, D), features_b: (N_b, D), each with more rows than a handful.
    Returns:
        d^2 as a float (0 for identical statistics).
    """
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(features_a.shape)} and "
                         f"{tuple(features_b.shape)}")
    if min(features_a.shape[0], features_b.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance; use a few hundred")
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D) each
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T  # S_a^(1/2)
    middle = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0)
    d2 = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * middle.sqrt().sum()
    return max(0.0, d2.item())


def attribute_frequencies(predictions: dict[str, Tensor], mask: Tensor | None = None) -> dict[str, Tensor]:
    """The fraction of images showing each value of each attribute (only where ``mask`` is True, if given).

    Returns:
        attribute -> (num_values,) float64 frequencies summing to 1 (zeros if no image is selected).
    """
    out = {}
    for name, values in ATTRIBUTES.items():
        picked = predictions[name] if mask is None else predictions[name][mask]
        counts = torch.bincount(picked, minlength=len(values)).double()
        out[name] = counts / counts.sum().clamp(min=1)
    return out


def total_variation(p: Tensor, q: Tensor) -> float:
    """Total variation distance 1/2 sum_k |p_k - q_k| between two discrete distributions."""
    return 0.5 * (p - q).abs().sum().item()


def evaluate_samples(judge: Judge, generated: Tensor, real: Tensor) -> dict[str, float]:
    """Score generated images against real ones with the judge.

    FID depends on the number of images (fewer images, larger FID), so both FIDs use n = min(N, M // 2) images
    per side: generated[:n] against real[:n], and real[:n] against real[n:2n] as the noise floor. Pass at least
    twice as many real images as generated ones to use every generated image.

    Args:
        judge: a trained judge.
        generated: (N, 3, H, W) generated images in [-1, 1].
        real: (M, 3, H, W) real images of the distribution the generator was trained on, M >= 4.
    Returns:
        "valid_fraction" (of generated images), "real_valid_fraction" (the same for the real ones: the ceiling),
        "tv_<attribute>" and "tv_mean" (frequency match of the valid generated images against the real ones;
        0 is perfect), "heldout_pair_fraction" (valid generated images showing a colour-shape pair from
        HELD_OUT, which the train split never shows), "fid" and "fid_real_vs_real" (both on n images a side),
        and "fid_images" (n).
    """
    gen = judge_images(judge, generated)
    ref = judge_images(judge, real)
    p_gen = attribute_frequencies(gen.predictions, gen.valid)
    p_ref = attribute_frequencies(ref.predictions, ref.valid)
    result = {"valid_fraction": gen.valid.float().mean().item(), "real_valid_fraction": ref.valid.float().mean().item()}
    for name in ATTRIBUTES:
        result[f"tv_{name}"] = total_variation(p_gen[name], p_ref[name])
    result["tv_mean"] = sum(result[f"tv_{name}"] for name in ATTRIBUTES) / len(ATTRIBUTES)
    pairs = [(gen.names(i)["color"], gen.names(i)["shape"]) for i in gen.valid.nonzero()[:, 0].tolist()]
    result["heldout_pair_fraction"] = sum(p in HELD_OUT for p in pairs) / max(1, len(pairs))
    n = min(generated.shape[0], real.shape[0] // 2)
    result["fid"] = frechet_distance(gen.features[:n], ref.features[:n])
    result["fid_real_vs_real"] = frechet_distance(ref.features[:n], ref.features[n:2 * n])
    result["fid_images"] = n
    return result


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB, for images in [-1, 1] measured on the [0, 1] scale (MAX = 1):
    PSNR = 10 log10(1 / MSE) with MSE the mean of ((x - y) / 2)^2 over C, H, W.

    Values are compared as they are (no rounding to 8 bits). Identical images have MSE = 0 and PSNR = +inf,
    which is the right answer rather than an arbitrary cap; averages over a batch are then inf too.
    An error of 8 levels out of 255 everywhere gives about 30 dB, 1 level about 48 dB.

    Args:
        x, y: (B, C, H, W) images in [-1, 1], on one device.
    Returns:
        (B,) float32 PSNR in dB.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"psnr needs two batches of images (B, C, H, W) of one shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    mse = ((x.float() - y.float()) / 2).square().flatten(1).mean(1)  # (B,) on the [0, 1] scale
    return 10 * torch.log10(1 / mse)


@torch.no_grad()
def evaluate_reconstructions(originals: Tensor, reconstructions: Tensor, judge: Judge | None = None,
                             lpips: nn.Module | None = None, batch_size: int = 256) -> dict[str, float]:
    """How faithful an autoencoder's reconstructions are: PSNR, LPIPS, and whether the judge reads them the same.

    Args:
        originals: (N, 3, H, W) images in [-1, 1].
        reconstructions: (N, 3, H, W) their reconstructions, in [-1, 1] (clamp them first, as a saved picture is).
        judge: the Shapes judge; None skips the judge's metrics.
        lpips: a ``tinyldm.perceptual.LPIPS`` (called as ``lpips(x, y) -> (B,)``); None skips LPIPS.
        batch_size: images per LPIPS call.
    Returns:
        "num_images"; "psnr" (mean of the per-image PSNR, dB) and "psnr_min" (the worst image); with ``lpips``:
        "lpips" (mean distance, 0 = identical); with ``judge``: "agree_<attribute>" (fraction of images whose
        attribute the judge reads the same on original and reconstruction), "agree_all" (all four the same),
        "valid_fraction" and "real_valid_fraction" (judged valid, reconstructions and originals) and "fid" (judge
        features, reconstructions against their originals: the distribution shift the autoencoder adds).
    """
    if originals.shape != reconstructions.shape or originals.ndim != 4 or originals.shape[0] < 2:
        raise ValueError(f"originals and reconstructions must be two batches (N, C, H, W) of one shape with N >= 2, "
                         f"got {tuple(originals.shape)} and {tuple(reconstructions.shape)}")
    values = psnr(originals, reconstructions)
    result = {"num_images": originals.shape[0], "psnr": values.mean().item(), "psnr_min": values.min().item()}
    if lpips is not None:
        device = next(lpips.parameters()).device
        distances = [lpips(originals[i:i + batch_size].to(device), reconstructions[i:i + batch_size].to(device))
                     for i in range(0, originals.shape[0], batch_size)]
        result["lpips"] = torch.cat(distances).float().mean().item()
    if judge is not None:
        real, fake = judge_images(judge, originals), judge_images(judge, reconstructions)
        agree = {name: real.predictions[name] == fake.predictions[name] for name in ATTRIBUTES}
        result.update({f"agree_{name}": a.float().mean().item() for name, a in agree.items()})
        result["agree_all"] = torch.stack(list(agree.values())).all(0).float().mean().item()
        result["valid_fraction"] = fake.valid.float().mean().item()
        result["real_valid_fraction"] = real.valid.float().mean().item()
        result["fid"] = frechet_distance(fake.features, real.features)
    return result
