"""Choosing where to run: only notebooks and the ``tinyldm`` command call this; the library follows its inputs."""

from __future__ import annotations

import torch

__all__ = ["default_device"]


def default_device(local_rank: int | None = None) -> torch.device:
    """The fastest device available here: CUDA, then Apple's MPS, then the CPU.

    Args:
        local_rank: for one of several processes on a node (torchrun's ``LOCAL_RANK``): its own GPU,
            ``cuda:local_rank``.
    """
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
