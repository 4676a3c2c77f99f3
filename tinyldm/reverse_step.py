"""One step of the reverse process: the DDPM, DDIM and DPM-Solver++(2M) updates, and the step sequences they walk.

DDPM walks the stochastic chain back one step at a time (Ho et al. 2020); DDIM takes big deterministic steps along
the same marginals (Song et al. 2021); DPM-Solver++ solves the same deterministic path, the probability-flow ODE, to
second order (Lu et al. 2022). The loops that chain these steps into samplers are in ``tinyldm.sampling``.

Step numbering follows ``tinyldm.schedule``: index T-1 is the noisiest step and index -1 stands for x0
(alpha_bar = 1).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

from tinyldm.diffusion import _check_like, eps_to_x0, q_posterior, x0_to_eps
from tinyldm.schedule import NoiseSchedule, check_timesteps, extract

__all__ = ["predict_x0", "ddpm_step", "ddim_step", "ddim_timesteps", "dpm_solver_step"]


def predict_x0(eps_pred: Tensor, t: Tensor, xt: Tensor, schedule: NoiseSchedule, clip_x0: bool = False) -> Tensor:
    """The x0 a noise prediction implies (Ho et al. 2020, Eq. 15), clamped to [-1, 1] when ``clip_x0``."""
    x0_pred = eps_to_x0(eps_pred, t, xt, schedule)
    # Image data lives in [-1, 1]; early, noisy predictions overshoot, and clipping keeps them on the data range.
    return x0_pred.clamp(-1.0, 1.0) if clip_x0 else x0_pred


def ddpm_step(
    eps_pred: Tensor,
    t: Tensor,
    xt: Tensor,
    schedule: NoiseSchedule,
    noise: Tensor,
    clip_x0: bool = False,
    variance: str = "posterior",
) -> Tensor:
    """One ancestral step x_t -> x_{t-1} of the reverse process (Ho et al. 2020, Algorithm 2 and Eq. 11).

    The model's noise prediction gives a guess of x0 (Eq. 15); the step then samples the forward posterior
    q(x_{t-1} | x_t, x0_pred) (Eqs. 6-7). Without clipping its mean equals Algorithm 2's
    (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_pred) / sqrt(alpha_t). At index t = 0 no noise is added.

    Args:
        eps_pred: (B, ...) the model's noise prediction at x_t.
        t: (B,) int64 step indices.
        xt: (B, ...) the current sample.
        schedule: the noise schedule.
        noise: (B, ...) standard normal noise z (ignored where t = 0).
        clip_x0: clamp the x0 prediction to [-1, 1] (the image range) before taking the step.
        variance: sigma_t^2 of the step: "posterior" is beta-tilde_t (Eq. 7), "beta" is beta_t (Sec. 3.2).
    Returns:
        (B, ...) x_{t-1}.
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' (beta-tilde_t) or 'beta' (beta_t), got {variance!r}")
    _check_like(eps_pred, "eps_pred", xt)
    _check_like(noise, "noise", xt)
    x0_pred = predict_x0(eps_pred, t, xt, schedule, clip_x0)
    mean, posterior_variance = q_posterior(x0_pred, xt, t, schedule)
    sigma2 = posterior_variance if variance == "posterior" else extract(schedule.betas, t, xt)
    # Algorithm 2, line 4: z ~ N(0, I) if t > 1 else z = 0 (paper's t = 1 is index 0 here)
    noisy = (t > 0).to(device=xt.device, dtype=xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))  # (B, 1, ..., 1)
    return mean + noisy * sigma2.sqrt() * noise


def _alpha_bar_at(schedule: NoiseSchedule, t: Tensor, x: Tensor) -> Tensor:
    """alpha_bar at indices in [-1, T), with index -1 meaning x0 (alpha_bar = 1); shaped (B, 1, ..., 1)."""
    padded = torch.cat([torch.ones(1, device=schedule.alpha_bars.device), schedule.alpha_bars])
    return extract(padded, t + 1, x)


def ddim_step(
    eps_pred: Tensor,
    t: Tensor,
    t_prev: Tensor,
    xt: Tensor,
    schedule: NoiseSchedule,
    eta: float = 0.0,
    noise: Tensor | None = None,
    clip_x0: bool = False,
) -> Tensor:
    """One DDIM step x_t -> x_{t_prev}, possibly skipping many steps (Song et al. 2021, Eqs. 12 and 16).

    x_prev = sqrt(alpha_bar_prev) x0_pred + sqrt(1 - alpha_bar_prev - sigma^2) eps_pred + sigma z, with
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev).
    eta = 0 is deterministic; eta = 1 with t_prev = t - 1 is exactly the DDPM step with beta-tilde variance.
    t_prev = -1 means x0 (alpha_bar_prev = 1), where the step returns x0_pred.

    Args:
        eps_pred: (B, ...) the model's noise prediction at x_t.
        t: (B,) int64 current step indices.
        t_prev: (B,) int64 target step indices, each in [-1, t).
        xt: (B, ...) the current sample.
        schedule: the noise schedule.
        eta: how much fresh noise to inject, from 0 (deterministic DDIM) to 1 (DDPM-like).
        noise: (B, ...) standard normal noise z; required when eta > 0.
        clip_x0: clamp the x0 prediction to [-1, 1] and use the noise consistent with the clamped x0.
    Returns:
        (B, ...) x_{t_prev}.
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0 (0 is deterministic DDIM, 1 is DDPM-like), got {eta}")
    if eta > 0 and noise is None:
        raise ValueError(f"eta={eta} injects fresh noise: pass noise=torch.randn(xt.shape, generator=...)")
    _check_like(eps_pred, "eps_pred", xt)
    if noise is not None:
        _check_like(noise, "noise", xt)
    check_timesteps(t, xt.shape[0], schedule.num_steps)
    if not isinstance(t_prev, Tensor) or t_prev.dtype != torch.int64 or t_prev.shape != t.shape:
        raise TypeError(f"t_prev must be an int64 tensor of shape {tuple(t.shape)} like t, got {t_prev!r}")
    if (t_prev < -1).any() or (t_prev >= t).any():
        raise ValueError(
            f"t_prev must lie in [-1, t) (DDIM steps go back in time; -1 means x0), got t={t.tolist()[:4]} "
            f"and t_prev={t_prev.tolist()[:4]}"
        )
    x0_pred = predict_x0(eps_pred, t, xt, schedule, clip_x0)
    if clip_x0:
        eps_pred = x0_to_eps(x0_pred, t, xt, schedule)
    alpha_bar = extract(schedule.alpha_bars, t, xt)
    alpha_bar_prev = _alpha_bar_at(schedule, t_prev, xt)
    # Song et al. 2021, Eq. 16: sigma_t(eta)
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
    # Song et al. 2021, Eq. 12: predicted x0, direction pointing to x_t, random noise
    x_prev = alpha_bar_prev.sqrt() * x0_pred + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps_pred
    return x_prev + sigma * noise if eta > 0 else x_prev


def ddim_timesteps(num_steps: int, steps: int) -> list[int]:
    """The step indices a ``steps``-step sampler visits: evenly spaced, decreasing from T-1.

    "Trailing" spacing (Lin et al. 2024, Table 2): round(T (S - i) / S) - 1 for i = 0 .. S-1, so the first index
    is always T-1, the noisiest step, and sampling starts where the forward process ends; ``steps == T`` visits
    every index. (diffusers' ``timestep_spacing="trailing"`` gives the same list.)

    Args:
        num_steps: T, the schedule's number of steps.
        steps: how many model evaluations to spend, in [1, T].
    Returns:
        list of ``steps`` distinct ints from T-1 downwards.
    """
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps must be an int, got {steps!r} ({type(steps).__name__})")
    if not 1 <= steps <= num_steps:
        raise ValueError(
            f"steps must lie in [1, {num_steps}] for a schedule of {num_steps} steps, got {steps}; "
            "a sampler cannot take more steps than the forward process has"
        )
    # round(T (S - i) / S) - 1, rounding halves to even as the paper's numpy code does; exact in fractions
    return [round(Fraction(num_steps * (steps - i), steps)) - 1 for i in range(steps)]


def _log_snr_coefficients(schedule: NoiseSchedule, step: int) -> tuple[float, float, float]:
    """(alpha_t, sigma_t, lambda_t) = (sqrt(alpha_bar), sqrt(1 - alpha_bar), log(alpha_t / sigma_t)) at an index in
    [-1, T); index -1 is the data itself: alpha = 1, sigma = 0, lambda = +inf. In float64: lambda's differences are
    small numbers taken between large ones."""
    if step < 0:
        return 1.0, 0.0, math.inf
    alpha_bar = schedule.alpha_bars[step].double().item()
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    return alpha, sigma, math.log(alpha / sigma)


def dpm_solver_step(
    x0_pred: Tensor,
    xt: Tensor,
    schedule: NoiseSchedule,
    step: int,
    step_prev: int,
    x0_pred_before: Tensor | None = None,
    h_before: float | None = None,
) -> tuple[Tensor, float]:
    """One step x_t -> x_{t_prev} of DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

    Sampling is solving the probability-flow ODE, which in log-SNR time lambda = log(alpha_t / sigma_t) has an
    exact solution up to one integral of the model's x0 prediction: x_prev = (sigma_prev / sigma_t) x_t -
    alpha_prev (e^{-h} - 1) D, with h = lambda_prev - lambda_t. With D = x0_pred this first-order step is DDIM
    (eta = 0). The second-order multistep update extrapolates D linearly from this step's and the previous step's
    predictions, at no extra network call: D = (1 + 1 / 2r) x0_pred - (1 / 2r) x0_pred_before, r = h_before / h.
    The step onto the data itself (t_prev = -1, sigma = 0) is x0_pred.

    Args:
        x0_pred: (B, ...) the model's x0 prediction at x_t.
        xt: (B, ...) the current sample.
        schedule: the noise schedule.
        step, step_prev: the current index and the target index in [-1, step).
        x0_pred_before, h_before: the previous step's x0 prediction and step size h; None on the first step
            (a first-order step).
    Returns:
        (x_prev (B, ...), this step's h).
    """
    _check_like(x0_pred, "x0_pred", xt)
    if not -1 <= step_prev < step:
        raise ValueError(f"step_prev must lie in [-1, step) (steps go back in time; -1 means x0), got step={step} "
                         f"and step_prev={step_prev}")
    alpha, sigma, lam = _log_snr_coefficients(schedule, step)
    alpha_prev, sigma_prev, lam_prev = _log_snr_coefficients(schedule, step_prev)
    if step_prev == -1:
        return x0_pred, math.inf
    h = lam_prev - lam
    d = x0_pred
    if x0_pred_before is not None and h_before is not None and math.isfinite(h_before):
        r = h_before / h
        # Lu et al. 2022 (DPM-Solver++), Algorithm 2: the multistep second-order correction
        d = (1 + 1 / (2 * r)) * x0_pred - (1 / (2 * r)) * x0_pred_before
    # the exact solution of the linear part, and the x0 integral to first (or second) order
    return (sigma_prev / sigma) * xt - alpha_prev * math.expm1(-h) * d, h
