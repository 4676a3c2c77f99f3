"""One step of the reverse process: DDPM's Algorithm 2, its variance, DDIM's step from any x_t, and the step
sequences; closed forms with known answers."""

import math

import pytest
import torch

from tinyldm.diffusion import x0_to_eps
from tinyldm.reverse_step import ddim_step, ddim_timesteps, ddpm_step
from tinyldm.schedule import NoiseSchedule, extract, q_sample


def _oracle(x0, schedule):
    """A model that knows x0: it returns exactly the noise that separates x_t from x0."""
    return lambda xt, t: x0_to_eps(x0, t, xt, schedule)


def _data(shape=(16, 2), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_ddpm_step_mean_is_algorithm_2():
    schedule = NoiseSchedule.linear(1000)
    xt, eps_pred = _data(seed=1), _data(seed=2)
    t = torch.randint(1, 1000, (16,), generator=torch.Generator().manual_seed(3))
    got = ddpm_step(eps_pred, t, xt, schedule, noise=torch.zeros_like(xt))
    # Ho et al. 2020, Algorithm 2, line 4 without the noise term
    alpha, beta, ab = (extract(v, t, xt) for v in (schedule.alphas, schedule.betas, schedule.alpha_bars))
    expected = (xt - beta / (1 - ab).sqrt() * eps_pred) / alpha.sqrt()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_step_noise_has_the_requested_variance(variance):
    schedule = NoiseSchedule.linear(1000)
    xt, eps_pred, noise = _data(seed=1), _data(seed=2), _data(seed=3)
    t = torch.full((16,), 400)
    spread = ddpm_step(eps_pred, t, xt, schedule, noise, variance=variance) - ddpm_step(
        eps_pred, t, xt, schedule, torch.zeros_like(noise), variance=variance
    )
    beta, ab = schedule.betas[400].item(), schedule.alpha_bars
    sigma2 = beta if variance == "beta" else (1 - ab[399].item()) / (1 - ab[400].item()) * beta
    torch.testing.assert_close(spread, math.sqrt(sigma2) * noise)


def test_ddpm_step_adds_no_noise_at_t_zero():
    schedule = NoiseSchedule.linear(1000)
    xt, eps_pred = _data((2, 3), seed=1), _data((2, 3), seed=2)
    t = torch.tensor([0, 5])
    a = ddpm_step(eps_pred, t, xt, schedule, _data((2, 3), seed=3))
    b = ddpm_step(eps_pred, t, xt, schedule, _data((2, 3), seed=4))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # t = 0: noise ignored
    assert not torch.allclose(a[1], b[1])  # t = 5: noise used
    for variance in ("posterior", "beta"):
        out = ddpm_step(eps_pred, t, xt, schedule, _data((2, 3), seed=3), variance=variance)
        x0_pred = (xt - (1 - schedule.alpha_bars[0]).sqrt() * eps_pred) / schedule.alpha_bars[0].sqrt()
        torch.testing.assert_close(out[0], x0_pred[0], atol=1e-6, rtol=1e-5)


def test_ddim_with_eta_one_and_adjacent_steps_is_the_ddpm_step():
    schedule = NoiseSchedule.linear(1000)
    xt, eps_pred, noise = _data(seed=1), _data(seed=2), _data(seed=3)
    t = torch.randint(0, 1000, (16,), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        ddim_step(eps_pred, t, t - 1, xt, schedule, eta=1.0, noise=noise),
        ddpm_step(eps_pred, t, xt, schedule, noise),
        atol=1e-5, rtol=1e-4,
    )


@pytest.mark.parametrize("start", [0, 3, 250, 998])
def test_deterministic_ddim_step_reconstructs_x0_from_any_xt(start):
    schedule = NoiseSchedule.cosine(1000)
    x0, eps = _data().double(), _data(seed=1).double()
    t = torch.full((16,), start)
    x = q_sample(x0, t, schedule, eps)
    oracle = _oracle(x0, schedule)
    for t_prev in [start // 2, start // 5, -1]:
        t_prev = torch.full((16,), min(t_prev, start - 1))
        x = ddim_step(oracle(x, t), t, t_prev, x, schedule)
        expected = x0 if t_prev[0] < 0 else q_sample(x0, t_prev, schedule, eps)
        torch.testing.assert_close(x, expected)
        t = t_prev
        if t[0] < 0:
            break
    torch.testing.assert_close(x, x0)


def test_ddim_timesteps_are_trailing_and_cover_the_chain():
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert ddim_timesteps(1000, 50)[:3] == [999, 979, 959] and ddim_timesteps(1000, 50)[-1] == 19
    assert ddim_timesteps(1000, 1) == [999]
    assert ddim_timesteps(1000, 3) == [999, 666, 332]  # round(T (S - i) / S) - 1, as Lin et al. 2024 write it
    for steps in (3, 7, 333, 999):
        ts = ddim_timesteps(1000, steps)
        assert len(ts) == steps and ts[0] == 999 and all(a > b >= 0 for a, b in zip(ts, ts[1:]))
