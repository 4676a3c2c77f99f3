"""Lesson 1's checkers accept right answers, reject wrong ones with a hint, and let unfinished ones pass by."""

import pytest
import torch

from tinyldm.exercises.forward import check_alpha_bars, check_first_noisy_step, check_q_sample
from tinyldm.schedule import q_sample


def test_check_alpha_bars(capsys):
    check_alpha_bars(lambda betas: torch.cumprod(1 - betas, 0))
    assert "[ok] alpha_bars" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="torch.cumprod"):
        check_alpha_bars(lambda betas: 1 - betas)  # forgot the product
    with pytest.raises(AssertionError, match="expected shape"):
        check_alpha_bars(lambda betas: torch.cumprod(1 - betas, 0)[1:])


def test_check_q_sample(capsys):
    check_q_sample(q_sample)
    assert "[ok] q_sample" in capsys.readouterr().out

    def forgot_sqrt(x0, t, schedule, eps):
        a = schedule.alpha_bars[t].view(-1, *([1] * (x0.ndim - 1)))
        return a * x0 + (1 - a) * eps

    with pytest.raises(AssertionError, match="sqrt"):
        check_q_sample(forgot_sqrt)


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
    check_q_sample(lambda *a: None)
    check_first_noisy_step(todo)
    out = capsys.readouterr().out
    assert out.count("[todo]") == 3 and "[ok]" not in out
