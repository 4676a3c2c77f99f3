"""Checkers for lesson 1, the forward (noising) process."""

from __future__ import annotations

from typing import Callable

import torch

from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.schedule import NoiseSchedule, q_sample

__all__ = ["check_alpha_bars", "check_q_sample", "check_first_noisy_step", "first_noisy_step"]


def check_alpha_bars(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Exercise: ``fn(betas) -> alpha_bars``, the running product of (1 - beta) (Ho et al. 2020, Eq. 4)."""
    name = "alpha_bars"
    for schedule in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(250), NoiseSchedule.linear(7, 0.1, 0.5)):
        got = attempt(fn, schedule.betas.clone())
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        expect_close(
            name, got, schedule.alpha_bars,
            hint="alpha_bar_t multiplies alpha_s = 1 - beta_s for every s up to and including t (torch.cumprod)",
        )
    return passed(name, "matches NoiseSchedule.alpha_bars for the linear and cosine schedules")


def check_q_sample(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(x0, t, schedule, eps) -> xt``, the closed form q(x_t | x_0) (Ho et al. 2020, Eq. 4)."""
    name = "q_sample"
    gen = torch.Generator().manual_seed(0)
    schedule = NoiseSchedule.linear(1000)
    for shape in [(4, 3, 8, 8), (5, 2)]:
        x0 = torch.randn(shape, generator=gen)
        eps = torch.randn(shape, generator=gen)
        t = torch.randint(0, schedule.num_steps, (shape[0],), generator=gen)
        got = attempt(fn, x0, t, schedule, eps)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        expect_close(
            name, got, q_sample(x0, t, schedule, eps),
            hint="scale x0 by sqrt(alpha_bar_t) and eps by sqrt(1 - alpha_bar_t); pick alpha_bar per image "
            "with schedule.alpha_bars[t] and reshape it to (B, 1, ..., 1) so it broadcasts",
        )
    return passed(name, "matches tinyldm.schedule.q_sample on images and on 2-D points")


def first_noisy_step(schedule: NoiseSchedule, threshold: float) -> int:
    """The first step index t at which sqrt(alpha_bar_t), the weight left on x0, is below ``threshold``.

    Returns -1 when the chain ends before the signal fades that far (a chain that is too short).
    """
    below = (schedule.alpha_bars.sqrt() < threshold).nonzero()
    return int(below[0]) if len(below) else -1


def check_first_noisy_step(fn: Callable[[NoiseSchedule, float], int]) -> None:
    """Exercise: ``fn(schedule, threshold) -> int``, the first step where sqrt(alpha_bar_t) < threshold, or -1."""
    name = "first_noisy_step"
    cases = [
        (NoiseSchedule.linear(1000), 0.05), (NoiseSchedule.cosine(1000), 0.05),
        (NoiseSchedule.linear(1000), 0.5), (NoiseSchedule.linear(10), 0.05),
    ]
    for schedule, threshold in cases:
        got = attempt(fn, schedule, threshold)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        expected = first_noisy_step(schedule, threshold)
        if int(got) != expected:
            raise AssertionError(
                f"{name}: for a {schedule.kind} schedule of {schedule.num_steps} steps and threshold {threshold} "
                f"expected step {expected}, got {got}. Hint: compare schedule.alpha_bars.sqrt() with the "
                "threshold, take the first index where it is below, and return -1 if there is none"
            )
    return passed(name, "right for linear and cosine schedules, and -1 for a chain that is too short")
