"""The forward process checked against independent computations (numpy, the papers' closed forms, Monte Carlo)."""

import math

import numpy as np
import pytest
import torch

from tinyldm.schedule import NoiseSchedule, check_timesteps, extract, q_sample, q_step, q_trajectory


def test_linear_betas_match_numpy_linspace():
    schedule = NoiseSchedule.linear(num_steps=1000, beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(schedule.betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-6)
    assert schedule.num_steps == 1000
    assert schedule.betas.dtype == schedule.alphas.dtype == schedule.alpha_bars.dtype == torch.float32
    assert schedule.betas.shape == schedule.alphas.shape == schedule.alpha_bars.shape == (1000,)


def test_scaled_linear_is_squared_linspace_of_square_roots():
    schedule = NoiseSchedule.scaled_linear(num_steps=1000)
    expected = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    np.testing.assert_allclose(schedule.betas.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("make", [NoiseSchedule.linear, NoiseSchedule.cosine, NoiseSchedule.scaled_linear])
def test_alpha_bars_are_a_float64_running_product(make):
    schedule = make(num_steps=1000)
    # A plain Python loop in double precision, independent of torch.cumprod.
    product, expected = 1.0, []
    for beta in schedule.betas.double().tolist():
        product *= 1.0 - beta
        expected.append(product)
    np.testing.assert_allclose(schedule.alpha_bars.double().numpy(), expected, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(schedule.alphas, 1 - schedule.betas)


def test_cosine_alpha_bar_follows_the_squared_cosine_formula():
    T, s = 1000, 0.008
    schedule = NoiseSchedule.cosine(num_steps=T, s=s)
    steps = np.arange(1, T + 1)
    f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731  (Nichol & Dhariwal, Eq. 17)
    expected = f(steps) / f(0)
    # Clipping only touches the last few steps, where alpha_bar is already ~0.
    np.testing.assert_allclose(schedule.alpha_bars[:990].double().numpy(), expected[:990], rtol=1e-5)
    assert schedule.betas.max().item() == pytest.approx(0.999)
    assert schedule.alpha_bars[-1].item() < 1e-6


def test_snr_is_alpha_bar_over_one_minus_alpha_bar_and_decreasing():
    schedule = NoiseSchedule.linear()
    t = torch.arange(1000)
    snr = schedule.snr(t)
    a = schedule.alpha_bars
    torch.testing.assert_close(snr, a / (1 - a))
    assert (snr[1:] < snr[:-1]).all()


def test_config_round_trip_rebuilds_the_same_schedule():
    for schedule in [NoiseSchedule.cosine(500, s=0.01), NoiseSchedule.linear(10), NoiseSchedule.scaled_linear(20)]:
        rebuilt = NoiseSchedule.from_config(schedule.config)
        torch.testing.assert_close(rebuilt.betas, schedule.betas, rtol=0, atol=0)
    custom = NoiseSchedule(torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(NoiseSchedule.from_config(custom.config).alpha_bars, custom.alpha_bars)


def test_schedule_moves_with_to_and_state_dict_is_empty_of_parameters():
    schedule = NoiseSchedule.linear(10).to(torch.float64)
    assert schedule.alpha_bars.dtype == torch.float64
    assert list(schedule.parameters()) == []


def test_extract_broadcasts_per_batch_element():
    values = torch.tensor([10.0, 20.0, 30.0])
    x = torch.zeros(2, 3, 4, 4)
    out = extract(values, torch.tensor([2, 0]), x)
    assert out.shape == (2, 1, 1, 1)
    assert out.flatten().tolist() == [30.0, 10.0]


def test_q_sample_matches_the_closed_form_elementwise():
    gen = torch.Generator().manual_seed(0)
    schedule = NoiseSchedule.cosine(100)
    x0 = torch.randn(3, 2, 5, generator=gen)
    eps = torch.randn(3, 2, 5, generator=gen)
    t = torch.tensor([0, 50, 99])
    xt = q_sample(x0, t, schedule, eps)
    for i, step in enumerate(t.tolist()):
        a = schedule.alpha_bars[step].item()
        torch.testing.assert_close(xt[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i])


def test_q_step_at_t0_equals_q_sample_at_t0():
    gen = torch.Generator().manual_seed(1)
    schedule = NoiseSchedule.linear(50)
    x0, eps = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    t = torch.zeros(4, dtype=torch.long)
    torch.testing.assert_close(q_step(x0, t, schedule, eps), q_sample(x0, t, schedule, eps))


def test_iterated_chain_matches_closed_form_in_distribution():
    """Monte Carlo: running q_step k+1 times gives mean sqrt(alpha_bar_k) x0 and variance 1 - alpha_bar_k.

    With n = 200,000 samples, the sample mean's standard error is at most 1/sqrt(n) ~ 0.0022 and the sample
    variance's is sqrt(2/n) ~ 0.0032; the tolerances below are 5 standard errors.
    """
    gen = torch.Generator().manual_seed(2)
    schedule = NoiseSchedule.linear(200)
    n, k = 200_000, 149
    x0 = torch.tensor([1.5, -0.5]).repeat(n, 1)  # (n, 2): two different starting points
    x = x0
    for step in range(k + 1):
        t = torch.full((n,), step, dtype=torch.long)
        x = q_step(x, t, schedule, torch.randn(x.shape, generator=gen))
    alpha_bar = schedule.alpha_bars[k].item()
    mean_expected = math.sqrt(alpha_bar) * x0[0]
    var_expected = 1 - alpha_bar
    mean_se, var_se = 1 / math.sqrt(n), math.sqrt(2 / n)
    torch.testing.assert_close(x.mean(0), mean_expected, atol=5 * mean_se, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((2,), var_expected), atol=5 * var_se, rtol=0)


def test_same_seed_same_numbers():
    schedule = NoiseSchedule.linear(10)
    x0 = torch.ones(2, 3)
    t = torch.tensor([3, 7])
    run = lambda: q_sample(x0, t, schedule, torch.randn(2, 3, generator=torch.Generator().manual_seed(5)))  # noqa: E731
    assert torch.equal(run(), run())


@pytest.mark.parametrize("betas", [torch.tensor([0.1, 0.0]), torch.tensor([0.5, 1.0]), torch.tensor([-0.1, 0.2])])
def test_betas_outside_open_unit_interval_are_rejected(betas):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        NoiseSchedule(betas)


def test_linear_beta_end_of_one_is_rejected_with_a_fix():
    with pytest.raises(ValueError, match="lower beta_end"):
        NoiseSchedule.linear(num_steps=10, beta_end=1.0)


@pytest.mark.parametrize("make", [NoiseSchedule.linear, NoiseSchedule.scaled_linear])
def test_a_falling_linear_schedule_is_refused_with_the_swap(make):
    with pytest.raises(ValueError, match=r"betas must not decrease.*beta_start=0.02 is above beta_end=0.0001: swap "
                                         r"beta_start and beta_end \(beta_start=0.0001, beta_end=0.02\)"):
        make(num_steps=10, beta_start=0.02, beta_end=1e-4)
    assert make(num_steps=10, beta_start=1e-4, beta_end=0.02).betas.diff().min() > 0  # the swap works


def test_custom_betas_that_fall_anywhere_are_refused_naming_the_step():
    with pytest.raises(ValueError, match=r"beta\[2\]=0.1 < beta\[1\]=0.2: the forward process must add more noise "
                                         r"at later steps.*betas.flip\(0\)"):
        NoiseSchedule(torch.tensor([0.1, 0.2, 0.1, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("num_steps", [1, 2, 10, 250, 1000, 4000])
def test_the_shipped_schedules_and_equal_neighbours_are_accepted(num_steps):
    for make in (NoiseSchedule.linear, NoiseSchedule.cosine, NoiseSchedule.scaled_linear):
        betas = make(num_steps=num_steps).betas
        assert (betas[1:] >= betas[:-1]).all()
    clipped = NoiseSchedule.cosine(num_steps, max_beta=0.02).betas  # clipping makes the last betas equal
    assert clipped[-1] == pytest.approx(0.02) and (num_steps < 10 or clipped[-2] == clipped[-1])
    NoiseSchedule(torch.full((num_steps,), 0.01))  # a constant schedule does not decrease
    NoiseSchedule.linear(num_steps, beta_start=0.01, beta_end=0.01)


@pytest.mark.parametrize("num_steps", [0, -5])
def test_num_steps_below_one_is_rejected(num_steps):
    for make in (NoiseSchedule.linear, NoiseSchedule.cosine, NoiseSchedule.scaled_linear):
        with pytest.raises(ValueError, match=f"num_steps must be at least 1, got {num_steps}"):
            make(num_steps=num_steps)


def test_num_steps_of_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="num_steps must be an int"):
        NoiseSchedule.linear(num_steps=10.0)


def test_betas_must_be_a_1d_tensor():
    with pytest.raises(TypeError, match="torch.Tensor"):
        NoiseSchedule([0.1, 0.2])
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        NoiseSchedule(torch.full((2, 2), 0.1))


def test_t_out_of_range_names_the_values_and_the_range():
    schedule = NoiseSchedule.linear(10)
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\].*from 0 to 10"):
        q_sample(x0, torch.tensor([0, 10]), schedule, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="t must lie in"):
        q_step(x0, torch.tensor([-1, 0]), schedule, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="t must lie in"):
        schedule.snr(torch.tensor([10]))


def test_t_of_wrong_dtype_or_shape_is_rejected():
    schedule = NoiseSchedule.linear(10)
    x0 = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"torch.int64, got torch.float32.*t.long\(\)"):
        q_sample(x0, torch.tensor([1.0, 2.0]), schedule, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="t must be an int64 tensor, got int"):
        q_sample(x0, 3, schedule, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\).*got \(3,\)"):
        q_sample(x0, torch.tensor([1, 2, 3]), schedule, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="got ()"):
        check_timesteps(torch.tensor(1), 2, 10)


def test_mismatched_x0_and_eps_shapes_are_rejected():
    schedule = NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match=r"eps must have the same shape as x0, \(2, 3\), got \(2, 4\)"):
        q_sample(torch.zeros(2, 3), torch.tensor([1, 2]), schedule, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="eps must have the same shape as x_prev"):
        q_step(torch.zeros(2, 3), torch.tensor([1, 2]), schedule, torch.zeros(3, 3))


def test_unknown_config_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule kind 'sigmoid'"):
        NoiseSchedule.from_config({"kind": "sigmoid", "num_steps": 10})


def test_q_trajectory_keeps_x0_and_the_requested_steps_of_one_path():
    schedule = NoiseSchedule.linear(20)
    x0 = torch.ones(2, 3)
    frames = q_trajectory(x0, schedule, [-1, 4, 19], generator=torch.Generator().manual_seed(0))
    assert frames.shape == (3, 2, 3)
    assert torch.equal(frames[0], x0)
    # Replaying the same noise through q_step by hand gives the same path.
    gen = torch.Generator().manual_seed(0)
    x = x0
    for step in range(20):
        x = q_step(x, torch.full((2,), step), schedule, torch.randn(2, 3, generator=gen))
        if step == 4:
            torch.testing.assert_close(frames[1], x)
    torch.testing.assert_close(frames[2], x)


def test_q_trajectory_rejects_steps_out_of_range():
    with pytest.raises(ValueError, match=r"record steps must lie in \[-1, 9\], got \[10\]"):
        q_trajectory(torch.zeros(1, 2), NoiseSchedule.linear(10), [0, 10])
