"""Training checkpoints that survive a crash and resume exactly.

A checkpoint holds everything the next step depends on: the weights, the EMA weights, the optimiser's moments,
the learning-rate scheduler, the step counter and the states of the random generators that draw batches, steps
and noise. Restoring all of them makes a resumed run take the very same steps as one that never stopped (on the
CPU, bit for bit). Files are written to a temporary name and renamed into place, so a run killed mid-write leaves
the previous checkpoint intact rather than half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tinyldm.runtime import atomic_write

__all__ = ["save_training_state", "load_training_state", "STATE_NAME"]

STATE_NAME = "train_state.pt"


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a training state (tensors, numbers, strings, nested dicts and lists) atomically with ``torch.save``.

    Args:
        path: the file, conventionally ``<run folder>/train_state.pt``.
        state: e.g. ``{"step": ..., "model": model.state_dict(), "ema": ..., "optimizer": ..., "scheduler": ...,
            "generators": {"data": g.get_state(), ...}}``.
    Returns:
        The path written.
    """
    return atomic_write(path, lambda f: torch.save(state, f))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state written by ``save_training_state`` onto the CPU.

    ``weights_only=True`` refuses anything but tensors and plain containers, so a tampered file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}; it is written every checkpoint_every steps of a run")
    return torch.load(path, map_location="cpu", weights_only=True)
