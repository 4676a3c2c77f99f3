"""The reverse process: one-step updates and full samplers for DDPM, DDIM and DPM-Solver++(2M).

DDPM walks the stochastic chain back (Ho et al. 2020); DDIM takes big deterministic steps along the same marginals
(Song et al. 2021); DPM-Solver++ solves the same deterministic path, the probability-flow ODE, to second order, so
that it needs fewer steps still (Lu et al. 2022). ``sample(..., sampler=name)`` picks one by name.

Every sampler is a free function with the same calling convention (after k-diffusion): it takes the model,
the output shape and the schedule, calls the model as ``model(xt, t, **conditioning) -> eps_pred``, and
reports each step to ``callback``. Models trained for x0 or v are wrapped with
``tinyldm.diffusion.as_eps_model`` first, so the loops below never branch on the parameterisation.

Two hooks turn the same loops into the editing methods of lesson 8, with no second loop. ``t_start`` starts the
reverse process part-way, from a given ``xT`` at step index ``t_start``: the sampler visits ``t_start`` and then
the indices of its usual ``steps``-step sequence below it (SDEdit, ``tinyldm.img2img``). ``after_step`` sees each
step's dict and returns the tensor to use as x_prev (blended latent diffusion replaces the known region of the image
there, ``tinyldm.inpainting``). ``callback`` only watches, and sees the x_prev that ``after_step`` returned.

Step numbering follows ``tinyldm.schedule``: index T-1 is the noisiest step and index -1 stands for x0
(alpha_bar = 1).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tinyldm.diffusion import _check_like, eps_to_x0, q_posterior, x0_to_eps
from tinyldm.schedule import NoiseSchedule, check_timesteps, extract

__all__ = ["SAMPLERS", "ddpm_step", "ddim_step", "ddim_timesteps", "dpm_solver_step", "ddpm_sample", "ddim_sample",
           "dpm_solver_sample", "sample"]

SAMPLERS = ("ddpm", "ddim", "dpm++")

Callback = Callable[[dict[str, Any]], None]
StepHook = Callable[[dict[str, Any]], Tensor]


def _predict_x0(eps_pred: Tensor, t: Tensor, xt: Tensor, schedule: NoiseSchedule, clip_x0: bool) -> Tensor:
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
    x0_pred = _predict_x0(eps_pred, t, xt, schedule, clip_x0)
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
    x0_pred = _predict_x0(eps_pred, t, xt, schedule, clip_x0)
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


def _initial_noise(
    shape: tuple[int, ...], schedule: NoiseSchedule, xT: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    shape = tuple(shape)
    if xT is not None:
        if tuple(xT.shape) != shape:
            raise ValueError(f"xT must have the requested shape {shape}, got {tuple(xT.shape)}")
        return xT.to(schedule.betas.device)
    return torch.randn(shape, generator=generator, device=schedule.betas.device)


def _start_step(schedule: NoiseSchedule, t_start: int | None, xT: Tensor | None) -> int:
    """The index the reverse process starts from: T-1 by default, or ``t_start`` (which then needs its xT)."""
    T = schedule.num_steps
    if t_start is None:
        return T - 1
    if isinstance(t_start, bool) or not isinstance(t_start, int) or not 0 <= t_start < T:
        raise ValueError(f"t_start must be a step index, an int in [0, {T - 1}], got {t_start!r}; T - 1 = {T - 1} "
                         "is plain sampling from noise")
    if t_start < T - 1 and xT is None:
        raise ValueError(f"t_start={t_start} starts the reverse process part-way: pass the sample at that step as "
                         "xT, e.g. q_sample(x0, t, schedule, eps) with t = t_start")
    return t_start


def _timesteps_from(timesteps: list[int], t_start: int) -> list[int]:
    """``t_start`` followed by the indices of ``timesteps`` (decreasing) below it: what a sampler started part-way
    visits. With ``t_start`` on the sequence this is the sequence's tail; ``t_start = T - 1`` leaves it whole."""
    return [t_start, *(step for step in timesteps if step < t_start)]


def _finish_step(info: dict[str, Any], after_step: StepHook | None, callback: Callback | None) -> Tensor:
    """Let ``after_step`` replace the step's x_prev, show the step to ``callback``, and return the x_prev to use."""
    if after_step is not None:
        x_prev = after_step(info)
        if not isinstance(x_prev, Tensor) or x_prev.shape != info["x_prev"].shape:
            got = tuple(x_prev.shape) if isinstance(x_prev, Tensor) else type(x_prev).__name__
            raise ValueError(f"after_step must return the x_prev to use, a tensor shaped like x_prev "
                             f"{tuple(info['x_prev'].shape)}, got {got}; return info['x_prev'] to keep it")
        info["x_prev"] = x_prev
    if callback is not None:
        callback(info)
    return info["x_prev"]


def _call_model(
    model: Callable[..., Tensor], xt: Tensor, step: int, conditioning: dict[str, Any] | None
) -> tuple[Tensor, Tensor]:
    t = torch.full((xt.shape[0],), step, dtype=torch.long, device=xt.device)
    eps_pred = model(xt, t, **(conditioning or {}))
    if not isinstance(eps_pred, Tensor) or eps_pred.shape != xt.shape:
        shape = tuple(eps_pred.shape) if isinstance(eps_pred, Tensor) else type(eps_pred).__name__
        raise ValueError(f"the model must return eps_pred shaped like xt, {tuple(xt.shape)}, got {shape}")
    return t, eps_pred


@torch.no_grad()
def ddpm_sample(
    model: Callable[..., Tensor],
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    xT: Tensor | None = None,
    conditioning: dict[str, Any] | None = None,
    clip_x0: bool = False,
    variance: str = "posterior",
    progress: bool = True,
    t_start: int | None = None,
    after_step: StepHook | None = None,
) -> Tensor:
    """Draw samples by walking all T steps back from pure noise (Ho et al. 2020, Algorithm 2).

    Costs T model evaluations per sample (t_start + 1 when started part-way).

    Args:
        model: called as ``model(xt, t, **conditioning)`` with xt (B, ...) and t (B,) int64; returns eps_pred.
        shape: (B, ...) the shape of the batch to draw.
        schedule: the schedule the model was trained with; its device is where sampling runs.
        generator: source of x_T and of every step's noise (on the schedule's device).
        callback: called after every step with a dict: ``i`` (step number from 0), ``t`` and ``t_prev`` (ints),
            ``xt`` (the input of the step), ``eps_pred``, ``x0_pred`` and ``x_prev`` (its output), all (B, ...).
        xT: (B, ...) the starting noise (or, with ``t_start``, the sample at step ``t_start``); drawn from
            ``generator`` when None.
        conditioning: keyword arguments passed on to the model.
        clip_x0: clamp x0 predictions to [-1, 1] (for image data).
        variance: "posterior" (beta-tilde_t) or "beta" (beta_t).
        progress: show a tqdm progress bar.
        t_start: start at this step index, in [0, T-1], from ``xT`` = x_{t_start} (required below T-1), and walk
            the t_start + 1 steps t_start .. 0; None (or T-1) is plain sampling.
        after_step: called after every step, before ``callback``, with the same dict; returns the (B, ...) tensor
            the next step starts from instead of ``x_prev`` (return ``info["x_prev"]`` to keep it). The callback
            then sees the returned tensor as ``x_prev``.
    Returns:
        (B, ...) x0 samples.
    """
    start = _start_step(schedule, t_start, xT)
    x = _initial_noise(shape, schedule, xT, generator)
    for i, step in enumerate(tqdm(range(start, -1, -1), desc="DDPM", disable=not progress)):
        t, eps_pred = _call_model(model, x, step, conditioning)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_prev = ddpm_step(eps_pred, t, x, schedule, noise, clip_x0=clip_x0, variance=variance)
        if callback is not None or after_step is not None:
            x0_pred = _predict_x0(eps_pred, t, x, schedule, clip_x0)
            x_prev = _finish_step(
                {"i": i, "t": step, "t_prev": step - 1, "xt": x, "eps_pred": eps_pred, "x0_pred": x0_pred,
                 "x_prev": x_prev}, after_step, callback)
        x = x_prev
    return x


@torch.no_grad()
def ddim_sample(
    model: Callable[..., Tensor],
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    xT: Tensor | None = None,
    conditioning: dict[str, Any] | None = None,
    clip_x0: bool = False,
    progress: bool = True,
    t_start: int | None = None,
    after_step: StepHook | None = None,
) -> Tensor:
    """Draw samples with DDIM on a subsequence of ``steps`` of the T steps (Song et al. 2021, Sec. 4.2).

    Costs ``steps`` model evaluations per sample. With eta = 0 the map from x_T to x0 is deterministic. Started
    part-way at ``t_start``, it visits t_start and then the indices of ``ddim_timesteps(T, steps)`` below it, so
    with t_start on that sequence it runs the sequence's tail and costs fewer evaluations.

    Args:
        model: called as ``model(xt, t, **conditioning)`` with xt (B, ...) and t (B,) int64; returns eps_pred.
        shape: (B, ...) the shape of the batch to draw.
        schedule: the schedule the model was trained with; its device is where sampling runs.
        steps: the number of model evaluations, in [1, T] (see ``ddim_timesteps``).
        eta: noise scale, >= 0: 0 is deterministic DDIM, 1 is ancestral (DDPM-like) sampling.
        generator: source of x_T and, when eta > 0, of every step's noise (on the schedule's device).
        callback: called after every step with the dict described in ``ddpm_sample``.
        xT: (B, ...) the starting noise (or, with ``t_start``, the sample at step ``t_start``); drawn from
            ``generator`` when None.
        conditioning: keyword arguments passed on to the model.
        clip_x0: clamp x0 predictions to [-1, 1] (for image data).
        progress: show a tqdm progress bar.
        t_start: start at this step index, in [0, T-1], from ``xT`` = x_{t_start} (required below T-1); None (or
            T-1) is plain sampling.
        after_step: returns the tensor to use as each step's x_prev; see ``ddpm_sample``.
    Returns:
        (B, ...) x0 samples.
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0 (0 is deterministic DDIM, 1 is DDPM-like), got {eta}")
    timesteps = _timesteps_from(ddim_timesteps(schedule.num_steps, steps), _start_step(schedule, t_start, xT))
    x = _initial_noise(shape, schedule, xT, generator)
    name = "DDIM" if eta == 0 else "ancestral (DDIM, eta 1)" if eta == 1 else f"DDIM, eta {eta:g}"
    for i, step in enumerate(tqdm(timesteps, desc=f"{name}, {steps} steps", disable=not progress)):
        step_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t, eps_pred = _call_model(model, x, step, conditioning)
        t_prev = torch.full_like(t, step_prev)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if eta > 0 else None
        x_prev = ddim_step(eps_pred, t, t_prev, x, schedule, eta=eta, noise=noise, clip_x0=clip_x0)
        if callback is not None or after_step is not None:
            x0_pred = _predict_x0(eps_pred, t, x, schedule, clip_x0)
            x_prev = _finish_step(
                {"i": i, "t": step, "t_prev": step_prev, "xt": x, "eps_pred": eps_pred, "x0_pred": x0_pred,
                 "x_prev": x_prev}, after_step, callback)
        x = x_prev
    return x


@torch.no_grad()
def dpm_solver_sample(
    model: Callable[..., Tensor],
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    steps: int = 20,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    xT: Tensor | None = None,
    conditioning: dict[str, Any] | None = None,
    clip_x0: bool = False,
    progress: bool = True,
    t_start: int | None = None,
    after_step: StepHook | None = None,
) -> Tensor:
    """Draw samples with DPM-Solver++(2M), the few-step ODE solver Stable Diffusion runs by default (Lu et al. 2022).

    Deterministic like DDIM, on the same ``steps`` evenly spaced indices, but second order in log-SNR time: each step
    reuses the previous step's x0 prediction, so it costs one network call per step like DDIM and reaches the same
    quality in fewer steps. See ``dpm_solver_step``. Started part-way (``t_start``) or with x_prev replaced
    (``after_step``), the multistep correction extrapolates the model's x0 predictions, which neither changes; the
    first step from ``t_start`` is first order.

    Args:
        model, shape, schedule, generator, callback, xT, conditioning, clip_x0, progress, t_start, after_step:
            see ``ddim_sample`` (``generator`` only draws x_T).
        steps: the number of model evaluations, in [1, T].
    Returns:
        (B, ...) x0 samples.
    """
    timesteps = _timesteps_from(ddim_timesteps(schedule.num_steps, steps), _start_step(schedule, t_start, xT))
    x = _initial_noise(shape, schedule, xT, generator)
    x0_before, h_before = None, None
    for i, step in enumerate(tqdm(timesteps, desc=f"DPM-Solver++ ({steps} steps)", disable=not progress)):
        step_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t, eps_pred = _call_model(model, x, step, conditioning)
        x0_pred = _predict_x0(eps_pred, t, x, schedule, clip_x0)
        x_prev, h = dpm_solver_step(x0_pred, x, schedule, step, step_prev, x0_before, h_before)
        if callback is not None or after_step is not None:
            x_prev = _finish_step({"i": i, "t": step, "t_prev": step_prev, "xt": x, "eps_pred": eps_pred,
                                   "x0_pred": x0_pred, "x_prev": x_prev}, after_step, callback)
        x, x0_before, h_before = x_prev, x0_pred, h
    return x


def sample(
    model: Callable[..., Tensor],
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    xT: Tensor | None = None,
    conditioning: dict[str, Any] | None = None,
    clip_x0: bool = False,
    progress: bool = True,
    t_start: int | None = None,
    after_step: StepHook | None = None,
) -> Tensor:
    """Draw samples with one of the samplers by name: what the commands, the pipeline and the lessons call.

    "ddpm" is ancestral sampling: all T steps of Ho et al. 2020, Algorithm 2 when ``steps >= T``, otherwise the
    same on ``steps`` evenly spaced steps, which is DDIM with eta = 1 (Song et al. 2021, Eq. 16); ``eta`` is
    ignored. "ddim" is DDIM with ``eta`` (0: deterministic). "dpm++" is DPM-Solver++(2M) (Lu et al. 2022),
    deterministic and second order; ``eta`` is ignored. The fresh noise of every ancestral step corrects some of
    the errors an imperfect model makes on the way, so for an undertrained model "ddpm" gives cleaner images than
    "ddim" at the same number of steps.

    Every sampler can start part-way, from ``xT`` at step index ``t_start``: it then runs the indices of its
    ``steps``-step sequence at or below ``t_start`` (for "ddpm" with ``steps >= T``: every index from ``t_start``
    down), and ``after_step`` can replace each step's x_prev (see ``ddpm_sample``).

    Args:
        model, shape, schedule, generator, callback, xT, conditioning, clip_x0, progress, t_start, after_step:
            see ``ddim_sample``.
        sampler: "ddpm", "ddim" or "dpm++".
        steps: network evaluations, in [1, T].
        eta: DDIM's noise scale.
    Returns:
        (B, ...) x0 samples.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    options = {"xT": xT, "conditioning": conditioning, "clip_x0": clip_x0, "progress": progress,
               "t_start": t_start, "after_step": after_step}
    if sampler == "ddpm" and steps >= schedule.num_steps:
        return ddpm_sample(model, shape, schedule, generator, callback, **options)
    if sampler == "dpm++":
        return dpm_solver_sample(model, shape, schedule, steps, generator, callback, **options)
    return ddim_sample(model, shape, schedule, steps, 1.0 if sampler == "ddpm" else eta, generator, callback,
                       **options)
