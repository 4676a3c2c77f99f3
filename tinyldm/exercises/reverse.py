"""Checkers for lesson 2, noise prediction and the reverse process."""

from __future__ import annotations

from typing import Callable

import torch

from tinyldm.data.toy import toy_2d
from tinyldm.diffusion import q_posterior, v_to_eps
from tinyldm.evaluation.distances import sliced_wasserstein
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.reverse_step import ddim_step
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule

__all__ = ["check_posterior_mean", "check_ddim_step", "check_v_to_eps", "ddim_distance", "check_fewest_ddim_steps",
           "FEWEST_STEPS_DISTANCE"]


def _inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded (batch, 2) standard normal tensors."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, generator=gen), torch.randn(batch, 2, generator=gen)


def check_v_to_eps(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(v, t, xt, schedule) -> eps``, the noise implied by a velocity (Salimans & Ho 2022, Sec. 4)."""
    name = "v_to_eps"
    for schedule in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(100)):
        v, xt = _inputs(6, seed=schedule.num_steps)
        t = torch.tensor([0, 1, 7, 50, schedule.num_steps // 2, schedule.num_steps - 1])
        got = attempt(fn, v.clone(), t, xt.clone(), schedule)
        if got is NOT_ATTEMPTED:
            not_attempted(name)
            return
        expect_close(
            name, got, v_to_eps(v, t, xt, schedule), atol=1e-4,
            hint="write x_t and v as combinations of x0 and eps (x_t = a x0 + s eps, v = a eps - s x0 with "
            "a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t)), eliminate x0 and simplify with a^2 + s^2 = 1. "
            "Pick alpha_bar per row with schedule.alpha_bars[t] and reshape it to (B, 1)",
        )
    passed(name, "turns a velocity back into noise on the linear and cosine schedules")


def check_posterior_mean(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(x0, xt, t, schedule) -> mean`` of q(x_{t-1} | x_t, x0) (Ho et al. 2020, Eq. 7)."""
    name = "posterior_mean"
    schedule = NoiseSchedule.linear(1000)
    x0, xt = _inputs(5, seed=1)
    cases = [
        (torch.tensor([1, 10, 250, 600, 999]),
         "mu-tilde = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / "
         "(1 - alpha_bar_t) * x_t. alpha_bar_{t-1} is the entry before t: schedule.alpha_bars[t - 1]"),
        (torch.tensor([0, 0, 3, 0, 1]),
         "at t = 0 the step before is x0 itself, so alpha_bar_{t-1} must be 1 (not schedule.alpha_bars[-1], "
         "which is what index t - 1 = -1 gives); tinyldm.diffusion.alpha_bars_prev(schedule) has the 1 in front"),
    ]
    for t, hint in cases:
        got = attempt(fn, x0.clone(), xt.clone(), t, schedule)
        if got is NOT_ATTEMPTED:
            not_attempted(name)
            return
        expect_close(name, got, q_posterior(x0, xt, t, schedule)[0], hint=hint, atol=1e-3)
    passed(name, "matches Eq. 7 for every t, including t = 0 where the mean is x0")


def check_ddim_step(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(eps_pred, t, t_prev, xt, schedule) -> x_prev``, deterministic DDIM (Song et al. 2021, Eq. 12)."""
    name = "ddim_step"
    schedule = NoiseSchedule.linear(1000)
    eps_pred, xt = _inputs(4, seed=2)
    cases = [
        (torch.tensor([999, 500, 300, 20]), torch.tensor([979, 400, 0, 19]),
         "x_prev = sqrt(alpha_bar_prev) * x0_pred + sqrt(1 - alpha_bar_prev) * eps_pred, with x0_pred from "
         "eps_to_x0 and alpha_bar_prev = schedule.alpha_bars[t_prev]"),
        (torch.tensor([999, 19, 3, 0]), torch.tensor([-1, -1, -1, -1]),
         "t_prev = -1 means the clean sample: alpha_bar_prev = 1, so the step returns x0_pred exactly "
         "(schedule.alpha_bars[-1] would be the last, noisiest entry instead); use torch.where(t_prev >= 0, ...)"),
    ]
    for t, t_prev, hint in cases:
        got = attempt(fn, eps_pred.clone(), t, t_prev, xt.clone(), schedule)
        if got is NOT_ATTEMPTED:
            not_attempted(name)
            return
        expect_close(name, got, ddim_step(eps_pred, t, t_prev, xt, schedule), hint=hint, atol=1e-3)
    passed(name, "takes deterministic DDIM steps of any size, down to x0")


FEWEST_STEPS_DISTANCE = 0.04  # how close to the data the samples must come (sliced Wasserstein distance)


@torch.no_grad()
def ddim_distance(model: Callable[..., torch.Tensor], schedule: NoiseSchedule, steps: int, n: int = 4000) -> float:
    """Sliced Wasserstein distance between ``n`` deterministic DDIM samples of the 2-D moons model and 20,000
    fresh data points, with the starting noise and the projections seeded as in lesson 2's comparison."""
    device = schedule.betas.device
    x = ddim_sample(model, (n, 2), schedule, steps=steps, eta=0.0, generator=torch.Generator(device).manual_seed(1),
                    progress=False).cpu()
    truth = toy_2d(20_000, "moons", seed=3)
    return sliced_wasserstein(x, truth, num_projections=128, generator=torch.Generator().manual_seed(0)).item()


def check_fewest_ddim_steps(fn: Callable[[], int], model: Callable[..., torch.Tensor], schedule: NoiseSchedule) -> None:
    """Experiment: ``fn() -> steps``, about the fewest deterministic DDIM steps whose samples come within
    FEWEST_STEPS_DISTANCE of the data: the checker accepts ``steps`` if it is close enough and half as many is not."""
    name = "fewest_ddim_steps"
    steps = attempt(fn)
    if steps is NOT_ATTEMPTED:
        return not_attempted(name)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= schedule.num_steps:
        raise AssertionError(f"{name}: return a number of steps, an int in [1, {schedule.num_steps}], got {steps!r}")
    distance = ddim_distance(model, schedule, steps)
    if distance > FEWEST_STEPS_DISTANCE:
        raise AssertionError(f"{name}: with {steps} steps the samples are {distance:.3f} from the data, more than "
                             f"{FEWEST_STEPS_DISTANCE}. Hint: take more steps")
    half = steps // 2
    if half >= 1 and (half_distance := ddim_distance(model, schedule, half)) <= FEWEST_STEPS_DISTANCE:
        raise AssertionError(f"{name}: {half} steps are also close enough ({half_distance:.3f}). Hint: fewer steps")
    return passed(name, f"{steps} steps: distance {distance:.3f} <= {FEWEST_STEPS_DISTANCE}, and {half} steps are "
                        "not enough")
