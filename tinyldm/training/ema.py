"""An exponential moving average (EMA) of a model's weights, the weights diffusion models are sampled with.

The weights seen at the end of training jitter with the last few batches; their running average is a smoother,
better model for the same training cost (Ho et al. 2020, App. B, use decay 0.9999; Song & Ermon 2020, Sec. 3.5).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """A frozen copy of ``model`` whose weights follow theta_ema <- d * theta_ema + (1 - d) * theta.

    The decay warms up as d_k = min(decay, (1 + k) / (10 + k)) after k updates, so that early on the average is
    not dominated by the random initial weights (the schedule of TensorFlow's ExponentialMovingAverage).

    Args:
        model: the model being trained; it is deep-copied.
        decay: the final decay d; the average spans about 1 / (1 - d) steps.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}; 0.999 averages about 1000 steps")
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update will use."""
        k = self.num_updates
        return min(self.decay, (1 + k) / (10 + k))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights; buffers are copied as they are."""
        d = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach().to(a.dtype) for a, p in zip(ema_params, model.parameters())]
        # One multi-tensor kernel for all parameters rather than one launch each (hundreds, on a GPU).
        torch._foreach_lerp_(ema_params, params, 1 - d)
        for averaged, current in zip(self.model.buffers(), model.buffers()):
            averaged.copy_(current)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The decay, the update count and the averaged weights."""
        return {"decay": self.decay, "num_updates": self.num_updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from ``state_dict``."""
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        self.model.load_state_dict(state["model"])
