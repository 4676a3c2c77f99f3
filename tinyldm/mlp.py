"""A small noise-prediction network for 2-D points, and the loop that trains it.

The 2-D lesson needs a denoiser that trains in seconds on a laptop CPU: an MLP whose hidden layers are
residual blocks that each receive the step embedding, the same pattern as the UNet's ResBlocks of lesson 3,
with linear layers in place of convolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinyldm.diffusion import diffusion_loss
from tinyldm.schedule import NoiseSchedule
from tinyldm.time_embedding import TimeEmbedding

__all__ = ["MLPConfig", "MLPDenoiser", "fit"]


@dataclass
class MLPConfig:
    """Hyperparameters of ``MLPDenoiser``."""

    data_dim: int = 2  # size of one data point (2 for the toy point clouds)
    hidden_dim: int = 64  # width of every hidden layer
    num_blocks: int = 3  # residual blocks between the input and output layers
    time_dim: int = 32  # width of the sinusoidal step features fed to the time MLP

    @classmethod
    def tiny(cls) -> MLPConfig:
        """A preset that trains in a few seconds: good enough for tests and quick looks."""
        return cls(hidden_dim=32, num_blocks=2, time_dim=16)


class _Block(nn.Module):
    """h + Linear(SiLU(Linear(SiLU(h)) + Linear(SiLU(temb)))): a ResBlock made of linear layers."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_dim, hidden_dim)
        self.time_proj = nn.Linear(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        # h: (B, D), temb: (B, D). Adding the step inside every block lets each layer act differently per step.
        inner = F.silu(self.fc1(F.silu(h)) + self.time_proj(F.silu(temb)))  # (B, D)
        return h + self.fc2(inner)  # (B, D)


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t) for vectors: predicts the noise in a noisy point (Ho et al. 2020, Eq. 14's network).

    There is no normalisation layer, and the output reads the residual stream linearly: at high noise the right
    answer is close to eps = x_t, a linear function of the input, and a LayerNorm would erase the input's scale.
    With one, the rare far-out starting points of deterministic DDIM drift off to |x| ~ 50.

    Args:
        config: the hyperparameters; ``MLPConfig()`` when None.
    """

    def __init__(self, config: MLPConfig | None = None):
        super().__init__()
        self.config = config = config or MLPConfig()
        self.time_embed = TimeEmbedding(config.time_dim, config.hidden_dim)
        self.inp = nn.Linear(config.data_dim, config.hidden_dim)
        self.blocks = nn.ModuleList(_Block(config.hidden_dim) for _ in range(config.num_blocks))
        self.out = nn.Linear(config.hidden_dim, config.data_dim)

    def forward(self, xt: Tensor, t: Tensor) -> Tensor:
        """Predict the noise.

        Args:
            xt: (B, data_dim) noisy points.
            t: (B,) int64 step indices.
        Returns:
            (B, data_dim) eps_pred.
        """
        if xt.ndim != 2 or xt.shape[1] != self.config.data_dim:
            raise ValueError(
                f"xt must have shape (B, {self.config.data_dim}), got {tuple(xt.shape)}; "
                "MLPDenoiser works on flat vectors (set MLPConfig.data_dim to match)"
            )
        temb = self.time_embed(t)  # (B, D)
        h = self.inp(xt)  # (B, D)
        for block in self.blocks:
            h = block(h, temb)  # (B, D)
        return self.out(h)  # (B, data_dim)


def fit(
    model: nn.Module,
    data: Tensor,
    schedule: NoiseSchedule,
    steps: int = 5000,
    batch_size: int = 1024,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
    progress: bool = True,
    loss: Callable[..., Tensor] = diffusion_loss,
) -> list[float]:
    """Train ``model`` with the simplified loss (Ho et al. 2020, Algorithm 1) on random batches of ``data``.

    Adam with a cosine learning-rate decay to zero, which averages out the noise of the last batches (an EMA of
    the weights adds nothing on top for this model).

    Args:
        model: called as ``model(xt, t) -> eps_pred``; its parameters are updated in place.
        data: (N, ...) the training set, on the model's device.
        schedule: the noise schedule (on the same device).
        steps: optimiser steps.
        batch_size: points per batch, drawn with replacement.
        lr: peak learning rate.
        generator: source of the batches, t and eps (on ``data``'s device); same seed, same model.
        progress: show a tqdm progress bar.
        loss: the objective, called as ``loss(model, x0, schedule, generator=generator)``; ``diffusion_loss`` by
            default (lesson 2 swaps in a wrong target to show what goes wrong).
    Returns:
        the loss at every step, as Python floats.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for _ in bar:
        index = torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=data.device)
        value = loss(model, data[index], schedule, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        scheduler.step()
        losses.append(value.item())
        if len(losses) % 100 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / 100:.4f}")
    model.eval()
    return losses
