"""The forward (noising) process: beta schedules and the Markov chain q(x_t | x_{t-1}).

Step numbering: the paper counts steps 1..T; code counts them 0..T-1, as PyTorch indexes. Index ``t`` in
code is the paper's step t+1, so ``alpha_bars[t]`` is the product of ``alphas[0..t]`` and ``q_sample(x0, t)``
has been through t+1 noising steps. ``q_step`` at t=0 takes x0 itself as ``x_prev``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["NoiseSchedule", "check_timesteps", "extract", "q_step", "q_sample", "q_trajectory"]


class NoiseSchedule(nn.Module):
    """The variances beta_1..beta_T of the forward process and the quantities derived from them.

    Ho et al. 2020, Eq. 2 and the line after Eq. 4: alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s.
    Everything is computed in float64 and stored as float32 buffers, so the schedule moves with the model
    (``.to(device)``) and never needs to be rebuilt on another device.

    Args:
        betas: (T,) the per-step noise variances, each strictly between 0 and 1, never decreasing.
        kind: a label for printing and for ``config`` ("linear", "cosine", "scaled_linear" or "custom").
        params: the constructor arguments that produced ``betas`` (stored in ``config``).
    """

    betas: Tensor
    alphas: Tensor
    alpha_bars: Tensor

    def __init__(self, betas: Tensor, kind: str = "custom", params: dict[str, float] | None = None):
        super().__init__()
        if not isinstance(betas, Tensor):
            raise TypeError(f"betas must be a torch.Tensor of shape (T,), got {type(betas).__name__}")
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(
                f"betas must be a non-empty 1-D tensor of shape (T,), got shape {tuple(betas.shape)}; "
                "pass one variance per diffusion step"
            )
        betas64 = betas.detach().to(device="cpu", dtype=torch.float64)
        if not torch.isfinite(betas64).all() or (betas64 <= 0).any() or (betas64 >= 1).any():
            bad = betas64[~((betas64 > 0) & (betas64 < 1))]
            raise ValueError(
                f"every beta must lie strictly between 0 and 1, got {bad[:3].tolist()} "
                f"(min {betas64.min().item():.4g}, max {betas64.max().item():.4g}); "
                "lower beta_end or use NoiseSchedule.cosine, which clips betas at 0.999"
            )
        _check_rising(betas64, kind, params or {})
        alphas64 = 1.0 - betas64
        self.register_buffer("betas", betas64.float())
        self.register_buffer("alphas", alphas64.float())
        self.register_buffer("alpha_bars", torch.cumprod(alphas64, dim=0).float())
        self.kind = kind
        self.params = dict(params or {})

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps."""
        return self.betas.shape[0]

    @property
    def config(self) -> dict[str, Any]:
        """A JSON-ready description that ``from_config`` turns back into the same schedule."""
        if self.kind == "custom":
            return {"kind": "custom", "betas": self.betas.tolist()}
        return {"kind": self.kind, "num_steps": self.num_steps, **self.params}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        """Rebuild a schedule from ``config`` (the inverse of the ``config`` property)."""
        params = dict(config)
        kind = params.pop("kind", None)
        if kind == "linear":
            return cls.linear(**params)
        if kind == "cosine":
            return cls.cosine(**params)
        if kind == "scaled_linear":
            return cls.scaled_linear(**params)
        if kind == "custom":
            return cls(torch.tensor(params["betas"], dtype=torch.float64))
        raise ValueError(
            f"unknown schedule kind {kind!r}; expected 'linear', 'cosine', 'scaled_linear' or 'custom'"
        )

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Betas rising linearly from beta_start to beta_end (Ho et al. 2020, Sec. 4)."""
        _check_num_steps(num_steps)
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        params = {"beta_start": beta_start, "beta_end": beta_end}
        return cls(betas, kind="linear", params=params)

    @classmethod
    def scaled_linear(
        cls, num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> NoiseSchedule:
        """Square roots of the betas rise linearly: the schedule Stable Diffusion trains with."""
        _check_num_steps(num_steps)
        betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_steps, dtype=torch.float64) ** 2
        params = {"beta_start": beta_start, "beta_end": beta_end}
        return cls(betas, kind="scaled_linear", params=params)

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """alpha_bar follows a squared cosine, so information fades evenly (Nichol & Dhariwal 2021, Eq. 17).

        Betas are clipped at ``max_beta`` to avoid the singularity at the last step.
        """
        _check_num_steps(num_steps)
        if s <= 0:
            raise ValueError(f"the cosine offset s must be positive, got {s}; the paper uses s=0.008")
        # Nichol & Dhariwal 2021, Eq. 17: f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), alpha_bar_t = f(t) / f(0)
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        # beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, clipped (the text below Eq. 17)
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls(betas, kind="cosine", params={"s": s, "max_beta": max_beta})

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, Eq. 2).

        Args:
            t: int64 step indices of any shape, each in [0, T).
        Returns:
            float32 tensor of the same shape as ``t``.
        """
        _check_index_values(t, self.num_steps)
        alpha_bar = self.alpha_bars.to(t.device)[t]
        return alpha_bar / (1 - alpha_bar)

    def extra_repr(self) -> str:
        details = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"kind={self.kind}, num_steps={self.num_steps}" + (f", {details}" if details else "")


def _check_rising(betas64: Tensor, kind: str, params: dict[str, float]) -> None:
    """Refuse betas that decrease: equal neighbours are fine (cosine's clipping at max_beta makes them)."""
    falls = torch.nonzero(betas64[1:] < betas64[:-1])
    if not len(falls):
        return
    t = int(falls[0]) + 1
    if kind in ("linear", "scaled_linear") and {"beta_start", "beta_end"} <= set(params):
        start, end = params["beta_start"], params["beta_end"]
        fix = (f"beta_start={start} is above beta_end={end}: swap beta_start and beta_end (beta_start={end}, "
               f"beta_end={start}); beta_start is the first, smallest variance")
    else:
        fix = "give them in rising order, e.g. betas.flip(0) if they are reversed"
    raise ValueError(
        f"betas must not decrease, but beta[{t}]={betas64[t].item():.4g} < beta[{t - 1}]={betas64[t - 1].item():.4g}: "
        "the forward process must add more noise at later steps, not less, so that alpha_bar falls slowly while "
        "the image is still clear and reaches noise at the last step, where sampling starts; " + fix
    )


def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int, got {num_steps!r} ({type(num_steps).__name__})")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}; the usual choice is 1000")


def _check_index_values(t: Tensor, num_steps: int) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(
            f"t must be an int64 tensor, got {type(t).__name__}; use torch.tensor([...], dtype=torch.long)"
        )
    if t.dtype != torch.int64:
        raise TypeError(f"t must have dtype torch.int64, got {t.dtype}; convert it with t.long()")
    if t.numel() and (t.min() < 0 or t.max() >= num_steps):
        raise ValueError(
            f"t must lie in [0, {num_steps - 1}] for a schedule of {num_steps} steps, "
            f"got values from {t.min().item()} to {t.max().item()} (steps are numbered from 0 in code)"
        )


def check_timesteps(t: Tensor, batch_size: int, num_steps: int) -> None:
    """Raise a clear error unless ``t`` is an int64 tensor of shape (batch_size,) with values in [0, num_steps).

    Args:
        t: (B,) int64 step indices.
        batch_size: the expected B (the first dimension of the images).
        num_steps: T of the schedule.
    """
    _check_index_values(t, num_steps)
    if t.shape != (batch_size,):
        raise ValueError(
            f"t must have shape ({batch_size},), one step per image, got {tuple(t.shape)}; "
            f"for one step shared by all images use torch.full(({batch_size},), step, dtype=torch.long)"
        )


def extract(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """Pick ``values[t]`` per batch element and shape it to broadcast against ``x``.

    Args:
        values: (T,) a per-step schedule quantity.
        t: (B,) int64 step indices.
        x: (B, ...) the tensor the result will multiply.
    Returns:
        (B, 1, ..., 1) with ``x.ndim`` dimensions, on ``x``'s device and dtype.
    """
    picked = values.to(device=x.device)[t.to(x.device)].to(x.dtype)
    return picked.reshape(x.shape[0], *([1] * (x.ndim - 1)))


def _check_pair(a: Tensor, a_name: str, eps: Tensor, t: Tensor, schedule: NoiseSchedule) -> None:
    if not isinstance(a, Tensor) or a.ndim < 1:
        raise TypeError(f"{a_name} must be a batched tensor (B, ...), got {type(a).__name__}")
    if not isinstance(eps, Tensor) or eps.shape != a.shape:
        shape = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise ValueError(
            f"eps must have the same shape as {a_name}, {tuple(a.shape)}, got {shape}; "
            f"draw it with torch.randn_like({a_name})"
        )
    check_timesteps(t, a.shape[0], schedule.num_steps)


def q_step(x_prev: Tensor, t: Tensor, schedule: NoiseSchedule, eps: Tensor) -> Tensor:
    """One step of the Markov chain: x_t ~ q(x_t | x_{t-1}) (Ho et al. 2020, Eq. 2).

    x_t = sqrt(alpha_t) * x_{t-1} + sqrt(beta_t) * eps. At t=0, ``x_prev`` is x0.

    Args:
        x_prev: (B, ...) the previous state x_{t-1}.
        t: (B,) int64 indices of the step to take.
        schedule: the noise schedule.
        eps: (B, ...) standard normal noise, same shape as ``x_prev``.
    Returns:
        (B, ...) x_t.
    """
    _check_pair(x_prev, "x_prev", eps, t, schedule)
    # Ho et al. 2020, Eq. 2: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    return extract(schedule.alphas, t, x_prev).sqrt() * x_prev + extract(schedule.betas, t, x_prev).sqrt() * eps


def q_sample(x0: Tensor, t: Tensor, schedule: NoiseSchedule, eps: Tensor) -> Tensor:
    """Jump straight from x0 to x_t with the closed form q(x_t | x_0) (Ho et al. 2020, Eq. 4).

    x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps.

    Args:
        x0: (B, ...) clean data.
        t: (B,) int64 step indices.
        schedule: the noise schedule.
        eps: (B, ...) standard normal noise, same shape as ``x0``.
    Returns:
        (B, ...) x_t.
    """
    _check_pair(x0, "x0", eps, t, schedule)
    alpha_bar = extract(schedule.alpha_bars, t, x0)
    # Ho et al. 2020, Eq. 4: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


def q_trajectory(
    x0: Tensor, schedule: NoiseSchedule, record: list[int], generator: torch.Generator | None = None
) -> Tensor:
    """Run the Markov chain step by step from x0 and keep the states at the requested steps.

    One real sample path of Eq. 2: fresh noise at every step, so consecutive frames are correlated the way the
    chain makes them (``q_sample`` with one shared eps would not be a path of the chain).

    Args:
        x0: (B, ...) clean data.
        schedule: the noise schedule.
        record: step indices to keep, each in [-1, T); -1 means x0 itself.
        generator: the source of the noise (CPU generator for CPU tensors).
    Returns:
        (len(record), B, ...) the states x_t at the steps in ``record``, in the order given.
    """
    if not record:
        raise ValueError("record is empty: list the steps to keep, for example [-1, 99, 499, 999]")
    bad = [s for s in record if not -1 <= s < schedule.num_steps]
    if bad:
        raise ValueError(f"record steps must lie in [-1, {schedule.num_steps - 1}], got {bad}")
    kept: dict[int, Tensor] = {-1: x0}
    x = x0
    for step in range(max(record) + 1):
        t = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x = q_step(x, t, schedule, eps)
        if step in record:
            kept[step] = x
    return torch.stack([kept[s] for s in record])
