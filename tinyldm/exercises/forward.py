"""Checkers for lesson 1, the forward (noising) process."""

from __future__ import annotations

from typing import Callable

import torch

from tinyldm.data.shapes import shapes_tensor
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.schedule import NoiseSchedule

__all__ = ["check_alpha_bars", "check_first_noisy_step", "first_noisy_step", "end_kl", "check_short_chain",
           "SHORT_CHAIN_STEPS", "SHORT_CHAIN_MAX_BETA", "SHORT_CHAIN_KL"]


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


SHORT_CHAIN_STEPS = 300  # at most this many steps
SHORT_CHAIN_MAX_BETA = 0.05  # no single step may add more noise than this
SHORT_CHAIN_KL = 1e-3  # nats per number: how close q(x_T | x_0) must come to N(0, I)


def end_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> float:
    """KL(q(x_T | x_0) || N(0, I)) per number, averaged over the images ``x0``, in nats.

    q(x_T | x_0) = N(sqrt(abar_T) x_0, (1 - abar_T) I), and the KL of N(mu, s^2) from N(0, 1) is
    (s^2 + mu^2 - 1 - log s^2) / 2 for each number.
    """
    alpha_bar = schedule.alpha_bars[-1].double()
    variance = 1 - alpha_bar
    mean_sq = alpha_bar * x0.double() ** 2
    return float(0.5 * (variance + mean_sq - 1 - torch.log(variance)).mean())


def check_short_chain(fn: Callable[[], NoiseSchedule]) -> None:
    """Experiment: ``fn() -> NoiseSchedule`` with at most SHORT_CHAIN_STEPS steps, every beta at most
    SHORT_CHAIN_MAX_BETA, whose last step is within SHORT_CHAIN_KL nats per number of N(0, I) on Shapes images."""
    name = "short_chain"
    schedule = attempt(fn)
    if schedule is NOT_ATTEMPTED:
        return not_attempted(name)
    if not isinstance(schedule, NoiseSchedule):
        raise AssertionError(f"{name}: return a NoiseSchedule (e.g. NoiseSchedule.linear(T, beta_start, beta_end)), "
                             f"got {type(schedule).__name__}")
    if schedule.num_steps > SHORT_CHAIN_STEPS:
        raise AssertionError(f"{name}: {schedule.num_steps} steps is more than the {SHORT_CHAIN_STEPS} allowed")
    largest = schedule.betas.max().item()
    if largest > SHORT_CHAIN_MAX_BETA + 1e-6:  # float32 stores 0.05 a hair above it
        raise AssertionError(f"{name}: a step adds beta = {largest:.3f} of noise, above the {SHORT_CHAIN_MAX_BETA} "
                             "allowed (a cosine schedule's last steps do that). Hint: a linear schedule with a "
                             "larger beta_end")
    kl = end_kl(schedule, shapes_tensor(64, 32, seed=0))
    if kl > SHORT_CHAIN_KL:
        total = schedule.betas.sum().item()
        raise AssertionError(f"{name}: x_T is {kl:.4f} nats per number from N(0, I), more than {SHORT_CHAIN_KL}. "
                             f"Hint: alpha_bar_T is about exp(-sum of betas) = exp(-{total:.2f}) here; the betas "
                             "must add up to more")
    return passed(name, f"{schedule.num_steps} steps, largest beta {largest:.3f}, x_T within {kl:.1e} nats per "
                        f"number of N(0, I)")
