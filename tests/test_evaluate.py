"""The judge and the metrics built on it: FID against an independent formula, frequencies, the shipped judge."""

import numpy as np
import pytest
import scipy.linalg
import torch

from tinyldm.data import Shapes
from tinyldm.evaluate import (ATTRIBUTES, NEGATIVE_KINDS, Judge, JudgeConfig, attribute_frequencies,
                              evaluate_samples, frechet_distance, judge_accuracy, judge_images, spoil,
                              total_variation)
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
