"""What the library needs of the machine: where to run, reproducible seeding, and files written whole.

Only notebooks and the ``tinyldm`` command choose a device; the library follows its inputs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import torch

__all__ = ["default_device", "seeded", "dropout_rng", "atomic_write"]


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


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with PyTorch's global RNG seeded, then restore it: e.g. a reproducible weight initialisation
    (``nn.Conv2d`` draws its initial weights from the global RNG) that leaves the caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def dropout_rng(generator: torch.Generator, device: torch.device, offset: int = 0) -> Iterator[None]:
    """Seed PyTorch's global RNG (which dropout draws from) from ``generator`` for one step, then restore it.

    Dropout takes no generator argument; this keeps its draws a function of our generator, so a resumed run
    drops the same units, and leaves the global RNG as it was.

    Args:
        generator: the run's generator; one number is drawn from it.
        device: the device the step runs on (its RNG is forked too when it is CUDA).
        offset: added to the seed; data-parallel processes pass their rank, so that their masks differ.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + offset)
        yield


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
