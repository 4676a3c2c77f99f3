"""Noise prediction: the training objective, the parameterisation conversions and the forward posterior.

A diffusion model can be asked for three equivalent things at step t: the noise eps that was added, the clean
x0, or the "velocity" v that mixes the two. Given x_t, any one determines the others (Eq. 4 is one linear
equation in x0 and eps), so samplers are written once for eps and a model trained for another target is
wrapped with ``as_eps_model``.

Step numbering follows ``tinyldm.schedule``: code index t is the paper's step t+1, and "one step before
index 0" is x0 itself, where alpha_bar = 1.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tinyldm.schedule import NoiseSchedule, check_timesteps, extract, q_sample

__all__ = [
    "PREDICTIONS",
    "alpha_bars_prev",
    "eps_to_x0",
    "x0_to_eps",
    "v_target",
    "v_to_eps",
    "eps_to_v",
    "as_eps_model",
    "q_posterior",
    "diffusion_loss",
]

PREDICTIONS = ("eps", "x0", "v")  # what a model can be trained to output


def _check_like(value: Tensor, name: str, xt: Tensor) -> None:
    if not isinstance(value, Tensor) or value.shape != xt.shape:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must have the shape of xt, {tuple(xt.shape)}, got {shape}")


def _alpha_bar_for(value: Tensor, name: str, t: Tensor, xt: Tensor, schedule: NoiseSchedule) -> Tensor:
    """Check ``value`` and ``t`` against ``xt``, then return alpha_bar_t shaped (B, 1, ..., 1) for the conversions."""
    _check_like(value, name, xt)
    check_timesteps(t, xt.shape[0], schedule.num_steps)
    return extract(schedule.alpha_bars, t, xt)


def alpha_bars_prev(schedule: NoiseSchedule) -> Tensor:
    """alpha_bar one step earlier, with alpha_bar = 1 before the first step (x0 has no noise).

    Args:
        schedule: the noise schedule.
    Returns:
        (T,) float32 tensor: ``[1, alpha_bar_0, ..., alpha_bar_{T-2}]``, on the schedule's device.
    """
    one = torch.ones(1, dtype=schedule.alpha_bars.dtype, device=schedule.alpha_bars.device)
    return torch.cat([one, schedule.alpha_bars[:-1]])


def eps_to_x0(eps: Tensor, t: Tensor, xt: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The clean sample implied by a noise prediction: Eq. 4 solved for x0 (Ho et al. 2020, Eq. 4 and Eq. 15).

    x0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t).

    Args:
        eps: (B, ...) noise (true or predicted).
        t: (B,) int64 step indices.
        xt: (B, ...) the noisy sample.
        schedule: the noise schedule.
    Returns:
        (B, ...) x0.
    """
    alpha_bar = _alpha_bar_for(eps, "eps", t, xt, schedule)
    return (xt - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def x0_to_eps(x0: Tensor, t: Tensor, xt: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The noise implied by a clean-sample prediction: Eq. 4 solved for eps (Ho et al. 2020, Eq. 4).

    eps = (x_t - sqrt(alpha_bar_t) * x0) / sqrt(1 - alpha_bar_t).

    Args:
        x0: (B, ...) clean sample (true or predicted).
        t: (B,) int64 step indices.
        xt: (B, ...) the noisy sample.
        schedule: the noise schedule.
    Returns:
        (B, ...) eps.
    """
    alpha_bar = _alpha_bar_for(x0, "x0", t, xt, schedule)
    return (xt - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def v_target(x0: Tensor, eps: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The velocity a v-prediction model is trained to output (Salimans & Ho 2022, Sec. 4 and App. D).

    v = sqrt(alpha_bar_t) * eps - sqrt(1 - alpha_bar_t) * x0.

    Args:
        x0: (B, ...) clean data.
        eps: (B, ...) the noise that made x_t from x0.
        t: (B,) int64 step indices.
        schedule: the noise schedule.
    Returns:
        (B, ...) v.
    """
    _check_like(eps, "eps", x0)
    check_timesteps(t, x0.shape[0], schedule.num_steps)
    alpha_bar = extract(schedule.alpha_bars, t, x0)
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


def v_to_eps(v: Tensor, t: Tensor, xt: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The noise implied by a velocity prediction (Salimans & Ho 2022, Sec. 4).

    eps = sqrt(alpha_bar_t) * v + sqrt(1 - alpha_bar_t) * x_t.

    Args:
        v: (B, ...) velocity (true or predicted).
        t: (B,) int64 step indices.
        xt: (B, ...) the noisy sample.
        schedule: the noise schedule.
    Returns:
        (B, ...) eps.
    """
    alpha_bar = _alpha_bar_for(v, "v", t, xt, schedule)
    return alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * xt


def eps_to_v(eps: Tensor, t: Tensor, xt: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The velocity implied by a noise prediction: ``v_to_eps`` inverted (Salimans & Ho 2022, Sec. 4).

    v = (eps - sqrt(1 - alpha_bar_t) * x_t) / sqrt(alpha_bar_t).

    Args:
        eps: (B, ...) noise (true or predicted).
        t: (B,) int64 step indices.
        xt: (B, ...) the noisy sample.
        schedule: the noise schedule.
    Returns:
        (B, ...) v.
    """
    alpha_bar = _alpha_bar_for(eps, "eps", t, xt, schedule)
    return (eps - (1 - alpha_bar).sqrt() * xt) / alpha_bar.sqrt()


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def as_eps_model(model: Callable[..., Tensor], schedule: NoiseSchedule, prediction: str) -> Callable[..., Tensor]:
    """Wrap a model that predicts x0 or v so that it returns eps, the convention every sampler expects.

    Args:
        model: called as ``model(xt, t, **conditioning)``; returns (B, ...) x0 or v predictions.
        schedule: the schedule the model was trained with.
        prediction: what ``model`` outputs: "eps" (returned unchanged), "x0" or "v".
    Returns:
        a callable ``(xt, t, **conditioning) -> eps_pred`` of shape (B, ...).
    """
    _check_prediction(prediction)
    if prediction == "eps":
        return model
    convert = x0_to_eps if prediction == "x0" else v_to_eps

    def eps_model(xt: Tensor, t: Tensor, **conditioning: Any) -> Tensor:
        return convert(model(xt, t, **conditioning), t, xt, schedule)

    return eps_model


def q_posterior(x0: Tensor, xt: Tensor, t: Tensor, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """Mean and variance of the forward posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eqs. 6-7).

    Knowing where the chain started (x0) and where it is now (x_t), the step in between is Gaussian. At index
    t = 0 the previous state is x0 itself: the mean is x0 and the variance is 0.

    Args:
        x0: (B, ...) clean data (or a prediction of it).
        xt: (B, ...) the noisy sample at step t.
        t: (B,) int64 step indices.
        schedule: the noise schedule.
    Returns:
        mean: (B, ...) mu-tilde_t(x_t, x_0).
        variance: (B, 1, ..., 1) beta-tilde_t, broadcastable against ``xt``.
    """
    _check_like(x0, "x0", xt)
    check_timesteps(t, xt.shape[0], schedule.num_steps)
    # 1 - alpha_bar_t from the betas, not from the float32 alpha_bars: near t = 0, 1 - 0.9999 loses three of
    # float32's seven digits, and the mean at t = 0 would come out as 1.0002 * x0 instead of x0.
    one_minus = -torch.expm1(torch.cumsum(torch.log1p(-schedule.betas), dim=0))  # (T,) 1 - alpha_bar_t
    one_minus_prev = torch.cat([one_minus.new_zeros(1), one_minus[:-1]])  # (T,) 1 - alpha_bar_{t-1}
    one_minus_alpha_bar = extract(one_minus, t, xt)
    one_minus_alpha_bar_prev = extract(one_minus_prev, t, xt)
    alpha_bar_prev = extract(alpha_bars_prev(schedule), t, xt)
    alpha = extract(schedule.alphas, t, xt)
    beta = extract(schedule.betas, t, xt)
    # Ho et al. 2020, Eq. 7:
    # mu-tilde = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t
    mean = (alpha_bar_prev.sqrt() * beta * x0 + alpha.sqrt() * one_minus_alpha_bar_prev * xt) / one_minus_alpha_bar
    # Ho et al. 2020, Eq. 7: beta-tilde_t = (1 - ab_{t-1}) / (1 - ab_t) beta_t
    variance = one_minus_alpha_bar_prev / one_minus_alpha_bar * beta
    return mean, variance


def diffusion_loss(
    model: Callable[..., Tensor],
    x0: Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    prediction: str = "eps",
    conditioning: dict[str, Any] | None = None,
) -> Tensor:
    """The simplified training objective: how well the model recovers the noise (Ho et al. 2020, Eq. 14).

    L_simple = E_{t, x0, eps} || eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ||^2,
    with t uniform over the T steps. With ``prediction="x0"`` or ``"v"`` the model's target is x0 or v instead.

    Args:
        model: called as ``model(xt, t, **conditioning)``; returns (B, ...) predictions.
        x0: (B, ...) a batch of clean data.
        schedule: the noise schedule.
        generator: source of t and eps when they are not given (on ``x0``'s device).
        t: (B,) int64 step indices; drawn uniformly from [0, T) when None.
        eps: (B, ...) standard normal noise; drawn when None.
        prediction: the model's target: "eps" (the paper's), "x0" or "v".
        conditioning: keyword arguments passed on to the model (labels, text context ...).
    Returns:
        scalar tensor: the mean squared error over every element of the batch.
    """
    _check_prediction(prediction)
    if not isinstance(x0, Tensor) or x0.ndim < 1:
        raise TypeError(f"x0 must be a batched tensor (B, ...), got {type(x0).__name__}")
    if t is None:
        t = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator, device=x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    xt = q_sample(x0, t, schedule, eps)
    pred = model(xt, t, **(conditioning or {}))
    if not isinstance(pred, Tensor) or pred.shape != x0.shape:
        shape = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(f"the model must return a tensor shaped like its input, {tuple(x0.shape)}, got {shape}")
    if prediction == "eps":
        target = eps
    elif prediction == "x0":
        target = x0
    else:
        target = v_target(x0, eps, t, schedule)
    # Ho et al. 2020, Eq. 14
    return F.mse_loss(pred, target)
