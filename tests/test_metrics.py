"""The judge and the metrics built on it: FID against an independent formula, frequencies, the shipped judge,
and the reconstruction metrics (PSNR by hand, judge agreement on spoiled copies)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from tinyldm.data.shapes import Shapes
from tinyldm.evaluation.judge import ATTRIBUTES, NEGATIVE_KINDS, Judge, JudgeConfig, spoil
from tinyldm.evaluation.metrics import (
    attribute_frequencies,
    caption_accuracy,
    evaluate_reconstructions,
    evaluate_samples,
    frechet_distance,
    judge_accuracy,
    judge_images,
    psnr,
    total_variation,
)
from tinyldm.pretrained import checkpoint_dir


def _real(n, split="test", seed=5):
    data = Shapes(n, seed=seed, split=split)
    items = [data[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), [it["attributes"] for it in items]


@pytest.fixture(scope="module")
def judge():
    return Judge.from_pretrained(checkpoint_dir("judge-shapes"))


def test_frechet_distance_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=generator) @ torch.randn(6, 6, generator=generator)
    b = torch.randn(200, 6, generator=generator) * 2 + 1
    mu_a, mu_b = a.double().mean(0).numpy(), b.double().mean(0).numpy()
    cov_a, cov_b = np.cov(a.double().numpy().T), np.cov(b.double().numpy().T)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_refuses_mismatched_features():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))


def test_frequencies_and_total_variation():
    predictions = {name: torch.tensor([0, 0, 1, 1]) for name in ATTRIBUTES}
    freq = attribute_frequencies(predictions, torch.tensor([True, True, True, False]))
    assert freq["shape"].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])
    assert total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert total_variation(freq["size"], freq["size"]) == 0.0


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_spoil_keeps_shape_and_range(kind):
    images, _ = _real(6)
    partners, _ = _real(6, seed=6)
    out = spoil(images, kind, torch.Generator().manual_seed(0), partners)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.equal(out, images)


def test_spoil_empty_removes_the_colour_and_two_objects_add_some():
    images, _ = _real(6)
    partners, _ = _real(6, seed=6)
    generator = torch.Generator().manual_seed(0)

    def colourful(x):  # pixels whose channels differ by more than 40 of 255 levels
        return ((x.amax(1) - x.amin(1)) * 127.5 > 40).flatten(1).sum(1)

    assert (colourful(spoil(images, "empty", generator)) == 0).all()
    more = colourful(spoil(images, "two_objects", generator, partners)) - colourful(images)
    assert (more >= 0).all() and (more > 0).sum() >= 5  # a large partner may cover a small object entirely
    with pytest.raises(ValueError, match="needs partners"):
        spoil(images, "two_objects", generator)


def test_an_untrained_judge_gives_well_formed_output():
    verdict = judge_images(Judge(JudgeConfig(width=4, feature_dim=8)), torch.zeros(5, 3, 64, 64), batch_size=2)
    assert verdict.features.shape == (5, 8) and verdict.valid.dtype == torch.bool
    assert set(verdict.names(0)) == set(ATTRIBUTES)


def test_the_judge_refuses_grey_images():
    with pytest.raises(ValueError, match=r"RGB images \(B, 3, H, W\)"):
        Judge(JudgeConfig(width=4, feature_dim=8))(torch.zeros(1, 1, 32, 32))


def test_the_shipped_judge_reads_fresh_images_almost_perfectly(judge):
    images, attributes = _real(300, seed=99)
    held, held_attributes = _real(60, split="heldout", seed=99)
    accuracy = judge_accuracy(judge, torch.cat([images, held]), attributes + held_attributes)
    assert min(accuracy[name] for name in ATTRIBUTES) >= 0.98, accuracy
    assert accuracy["valid"] >= 0.97, accuracy


def test_the_shipped_judge_rejects_spoiled_images(judge):
    images, _ = _real(70, seed=98)
    partners, _ = _real(70, seed=97)
    generator = torch.Generator().manual_seed(0)
    for kind in NEGATIVE_KINDS:
        rejected = 1 - judge_images(judge, spoil(images, kind, generator, partners)).valid.float().mean().item()
        assert rejected >= 0.85, (kind, rejected)


def test_evaluate_samples_ranks_real_above_spoiled(judge):
    real, _ = _real(400, seed=1)
    other, _ = _real(200, seed=2)
    blurred = spoil(other, "blur", torch.Generator().manual_seed(0))
    good, bad = evaluate_samples(judge, other, real), evaluate_samples(judge, blurred, real)
    assert good["valid_fraction"] >= 0.97 and bad["valid_fraction"] <= 0.15
    assert good["tv_mean"] < 0.15 and good["heldout_pair_fraction"] == 0.0
    assert good["fid_images"] == 200
    assert good["fid"] < 2 * good["fid_real_vs_real"] and bad["fid"] > 5 * good["fid"]


def test_psnr_of_a_known_error():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.2  # 0.1 on the [0, 1] scale everywhere: MSE 0.01, 20 dB
    y[1, :, :2] += 0.2  # the same error on half the pixels: MSE 0.005, 10 log10(200) dB
    assert psnr(x, y).tolist() == pytest.approx([20.0, 10 * np.log10(200)], rel=1e-5)
    assert psnr(y, x).tolist() == pytest.approx(psnr(x, y).tolist())  # symmetric


def test_psnr_of_identical_images_is_infinite_and_bad_shapes_are_refused():
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    with pytest.raises(ValueError, match=r"psnr needs two batches .* got \(3, 3, 8, 8\) and \(3, 3, 8, 4\)"):
        psnr(x, x[..., :4])


class _ShiftDistance(torch.nn.Module):
    """A stand-in for LPIPS: the mean absolute difference per image, with a parameter to find the device by."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, y):
        return (x - y).abs().flatten(1).mean(1)


def test_evaluate_reconstructions_on_perfect_and_spoiled_copies(judge):
    images, _ = _real(120, seed=11)
    noisy = (images + 0.02 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    blurred = spoil(images, "blur", torch.Generator().manual_seed(0))
    good = evaluate_reconstructions(images, noisy, judge=judge, lpips=_ShiftDistance(), batch_size=50)
    bad = evaluate_reconstructions(images, blurred, judge=judge)
    assert good["num_images"] == 120 and 33 < good["psnr"] < 41 and good["psnr_min"] <= good["psnr"]
    assert good["lpips"] == pytest.approx((images - noisy).abs().mean().item(), rel=1e-5)
    assert good["agree_all"] >= 0.98 and good["fid"] < 5
    assert bad["psnr"] < good["psnr"] - 10 and "lpips" not in bad
    assert bad["valid_fraction"] < 0.5 <= bad["real_valid_fraction"] and bad["fid"] > 10 * good["fid"]
    assert set(bad) >= {f"agree_{name}" for name in ATTRIBUTES} | {"agree_all"}
    assert bad["agree_all"] <= min(bad[f"agree_{name}"] for name in ATTRIBUTES)


def test_evaluate_reconstructions_refuses_mismatched_batches():
    with pytest.raises(ValueError, match=r"two batches .* N >= 2, got \(4, 3, 8, 8\) and \(3, 3, 8, 8\)"):
        evaluate_reconstructions(torch.zeros(4, 3, 8, 8), torch.zeros(3, 3, 8, 8))


@pytest.mark.slow
def test_the_shipped_autoencoder_reconstructs_fresh_images_faithfully(judge):
    from tinyldm.jobs.autoencoder import load_autoencoder, reconstruct

    model = load_autoencoder(checkpoint_dir("autoencoder-shapes"))
    images, _ = _real(200, seed=23)
    metrics = evaluate_reconstructions(images, reconstruct(model, images), judge=judge)
    assert metrics["psnr"] >= 30 and metrics["agree_all"] >= 0.99, metrics  # the lesson-4 targets
    assert model.downsampling_factor == 4 and 0.3 < model.scale_factor.item() < 3


def test_caption_accuracy_reads_captions_as_the_truth(judge):
    data = Shapes(64, seed=11, split="test")
    images = torch.stack([data[i]["image"] for i in range(64)])
    captions = [data[i]["caption"] for i in range(64)]
    right = caption_accuracy(judge, images, captions)
    assert right["all"] > 0.95 and right["valid"] > 0.95
    # The same images under the captions of the next image: colours, shapes, positions now mostly wrong.
    wrong = caption_accuracy(judge, images, captions[1:] + captions[:1])
    assert wrong["all"] < 0.2 and wrong["valid"] == right["valid"]
    with pytest.raises(ValueError, match="one caption per image, got 63 captions for 64 images"):
        caption_accuracy(judge, images, captions[1:])
