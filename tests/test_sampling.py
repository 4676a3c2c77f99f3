"""The samplers: oracles with known answers, closed forms, determinism, the editing hooks and argument checks."""

import math

import pytest
import torch

from tinyldm.diffusion import x0_to_eps
from tinyldm.reverse_step import ddim_step, ddpm_step, dpm_solver_step
from tinyldm.sampling import ddim_sample, ddpm_sample, dpm_solver_sample, sample
from tinyldm.schedule import NoiseSchedule, extract, q_sample
from tinyldm.unet import UNet, UNetConfig


def _oracle(x0, schedule):
    """A model that knows x0: it returns exactly the noise that separates x_t from x0."""
    return lambda xt, t: x0_to_eps(x0, t, xt, schedule)


def _gaussian_eps_model(mu, s, schedule):
    """The optimal (MMSE) noise predictor when the data is N(mu, s^2), independently per coordinate.

    x_t = sqrt(ab) x0 + sqrt(1 - ab) eps is jointly Gaussian with eps, so
    E[eps | x_t] = Cov(eps, x_t) / Var(x_t) (x_t - E x_t) = sqrt(1 - ab) / (ab s^2 + 1 - ab) (x_t - sqrt(ab) mu).
    """

    def model(xt, t):
        ab = extract(schedule.alpha_bars, t, xt).double()
        return ((1 - ab).sqrt() / (ab * s**2 + 1 - ab) * (xt - ab.sqrt() * mu)).to(xt.dtype)

    return model


def _data(shape=(16, 2), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [1000, 37, 5, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic_ddim_with_the_oracle_walks_down_the_forward_marginals(steps, dtype):
    # Song et al. 2021, Eq. 12 with sigma = 0 and the true eps keeps x_t = sqrt(ab) x0 + sqrt(1 - ab) eps with the
    # same eps at every step, so each intermediate is q_sample(x0, t_prev, eps) and the last one is x0.
    schedule = NoiseSchedule.linear(1000)
    x0, eps = _data().to(dtype), _data(seed=1).to(dtype)
    start = torch.full((16,), 999)
    seen = []
    out = ddim_sample(
        _oracle(x0, schedule), x0.shape, schedule, steps=steps, xT=q_sample(x0, start, schedule, eps),
        callback=lambda info: seen.append((info["t_prev"], info["x_prev"], info["x0_pred"])), progress=False,
    )
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 2e-4, "rtol": 2e-4}
    torch.testing.assert_close(out, x0, **tol)
    assert len(seen) == steps and seen[-1][0] == -1
    for t_prev, x_prev, x0_pred in seen[:-1]:
        torch.testing.assert_close(x_prev, q_sample(x0, torch.full((16,), t_prev), schedule, eps), **tol)
        torch.testing.assert_close(x0_pred, x0, **tol)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim1000", "ddim1000_eta1"])
def test_samplers_with_the_optimal_gaussian_predictor_recover_the_data_moments(sampler):
    # Data N(mu, s^2) per coordinate; with the exact E[eps | x_t] the samples must have the data's mean and std.
    # Bound: 5 standard errors (s / sqrt(n) for the mean, s / sqrt(2n) for the std) plus 1% of s for the
    # samplers' own bias at T = 1000, which a float64 propagation of the linear-Gaussian chain puts below 0.8%.
    # (With 50 DDIM steps the std comes out ~6% low: few deterministic steps shrink the spread.)
    n = 20000
    mu, s = torch.tensor([1.5, -0.5]), torch.tensor([0.5, 2.0])
    schedule = NoiseSchedule.linear(1000)
    model = _gaussian_eps_model(mu, s, schedule)
    gen = torch.Generator().manual_seed(0)
    if sampler == "ddpm":
        x = ddpm_sample(model, (n, 2), schedule, generator=gen, progress=False)
    else:
        eta = 1.0 if sampler.endswith("eta1") else 0.0
        x = ddim_sample(model, (n, 2), schedule, steps=1000, eta=eta, generator=gen, progress=False)
    mean_bound = 5 * s / math.sqrt(n) + 0.01 * s
    std_bound = 5 * s / math.sqrt(2 * n) + 0.01 * s
    assert ((x.mean(0) - mu).abs() < mean_bound).all(), (x.mean(0), mu, mean_bound)
    assert ((x.std(0) - s).abs() < std_bound).all(), (x.std(0), s, std_bound)


def test_ddim_with_all_steps_and_eta_one_is_ddpm():
    schedule = NoiseSchedule.linear(50)
    model = _gaussian_eps_model(torch.tensor(0.3), torch.tensor(0.7), schedule)
    a = ddpm_sample(model, (64, 2), schedule, generator=torch.Generator().manual_seed(0), progress=False)
    b = ddim_sample(model, (64, 2), schedule, steps=50, eta=1.0, generator=torch.Generator().manual_seed(0),
                    progress=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_samplers_are_deterministic_given_a_generator():
    schedule = NoiseSchedule.linear(100)
    model = _gaussian_eps_model(torch.tensor(0.3), torch.tensor(0.7), schedule)

    def run(sampler, seed, **kwargs):
        return sampler(model, (8, 2), schedule, generator=torch.Generator().manual_seed(seed), progress=False, **kwargs)

    for sampler, kwargs in [(ddpm_sample, {}), (ddim_sample, {"steps": 10}), (ddim_sample, {"steps": 10, "eta": 0.5})]:
        assert torch.equal(run(sampler, 0, **kwargs), run(sampler, 0, **kwargs))
        assert not torch.allclose(run(sampler, 0, **kwargs), run(sampler, 1, **kwargs))


def test_deterministic_ddim_maps_the_same_noise_to_the_same_sample_whatever_the_generator():
    schedule = NoiseSchedule.linear(100)
    model = _gaussian_eps_model(torch.tensor(0.3), torch.tensor(0.7), schedule)
    xT = _data((8, 2))
    a = ddim_sample(model, (8, 2), schedule, steps=10, xT=xT, generator=torch.Generator().manual_seed(0),
                    progress=False)
    b = ddim_sample(model, (8, 2), schedule, steps=10, xT=xT, generator=torch.Generator().manual_seed(1),
                    progress=False)
    assert torch.equal(a, b)
    c = ddim_sample(model, (8, 2), schedule, steps=10, eta=1.0, xT=xT, generator=torch.Generator().manual_seed(1),
                    progress=False)
    assert not torch.allclose(a, c)


def test_callback_sees_every_step_and_conditioning_reaches_the_model():
    schedule = NoiseSchedule.linear(20)
    labels = []

    def model(xt, t, label):
        labels.append(label)
        return torch.zeros_like(xt)

    infos = []
    ddpm_sample(model, (3, 2), schedule, callback=infos.append, conditioning={"label": 4}, progress=False)
    assert [info["t"] for info in infos] == list(range(19, -1, -1))
    assert [info["i"] for info in infos] == list(range(20))
    assert set(infos[0]) == {"i", "t", "t_prev", "xt", "eps_pred", "x0_pred", "x_prev"}
    assert labels == [4] * 20
    infos.clear()
    ddim_sample(model, (3, 2), schedule, steps=4, callback=infos.append, conditioning={"label": 4}, progress=False)
    assert [(info["t"], info["t_prev"]) for info in infos] == [(19, 14), (14, 9), (9, 4), (4, -1)]
    for before, after in zip(infos, infos[1:]):
        assert torch.equal(before["x_prev"], after["xt"])


def test_clip_x0_clamps_the_prediction():
    schedule = NoiseSchedule.linear(100)
    xt = torch.full((2, 2), 3.0)
    eps_pred = torch.zeros(2, 2)
    t, t_prev = torch.full((2,), 10), torch.full((2,), -1)
    torch.testing.assert_close(ddim_step(eps_pred, t, t_prev, xt, schedule, clip_x0=True), torch.ones(2, 2))
    assert (ddim_step(eps_pred, t, t_prev, xt, schedule) > 3.0).all()
    out = ddpm_step(eps_pred, torch.zeros(2, dtype=torch.long), xt, schedule, torch.zeros(2, 2), clip_x0=True)
    torch.testing.assert_close(out, torch.ones(2, 2))


def test_bad_arguments_raise_clear_errors():
    schedule = NoiseSchedule.linear(100)
    model = lambda xt, t: torch.zeros_like(xt)  # noqa: E731
    with pytest.raises(ValueError, match=r"steps must lie in \[1, 100\].*got 101"):
        ddim_sample(model, (2, 2), schedule, steps=101, progress=False)
    with pytest.raises(ValueError, match=r"steps must lie in \[1, 100\].*got 0"):
        ddim_sample(model, (2, 2), schedule, steps=0, progress=False)
    with pytest.raises(TypeError, match="steps must be an int"):
        ddim_sample(model, (2, 2), schedule, steps=2.5, progress=False)
    with pytest.raises(ValueError, match="eta must be >= 0.*got -0.5"):
        ddim_sample(model, (2, 2), schedule, steps=5, eta=-0.5, progress=False)
    with pytest.raises(ValueError, match=r"xT must have the requested shape \(2, 2\), got \(3, 2\)"):
        ddpm_sample(model, (2, 2), schedule, xT=torch.zeros(3, 2), progress=False)
    with pytest.raises(ValueError, match=r"the model must return eps_pred shaped like xt, \(2, 2\), got \(2, 3\)"):
        ddpm_sample(lambda xt, t: torch.zeros(2, 3), (2, 2), schedule, progress=False)
    xt, t = torch.zeros(2, 2), torch.full((2,), 5)
    with pytest.raises(ValueError, match=r"eps_pred must have the shape of xt, \(2, 2\), got \(2, 3\)"):
        ddpm_step(torch.zeros(2, 3), t, xt, schedule, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"noise must have the shape of xt"):
        ddpm_step(torch.zeros(2, 2), t, xt, schedule, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="variance must be 'posterior'"):
        ddpm_step(torch.zeros(2, 2), t, xt, schedule, torch.zeros(2, 2), variance="learned")
    with pytest.raises(ValueError, match="eta must be >= 0"):
        ddim_step(torch.zeros(2, 2), t, t - 1, xt, schedule, eta=-1.0)
    with pytest.raises(ValueError, match="pass noise="):
        ddim_step(torch.zeros(2, 2), t, t - 1, xt, schedule, eta=0.5)
    with pytest.raises(ValueError, match=r"t_prev must lie in \[-1, t\)"):
        ddim_step(torch.zeros(2, 2), t, t + 1, xt, schedule)
    with pytest.raises(ValueError, match=r"t_prev must lie in \[-1, t\)"):
        ddim_step(torch.zeros(2, 2), t, torch.full((2,), -2), xt, schedule)
    with pytest.raises(TypeError, match="t_prev must be an int64 tensor"):
        ddim_step(torch.zeros(2, 2), t, 4, xt, schedule)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        ddim_step(torch.zeros(2, 2), torch.full((3,), 5), torch.full((3,), 4), xt, schedule)


def test_sample_by_name_is_ancestral_ddpm_or_ddim():
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(),
                            groups=4))
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)  # a model that predicts something
    schedule = NoiseSchedule.cosine(20)
    shape = (2, 3, 8, 8)

    def draw(sampler, steps, eta=0.0, seed=0):
        return sample(model, shape, schedule, sampler, steps, eta, torch.Generator().manual_seed(seed),
                      clip_x0=True, progress=False)

    # ancestral on fewer than T steps is DDIM with eta = 1 (Song et al. 2021, Eq. 16); on all T, Algorithm 2
    reference = ddim_sample(model, shape, schedule, steps=5, eta=1.0, generator=torch.Generator().manual_seed(0),
                            clip_x0=True, progress=False)
    assert torch.equal(draw("ddpm", 5), reference)
    full = ddpm_sample(model, shape, schedule, torch.Generator().manual_seed(0), clip_x0=True, progress=False)
    assert torch.equal(draw("ddpm", 20), full)
    assert torch.equal(draw("ddim", 5), draw("ddim", 5, seed=0))
    assert not torch.equal(draw("ddim", 5, eta=0.5), draw("ddim", 5))
    with pytest.raises(ValueError, match=r"sampler must be one of \('ddpm', 'ddim', 'dpm\+\+'\), got 'euler'"):
        draw("euler", 5)


def test_one_step_of_dpm_solver_is_ddim_and_the_last_lands_on_x0_pred():
    schedule = NoiseSchedule.cosine(1000)
    xt, x0_pred = _data(seed=1), _data(seed=2)
    t = torch.full((16,), 700)
    eps_pred = x0_to_eps(x0_pred, t, xt, schedule)
    ddim = ddim_step(eps_pred, t, torch.full((16,), 500), xt, schedule)
    first, h = dpm_solver_step(x0_pred, xt, schedule, 700, 500)  # no previous prediction: first order
    torch.testing.assert_close(first, ddim, rtol=1e-4, atol=1e-5)
    assert h > 0  # log-SNR grows towards the data
    last, _ = dpm_solver_step(x0_pred, xt, schedule, 5, -1, _data(seed=3), 0.3)
    assert torch.equal(last, x0_pred)
    with pytest.raises(ValueError, match=r"step_prev must lie in \[-1, step\)"):
        dpm_solver_step(x0_pred, xt, schedule, 5, 5)


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_with_the_optimal_gaussian_predictor_recovers_the_data_moments(steps):
    # Data N(mu, s^2) per coordinate, sampled with its exact noise predictor: a sampler that solves the ODE right
    # lands on the data distribution. The second-order solver is there at 20 steps, and nearer than DDIM at both.
    schedule, mu, s = NoiseSchedule.cosine(1000), 1.5, 0.5
    model = _gaussian_eps_model(mu, s, schedule)
    xT = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(0))
    x0 = dpm_solver_sample(model, (20_000, 1), schedule, steps, xT=xT, progress=False)
    ddim = ddim_sample(model, (20_000, 1), schedule, steps, xT=xT, progress=False)
    assert abs(x0.std().item() - s) < 0.6 * abs(ddim.std().item() - s)  # measured: 0.478 vs 0.429 at 10 steps
    if steps == 20:
        assert abs(x0.mean().item() - mu) < 0.02 and abs(x0.std().item() - s) < 0.01


@pytest.mark.parametrize("sampler, steps", [("ddim", 10), ("ddpm", 10), ("ddpm", 50), ("dpm++", 10)])
def test_starting_at_the_noisiest_step_is_plain_sampling(sampler, steps):
    schedule = NoiseSchedule.linear(50)
    model = _gaussian_eps_model(torch.tensor(0.3), torch.tensor(0.7), schedule)
    xT = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))

    def draw(**kwargs):
        return sample(model, (8, 2), schedule, sampler, steps, generator=torch.Generator().manual_seed(2), xT=xT,
                      progress=False, **kwargs)

    assert torch.equal(draw(t_start=49), draw())


@pytest.mark.parametrize("k", [1, 4, 9])
def test_deterministic_ddim_started_part_way_runs_the_tail_of_the_same_sequence(k):
    schedule = NoiseSchedule.linear(100)
    model = _gaussian_eps_model(torch.tensor(0.3), torch.tensor(0.7), schedule)
    seen = []
    full = ddim_sample(model, (8, 2), schedule, 10, generator=torch.Generator().manual_seed(0), progress=False,
                       callback=lambda info: seen.append((info["t"], info["xt"])))
    t_start, x_start = seen[k]
    visited = []
    tail = ddim_sample(model, (8, 2), schedule, 10, xT=x_start, t_start=t_start, progress=False,
                       callback=lambda info: visited.append(info["t"]))
    assert visited == [t for t, _ in seen[k:]]
    torch.testing.assert_close(tail, full, rtol=0, atol=0)


@pytest.mark.parametrize("sampler, steps", [("ddim", 10), ("ddpm", 100), ("dpm++", 10)])
def test_a_start_between_the_sequences_indices_is_visited_first(sampler, steps):
    schedule = NoiseSchedule.linear(100)
    visited = []
    sample(lambda xt, t: torch.zeros_like(xt), (2, 2), schedule, sampler, steps, xT=torch.zeros(2, 2), t_start=35,
           progress=False, generator=torch.Generator().manual_seed(0), callback=lambda info: visited.append(info["t"]))
    expected = [35, *range(34, -1, -1)] if steps == 100 else [35, 29, 19, 9]
    assert visited == expected


@pytest.mark.parametrize("sampler, steps", [("ddim", 5), ("ddpm", 20), ("dpm++", 5)])
def test_after_step_replaces_x_prev_and_the_callback_sees_the_replacement(sampler, steps):
    schedule = NoiseSchedule.linear(20)
    model = _gaussian_eps_model(torch.tensor(0.3), torch.tensor(0.7), schedule)
    xT = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    def pin_first_coordinate(info):
        x_prev = info["x_prev"].clone()
        x_prev[:, 0] = 5.0
        return x_prev

    steps_seen = []
    out = sample(model, (4, 3), schedule, sampler, steps, xT=xT, progress=False, after_step=pin_first_coordinate,
                 generator=torch.Generator().manual_seed(1),
                 callback=lambda info: steps_seen.append((info["xt"].clone(), info["x_prev"].clone())))
    assert (out[:, 0] == 5.0).all() and not (out[:, 1:] == 5.0).any()
    assert all((x_prev[:, 0] == 5.0).all() for _, x_prev in steps_seen)
    assert all((xt[:, 0] == 5.0).all() for xt, _ in steps_seen[1:])  # the next step starts from the replacement
    keep = sample(model, (4, 3), schedule, sampler, steps, xT=xT, progress=False,
                  after_step=lambda info: info["x_prev"], generator=torch.Generator().manual_seed(1))
    assert torch.equal(keep, sample(model, (4, 3), schedule, sampler, steps, xT=xT, progress=False,
                                    generator=torch.Generator().manual_seed(1)))


def test_bad_starts_and_hooks_raise_clear_errors():
    schedule = NoiseSchedule.linear(20)
    model = _gaussian_eps_model(torch.tensor(0.3), torch.tensor(0.7), schedule)
    with pytest.raises(ValueError, match=r"t_start must be a step index, an int in \[0, 19\], got 20"):
        sample(model, (2, 2), schedule, "ddim", 5, xT=torch.zeros(2, 2), t_start=20, progress=False)
    with pytest.raises(ValueError, match="t_start=7 starts the reverse process part-way: pass the sample"):
        sample(model, (2, 2), schedule, "ddim", 5, t_start=7, progress=False)
    with pytest.raises(ValueError, match=r"after_step must return the x_prev to use.*got NoneType"):
        sample(model, (2, 2), schedule, "dpm++", 5, after_step=lambda info: None, progress=False)
