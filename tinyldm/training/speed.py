"""Switches that make training steps faster on a GPU without changing the lessons' code paths.

None of them changes what a step computes, only how: lower-precision arithmetic where it is safe (bf16 autocast,
TF32 matmuls), a memory layout convolutions prefer (channels_last), fewer kernel launches (fused AdamW,
``torch.compile``) and no host-to-device copies (the training tensor kept on the GPU, or pinned for fast copies).
On the CPU every switch but ``compile`` is a no-op, so the CPU tests and lessons run the plain path; the one thing
the CPU always gets is AdamW's multi-tensor update (``adamw_options``), which gives the same weights bit for bit.

The defaults: bf16 autocast on CUDA (the loop has always used it: it halves activation memory and runs the
convolutions and matmuls on tensor cores), the training tensor on the GPU when it fits in ``data_on_device_mb``
(latents and 64x64 images are small), and pinned memory otherwise. TF32, channels_last, fused AdamW and compile
stay off until ``benchmarks/throughput.py --sweep`` has measured them on a GPU (see its docstring for the figures
measured so far); turn them on with ``tinyldm train ... --tf32 --channels-last --fused-adamw --compile``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SpeedConfig"]


@dataclass
class SpeedConfig:
    """How a training loop runs its steps; see the module docstring for what each switch does and its default."""

    bf16: bool = True  # bf16 autocast for the forward pass on CUDA (ignored elsewhere)
    tf32: bool = False  # let float32 matmuls and convolutions use TF32 tensor cores on CUDA (Ampere and newer)
    channels_last: bool = False  # NHWC memory layout for the model and its 4-D inputs on CUDA
    fused_adamw: bool = False  # AdamW's single fused CUDA kernel instead of one kernel per tensor
    compile: bool = False  # torch.compile the network (minutes of compiling first; any device)
    data_on_device_mb: float = 2048.0  # keep the training tensor on the GPU when it is at most this big

    def validate(self) -> None:
        """Raise ValueError naming a field that cannot work."""
        if not self.data_on_device_mb >= 0:
            raise ValueError(f"SpeedConfig.data_on_device_mb must be >= 0 (0 keeps data on the CPU), got "
                             f"{self.data_on_device_mb}")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for a forward pass on ``device``: bf16 on CUDA when ``bf16``, else a no-op."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16 and device.type == "cuda")

    def adamw_options(self, device: torch.device) -> dict[str, Any]:
        """Keyword arguments for ``torch.optim.AdamW``: ``fused=True`` on CUDA when asked for; on a CPU the
        multi-tensor (``foreach``) update, which PyTorch picks by itself only on CUDA. For the small models of the
        lessons it halves the optimiser's time per step and gives bit for bit the same weights."""
        if self.fused_adamw and device.type == "cuda":
            return {"fused": True}
        return {"foreach": True} if device.type == "cpu" else {}

    def place_data(self, data: Tensor, device: torch.device) -> Tensor:
        """The training tensor where batches are cut from it fastest: on a CUDA ``device`` when it is at most
        ``data_on_device_mb``, otherwise pinned in CPU memory so its batches copy asynchronously; on other
        devices, where it is."""
        self.validate()
        if device.type != "cuda" or data.device.type == "cuda":
            return data
        if data.numel() * data.element_size() <= self.data_on_device_mb * 2**20:
            return data.to(device)
        return data.pin_memory()

    def format_batch(self, x: Tensor) -> Tensor:
        """A 4-D batch in the model's memory layout (channels_last on CUDA when asked for)."""
        if self.channels_last and x.device.type == "cuda" and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: nn.Module, device: torch.device) -> None:
        """Set ``model`` up for the training steps, in place: channels_last on CUDA and compiled
        (``nn.Module.compile``) when asked for, and the process's matmul precision. Its parameters stay its own,
        so the optimiser, the EMA and checkpoints keep working on it."""
        self.validate()
        if self.channels_last and device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        if self.compile:
            model.compile()
        self.apply_precision(device)

    def apply_precision(self, device: torch.device) -> None:
        """Let float32 matmuls and convolutions run on TF32 tensor cores when ``tf32`` and ``device`` is CUDA.

        PyTorch's precision settings belong to the process, not to a model: this changes them for the rest of it.
        """
        if self.tf32 and device.type == "cuda":
            if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # PyTorch 2.9 and later
                torch.backends.cuda.matmul.fp32_precision = "tf32"
                torch.backends.cudnn.conv.fp32_precision = "tf32"
            else:  # earlier versions, which pyproject.toml allows (their switches are deprecated from 2.9 on)
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
