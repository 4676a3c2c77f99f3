"""Training checkpoints that survive a crash and resume exactly.

A checkpoint holds everything the next step depends on: the weights, the EMA weights, the optimiser's moments,
the learning-rate scheduler, the step counter and the states of the random generators that draw batches, steps
and noise. Restoring all of them makes a resumed run take the very same steps as one that never stopped (on the
CPU, bit for bit). Files are written to a temporary name and renamed into place, so a run killed mid-write leaves
the previous checkpoint intact rather than half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

__all__ = ["atomic_write", "save_training_state", "load_training_state", "STATE_NAME"]

STATE_NAME = "train_state.pt"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Write a file so that readers see either the old file or the complete new one, never a partial file.

    ``write(f)`` fills a temporary file in the same folder; it is flushed to disk and then renamed over ``path``
    with ``os.replace``, which is atomic on POSIX and Windows when both names are on one file system.

    Args:
        path: the file to (re)write; its folder must exist.
        write: called with the open binary temporary file.
    Returns:
        The path written.
    """
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp makes the file private; give it the permissions open() would
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


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
