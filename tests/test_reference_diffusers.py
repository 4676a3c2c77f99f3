"""The schedules and the DDPM and DDIM steps against diffusers' schedulers, an independent implementation that
the Stable Diffusion pipelines run on: the same betas, the same alpha_bar, the same x_{t-1} from the same inputs.

diffusers is a development dependency (``pip install -e ".[dev]"``); these tests skip without it.
"""

import pytest
import torch

from tinyldm.reverse_step import ddim_step, ddim_timesteps, ddpm_step
from tinyldm.sampling import dpm_solver_sample
from tinyldm.schedule import NoiseSchedule

diffusers = pytest.importorskip("diffusers")

T = 1000
# Our schedules and the diffusers settings that describe the same betas.
SCHEDULES = {
    "linear": (NoiseSchedule.linear(T), dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)),
    "scaled_linear": (NoiseSchedule.scaled_linear(T),
                      dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)),
    "cosine": (NoiseSchedule.cosine(T), dict(beta_schedule="squaredcos_cap_v2")),
}


def _batch(seed: int, shape=(4, 3, 8, 8)):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=generator) for _ in range(3))  # xt, eps_pred, noise


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_the_schedules_have_diffusers_betas_and_alpha_bars(name):
    ours, settings = SCHEDULES[name]
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T, **settings)
    torch.testing.assert_close(ours.betas.double(), theirs.betas.double(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.alpha_bars.double(), theirs.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("t", [999, 500, 37, 1, 0])
def test_the_ddpm_step_is_diffusers_ddpm_step(name, t):
    ours, settings = SCHEDULES[name]
    # fixed_small: the posterior variance beta-tilde_t (Ho et al. 2020, Eq. 7); no clipping on either side
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T, variance_type="fixed_small", clip_sample=False,
                                     **settings)
    theirs.set_timesteps(T)
    xt, eps_pred, noise = _batch(t)
    # diffusers draws the step's noise from the generator it is given, exactly as torch.randn does here
    expected = theirs.step(eps_pred, t, xt, generator=torch.Generator().manual_seed(7)).prev_sample
    noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(7))
    got = ddpm_step(eps_pred, torch.full((4,), t), xt, ours, noise, variance="posterior")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_the_ddim_step_is_diffusers_ddim_step(name, eta):
    ours, settings = SCHEDULES[name]
    theirs = diffusers.DDIMScheduler(num_train_timesteps=T, clip_sample=False, set_alpha_to_one=True,
                                     timestep_spacing="leading", **settings)
    theirs.set_timesteps(50)  # leading spacing: 980, 960, ..., 0; each step goes back T / 50 = 20
    for t, t_prev in ((980, 960), (500, 480), (0, -1)):  # -1: x0, where alpha_bar = 1 (set_alpha_to_one)
        xt, eps_pred, noise = _batch(t)
        expected = theirs.step(eps_pred, t, xt, eta=eta, variance_noise=noise).prev_sample
        got = ddim_step(eps_pred, torch.full((4,), t), torch.full((4,), t_prev), xt, ours, eta=eta, noise=noise)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"t = {t}")


@pytest.mark.parametrize("steps", [1, 3, 7, 10, 50, 333, 400, 999, 1000])
def test_the_sampler_visits_diffusers_trailing_timesteps(steps):
    # Lin et al. 2024, Table 2: "trailing" spacing starts at the noisiest step, T - 1
    theirs = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    theirs.set_timesteps(steps)
    assert ddim_timesteps(T, steps) == theirs.timesteps.tolist()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("steps", [1, 2, 10, 25])
def test_dpm_solver_is_diffusers_dpm_solver_multistep(name, steps):
    ours, settings = SCHEDULES[name]
    # DPM-Solver++(2M): second order, the first step first order, the last one onto sigma = 0 (x0_pred)
    theirs = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T, algorithm_type="dpmsolver++", solver_order=2,
                                                   timestep_spacing="trailing", final_sigmas_type="zero",
                                                   **settings)
    theirs.set_timesteps(steps)
    assert ddim_timesteps(T, steps) == theirs.timesteps.tolist()

    def model(x, t):  # any smooth function of x and t will do: both must integrate the same ODE
        ab = ours.alpha_bars[t].reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - ab).sqrt() * torch.tanh(x) + 0.1 * ab.sqrt()

    xT = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = xT.clone()
    for t in theirs.timesteps:
        x = theirs.step(model(x, torch.full((4,), int(t))), t, x).prev_sample
    torch.testing.assert_close(dpm_solver_sample(model, xT.shape, ours, steps, xT=xT, progress=False), x,
                               rtol=1e-4, atol=1e-4)
