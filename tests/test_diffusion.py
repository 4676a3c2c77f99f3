"""The objective, the parameterisation conversions and the posterior, checked against independent computations."""

import numpy as np
import pytest
import torch

from tinyldm.diffusion import (
    alpha_bars_prev,
    as_eps_model,
    diffusion_loss,
    eps_to_v,
    eps_to_x0,
    q_posterior,
    v_target,
    v_to_eps,
    x0_to_eps,
)
from tinyldm.schedule import NoiseSchedule, q_sample


def _batch(shape=(6, 3, 4, 4), seed=0, schedule=None):
    gen = torch.Generator().manual_seed(seed)
    schedule = schedule or NoiseSchedule.linear(1000)
    x0 = torch.randn(shape, generator=gen)
    eps = torch.randn(shape, generator=gen)
    t = torch.tensor([0, 1, 10, 500, 998, 999][: shape[0]])
    return x0, eps, t, schedule


def test_alpha_bars_prev_starts_at_one_and_shifts_by_one():
    schedule = NoiseSchedule.cosine(50)
    prev = alpha_bars_prev(schedule)
    assert prev.shape == (50,)
    assert prev[0].item() == 1.0
    torch.testing.assert_close(prev[1:], schedule.alpha_bars[:-1])


def _float64_schedule(schedule):
    """alpha_bar, alpha, beta in float64, recomputed from the betas with a plain running product."""
    b = schedule.betas.double().numpy()
    return np.cumprod(1 - b), 1 - b, b


def test_posterior_matches_bayes_rule_for_gaussians():
    # Bayes' rule in float64, from the two Gaussians the forward process defines:
    # prior q(x_{t-1} | x0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1});
    # likelihood q(x_t | x_{t-1}) = N(sqrt(a_t) x_{t-1}, b_t).
    # Their product is Gaussian with precision = 1/prior_var + a_t/b_t and a precision-weighted mean.
    x0, _, _, schedule = _batch((5, 7))
    gen = torch.Generator().manual_seed(1)
    xt = torch.randn(5, 7, generator=gen)
    t = torch.tensor([1, 2, 50, 400, 999])
    mean, variance = q_posterior(x0, xt, t, schedule)
    assert mean.shape == (5, 7) and variance.shape == (5, 1)
    ab, a, b = _float64_schedule(schedule)
    for row, step in enumerate(t.tolist()):
        prior_mean = np.sqrt(ab[step - 1]) * x0[row].double().numpy()
        prior_var = 1 - ab[step - 1]
        precision = 1 / prior_var + a[step] / b[step]
        expected_mean = (prior_mean / prior_var + np.sqrt(a[step]) * xt[row].double().numpy() / b[step]) / precision
        np.testing.assert_allclose(variance[row, 0].item(), 1 / precision, rtol=1e-5)
        np.testing.assert_allclose(mean[row].numpy(), expected_mean, rtol=1e-5, atol=1e-6)


def test_posterior_matches_a_numerical_bayes_integral_on_a_grid():
    # No algebra at all: multiply the two densities on a fine grid, normalise, take the first two moments.
    schedule = NoiseSchedule.linear(1000)
    ab, a, b = _float64_schedule(schedule)
    for step in (3, 200, 900):
        x0_value = 0.7
        xt_value = np.sqrt(ab[step]) * x0_value - 0.4 * np.sqrt(1 - ab[step])  # a plausible x_t for this x0
        grid = np.linspace(-4, 4, 800001)
        log_prior = -((grid - np.sqrt(ab[step - 1]) * x0_value) ** 2) / (2 * (1 - ab[step - 1]))
        log_likelihood = -((xt_value - np.sqrt(a[step]) * grid) ** 2) / (2 * b[step])
        density = np.exp(log_prior + log_likelihood - np.max(log_prior + log_likelihood))
        density /= density.sum()
        grid_mean = np.sum(grid * density)
        grid_var = np.sum((grid - grid_mean) ** 2 * density)
        mean, variance = q_posterior(
            torch.tensor([[x0_value]]), torch.tensor([[xt_value]], dtype=torch.float32), torch.tensor([step]), schedule
        )
        assert mean.item() == pytest.approx(grid_mean, abs=1e-5)
        assert variance.item() == pytest.approx(grid_var, rel=1e-3)


def test_posterior_at_the_first_step_is_x0_with_zero_variance():
    x0, eps, _, schedule = _batch((3, 2))
    t = torch.zeros(3, dtype=torch.long)
    mean, variance = q_posterior(x0, q_sample(x0, t, schedule, eps), t, schedule)
    torch.testing.assert_close(mean, x0)
    assert (variance == 0).all()


def test_true_eps_recovers_x0_and_back():
    x0, eps, t, schedule = _batch()
    xt = q_sample(x0, t, schedule, eps)
    # float32: at t = 999 the division by sqrt(alpha_bar) ~ 0.006 magnifies rounding by ~150
    torch.testing.assert_close(eps_to_x0(eps, t, xt, schedule), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_to_eps(x0, t, xt, schedule), eps, atol=1e-4, rtol=1e-4)


def test_conversions_round_trip_eps_x0_v():
    x0, eps, t, schedule = _batch()
    x0, eps = x0.double(), eps.double()
    xt = q_sample(x0, t, schedule, eps)
    v = v_target(x0, eps, t, schedule)
    torch.testing.assert_close(eps_to_v(eps, t, xt, schedule), v)
    torch.testing.assert_close(v_to_eps(v, t, xt, schedule), eps)
    torch.testing.assert_close(eps_to_x0(v_to_eps(v, t, xt, schedule), t, xt, schedule), x0)
    torch.testing.assert_close(x0_to_eps(eps_to_x0(eps, t, xt, schedule), t, xt, schedule), eps)
    torch.testing.assert_close(v_to_eps(eps_to_v(eps, t, xt, schedule), t, xt, schedule), eps)


def test_v_is_a_rotation_of_x0_and_eps():
    # Salimans & Ho 2022: with phi = atan(sqrt(1-ab)/sqrt(ab)), x_t = cos(phi) x0 + sin(phi) eps and v = d x_t / d phi.
    x0, eps, t, schedule = _batch()
    x0, eps = x0.double(), eps.double()
    phi = torch.atan2((1 - schedule.alpha_bars.double()).sqrt(), schedule.alpha_bars.double().sqrt())[t]
    phi = phi.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(v_target(x0, eps, t, schedule), torch.cos(phi) * eps - torch.sin(phi) * x0)


def test_as_eps_model_turns_x0_and_v_oracles_into_the_eps_oracle():
    x0, eps, t, schedule = _batch()
    x0, eps = x0.double(), eps.double()
    xt = q_sample(x0, t, schedule, eps)
    oracles = {
        "eps": lambda xt_, t_: eps,
        "x0": lambda xt_, t_: x0,
        "v": lambda xt_, t_: v_target(x0, eps, t_, schedule),
    }
    for prediction, oracle in oracles.items():
        torch.testing.assert_close(as_eps_model(oracle, schedule, prediction)(xt, t), eps)
    with pytest.raises(ValueError, match="prediction must be one of"):
        as_eps_model(oracles["eps"], schedule, "score")


def test_loss_is_zero_for_the_oracle_and_mean_eps_squared_for_zero():
    x0, eps, t, schedule = _batch((6, 2))
    oracle = lambda xt, t_: x0_to_eps(x0, t_, xt, schedule)  # noqa: E731
    assert diffusion_loss(oracle, x0, schedule, t=t, eps=eps).item() < 1e-8
    zero = lambda xt, t_: torch.zeros_like(xt)  # noqa: E731
    torch.testing.assert_close(diffusion_loss(zero, x0, schedule, t=t, eps=eps), eps.pow(2).mean())
    torch.testing.assert_close(diffusion_loss(zero, x0, schedule, t=t, eps=eps, prediction="x0"), x0.pow(2).mean())
    v = v_target(x0, eps, t, schedule)
    torch.testing.assert_close(diffusion_loss(zero, x0, schedule, t=t, eps=eps, prediction="v"), v.pow(2).mean())


def test_loss_draws_t_and_eps_from_the_generator_and_passes_conditioning():
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    schedule = NoiseSchedule.linear(100)
    seen = {}

    def model(xt, t, label=None):
        seen["label"] = label
        return xt * 0.5

    first = diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(3), conditioning={"label": 7})
    second = diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(3), conditioning={"label": 7})
    other = diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(4), conditioning={"label": 7})
    assert first.item() == second.item() != other.item()
    assert seen["label"] == 7


def test_loss_rejects_a_model_output_of_the_wrong_shape():
    x0 = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"shaped like its input, \(4, 2\), got \(4, 3\)"):
        diffusion_loss(lambda xt, t: torch.zeros(4, 3), x0, NoiseSchedule.linear(10))


def test_conversions_reject_mismatched_shapes_and_bad_steps():
    schedule = NoiseSchedule.linear(10)
    xt = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"eps must have the shape of xt, \(4, 2\), got \(4, 3\)"):
        eps_to_x0(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), xt, schedule)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\]"):
        eps_to_x0(torch.randn(4, 2), torch.full((4,), 10), xt, schedule)
    with pytest.raises(ValueError, match=r"x0 must have the shape of xt"):
        q_posterior(torch.randn(3, 2), xt, torch.zeros(4, dtype=torch.long), schedule)
