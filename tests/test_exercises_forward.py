"""Lesson 1's checkers accept right answers, reject wrong ones with a hint, and let unfinished ones pass by."""

import pytest
import torch

from tinyldm.exercises.forward import check_alpha_bars, check_first_noisy_step, check_short_chain, end_kl
from tinyldm.schedule import NoiseSchedule


def test_check_alpha_bars(capsys):
    check_alpha_bars(lambda betas: torch.cumprod(1 - betas, 0))
    assert "[ok] alpha_bars" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="torch.cumprod"):
        check_alpha_bars(lambda betas: 1 - betas)  # forgot the product
    with pytest.raises(AssertionError, match="expected shape"):
        check_alpha_bars(lambda betas: torch.cumprod(1 - betas, 0)[1:])


def test_end_kl_matches_torch_distributions():
    schedule = NoiseSchedule.linear(50, 1e-3, 0.05)
    x0 = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    abar = schedule.alpha_bars[-1].double()
    q = torch.distributions.Normal(abar.sqrt() * x0.double(), (1 - abar).sqrt())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean().item()
    assert abs(end_kl(schedule, x0) - expected) < 1e-12


def test_check_short_chain(capsys):
    check_short_chain(lambda: NoiseSchedule.linear(300, 1e-4, 0.05))
    assert "[ok] short_chain" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="more than the 300 allowed"):
        check_short_chain(lambda: NoiseSchedule.linear(1000))
    with pytest.raises(AssertionError, match="cosine schedule"):
        check_short_chain(lambda: NoiseSchedule.cosine(300))
    with pytest.raises(AssertionError, match="must add up to more"):
        check_short_chain(lambda: NoiseSchedule.linear(300))  # beta_end 0.02: the signal is not gone
    with pytest.raises(AssertionError, match="return a NoiseSchedule"):
        check_short_chain(lambda: [0.01] * 300)


def test_check_first_noisy_step(capsys):
    def answer(schedule, threshold):
        below = (schedule.alpha_bars.sqrt() < threshold).nonzero()
        return int(below[0]) if len(below) else -1

    check_first_noisy_step(answer)
    assert "[ok] first_noisy_step" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="return -1"):
        check_first_noisy_step(lambda s, th: int((s.alpha_bars.sqrt() < th).float().argmax()))


def test_unfinished_exercises_are_reported_not_raised(capsys):
    def todo(*args):
        raise NotImplementedError

    check_alpha_bars(todo)
    check_short_chain(lambda: None)
    check_first_noisy_step(todo)
    out = capsys.readouterr().out
    assert out.count("[todo]") == 3 and "[ok]" not in out
