"""The reverse process as samplers: DDPM, DDIM and DPM-Solver++(2M) loops from noise to data.

Each loop chains the one-step updates of ``tinyldm.reverse_step``: DDPM walks the stochastic chain back (Ho et al.
2020); DDIM takes big deterministic steps along the same marginals (Song et al. 2021); DPM-Solver++ solves the same
deterministic path, the probability-flow ODE, to second order, so that it needs fewer steps still (Lu et al. 2022).
``sample(..., sampler=name)`` picks one by name.

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

from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tinyldm.reverse_step import ddim_step, ddim_timesteps, ddpm_step, dpm_solver_step, predict_x0
from tinyldm.schedule import NoiseSchedule

__all__ = ["SAMPLERS", "ddpm_sample", "ddim_sample", "dpm_solver_sample", "sample"]

SAMPLERS = ("ddpm", "ddim", "dpm++")

Callback = Callable[[dict[str, Any]], None]
StepHook = Callable[[dict[str, Any]], Tensor]


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
            x0_pred = predict_x0(eps_pred, t, x, schedule, clip_x0)
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
            x0_pred = predict_x0(eps_pred, t, x, schedule, clip_x0)
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
        x0_pred = predict_x0(eps_pred, t, x, schedule, clip_x0)
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
