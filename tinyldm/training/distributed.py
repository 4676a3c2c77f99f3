"""Data-parallel training on several processes (one per GPU, or several CPU processes), started by ``torchrun``.

``torchrun --nproc_per_node N -m tinyldm train ...`` starts N copies of the command; each learns its place from
the environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``).
``init_from_environment`` joins them into one process group (NCCL on CUDA, gloo on the CPU) and gives each
process its device. Both training loops (``tinyldm.training.diffusion_loop``, ``tinyldm.training.autoencoder_loop``)
then average the gradients of every backward pass over the processes in one all-reduce (``average_gradients``).
They do it themselves rather than through ``DistributedDataParallel``: the latent model trains through its own
``training_loss`` method and the autoencoder's adaptive GAN weight needs ``torch.autograd.grad``, neither of which
DDP's wrapped ``forward`` sees.

How the work is split, so that N processes take the very steps one process would take with the same global batch:
every process draws the *whole* global batch's indices, steps t and noise eps from generators seeded alike, and
keeps its own contiguous slice of them (``shard``). The averaged gradient is then the gradient of the global
batch's mean loss, the generators stay in step on every process, and a checkpoint written by process 0 restores
all of them. Drawing the global batch's random numbers on every process costs a few kilobytes per step; the
networks' work is what is split. Only process 0 writes files and shows progress bars (``is_main_process``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Iterable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["local_rank", "init_from_environment", "close", "is_distributed", "rank", "world_size", "is_main_process",
           "barrier", "shard", "mean_over_processes", "check_global_batch", "average_gradients"]

T = TypeVar("T", Tensor, list)


def is_distributed() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's index in [0, world_size()); 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on the process that writes files, logs and progress bars (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if is_distributed():
        dist.barrier()


def local_rank() -> int | None:
    """This process's index on its node, from torchrun's ``LOCAL_RANK``; None when not started by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start several "
                         "processes with torchrun, e.g. `torchrun --nproc_per_node 2 -m tinyldm train ldm ...`, "
                         "which sets them")
    return int(os.environ["LOCAL_RANK"])


def init_from_environment(device: torch.device, timeout_minutes: float = 30.0) -> bool:
    """Join the process group that ``torchrun`` describes in the environment, if it describes one.

    Args:
        device: this process's device (the command gives each process its own GPU, ``cuda:LOCAL_RANK``); its
            type picks the backend, NCCL for CUDA and gloo for the CPU.
        timeout_minutes: how long a collective may wait for a slow process (sampling or checkpointing on
            process 0 makes the others wait) before the run fails.
    Returns:
        True when this process now trains with others; False for a plain single-process run.
    """
    rank_here = local_rank()
    if rank_here is None:
        return False
    if device.type == "cuda":
        if device.index is None or device.index >= torch.cuda.device_count():
            raise ValueError(f"process {rank_here} on this node was given {device}, but each process needs a GPU "
                             f"of its own among the {torch.cuda.device_count()} visible; start at most that many "
                             "processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=timeout_minutes))
    return True


def close() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_global_batch(batch_size: int) -> int:
    """The per-process batch: ``batch_size`` (the global batch) split evenly over the processes.

    Raises ValueError, naming the sizes and the fix, when the split is not even.
    """
    size = world_size()
    if batch_size % size:
        lower, upper = (batch_size // size) * size, -(-batch_size // size) * size
        raise ValueError(f"the global batch of {batch_size} images does not split evenly over {size} processes; "
                         f"use a batch size that is a multiple of {size} (e.g. {upper}"
                         + (f" or {lower})" if lower else ")"))
    return batch_size // size


def shard(batch: T) -> T:
    """This process's contiguous slice of a global batch (the whole batch in one process).

    Args:
        batch: (B, ...) tensor, or a list of B items (captions), with B divisible by ``world_size()``.
    Returns:
        (B / world_size, ...): rows rank * B / world_size onwards.
    """
    size = world_size()
    if size == 1:
        return batch
    b = check_global_batch(len(batch))
    return batch[rank() * b:(rank() + 1) * b]


def mean_over_processes(value: Tensor) -> Tensor:
    """The mean of a tensor over every process (the tensor itself in one process); e.g. the global batch's loss
    from each process's loss on its equal share."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size()


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every parameter's gradient by its mean over the processes, in one all-reduce of a flat buffer.

    Call it after ``backward()`` and before clipping (see the module docstring for why not DDP).
    """
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of sizes,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
