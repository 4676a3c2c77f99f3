"""What every job shares: choosing a preset, the record a training call adds to ``run.json``, and the frames of
the reverse process kept for an animation."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinyldm.training.run_folder import RUN_RECORD_NAME, append_run_record

__all__ = ["pick_preset", "with_overrides", "record_run", "FrameRecorder", "SAMPLE_BATCH", "batches",
           "check_finite_images"]

SAMPLE_BATCH = 64  # images drawn at once by the sampling jobs; more are drawn batch after batch

P = TypeVar("P")
C = TypeVar("C")


def pick_preset(presets: dict[str, P], name: str) -> P:
    """``presets[name]``, or a ValueError that lists the presets there are."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; use one of {sorted(presets)}")
    return presets[name]


def with_overrides(config: C, **values: Any) -> C:
    """A copy of a dataclass config with the values that are not None replaced (the command's overrides)."""
    return dataclasses.replace(config, **{k: v for k, v in values.items() if v is not None})


def record_run(out: Path, resume: bool, started: float, result: Any, device: torch.device,
               final_losses: list[float], **settings: Any) -> None:
    """Add this training call's record to ``out/run.json``, the job's settings, the machine and the timing, and
    the file to ``result.files``.

    Args:
        out: the run folder.
        resume: whether this call continued a saved run.
        started: ``time.time()`` when the job started.
        result: the loop's result (``steps_run``, ``train_seconds``, ``images_per_second``).
        device: where it trained.
        final_losses: the losses of the run's last steps, whose mean is recorded.
        settings: what the job adds (preset, data record, image size ...).
    """
    record = {**settings, "device": str(device), "threads": torch.get_num_threads(), "steps_run": result.steps_run,
              "wall_seconds": round(time.time() - started, 1), "train_seconds": round(result.train_seconds, 1),
              "images_per_second": round(result.images_per_second, 1),
              "final_loss_mean_100": sum(final_losses[-100:]) / max(1, len(final_losses[-100:]))}
    append_run_record(out, record, resume)
    result.files["run record"] = out / RUN_RECORD_NAME


def batches(num_images: int, batch_size: int = SAMPLE_BATCH, progress: bool = True) -> list[int]:
    """The sizes of the batches that draw ``num_images`` images, with a progress bar over them when there are
    several (each batch's sampler then keeps its own bar quiet)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"the number of images must be a positive whole number, got {num_images!r}")
    sizes = [min(batch_size, num_images - start) for start in range(0, num_images, batch_size)]
    return list(tqdm(sizes, desc=f"batches of {batch_size}", disable=not progress or len(sizes) == 1))


def check_finite_images(images: Tensor, model: nn.Module, settings: str) -> None:
    """Raise ValueError when generated images hold NaN or infinite numbers, saying what produced them, so that
    they are never written out as black pictures.

    Args:
        images: (B, C, H, W) the samples.
        model: the model that drew them (its weights are checked).
        settings: the sampling settings to name when the weights are sound, e.g. "guidance scale 1e+30".
    """
    bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
    if not bad:
        return
    broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        cause = (f"the model's weights hold NaN or infinite numbers ({len(broken)} tensors, e.g. {broken[0]}): its "
                 "checkpoint is damaged or its training diverged; retrain it or restore its folder")
    else:
        cause = (f"the weights are sound, so the sampling settings overflowed ({settings}); use moderate values, "
                 "e.g. a guidance scale from 1 to about 10")
    raise ValueError(f"{bad} of {len(images)} images came out as NaN or infinite numbers, so none were written: "
                     f"{cause}")


class FrameRecorder:
    """A sampler callback that keeps about ``frames`` states of the reverse process, for an animation.

    Args:
        steps: the sampler's number of steps.
        frames: about how many frames to keep.
        what: "x_prev", the chain itself from x_T to x0 (pixels), or "x0_pred", the model's guess of the clean
            data at each kept step (latents: noisy latents decode to colour noise, the guesses to pictures).
    """

    def __init__(self, steps: int, frames: int, what: str = "x_prev"):
        if what not in ("x_prev", "x0_pred"):
            raise ValueError(f"what must be 'x_prev' or 'x0_pred', got {what!r}")
        self.every = max(1, math.ceil(steps / max(1, frames)))
        self.what = what
        self.kept: list[Tensor] = []
        self.labels: list[int] = []

    def __call__(self, info: dict[str, Any]) -> None:
        if self.what == "x0_pred":
            if info["i"] % self.every == 0:
                self._keep(info["x0_pred"], info["t"])
            return
        if info["i"] == 0:
            self._keep(info["xt"], info["t"])
        if (info["i"] + 1) % self.every == 0 or info["t_prev"] == -1:
            self._keep(info["x_prev"], info["t_prev"])

    def _keep(self, x: Tensor, label: int) -> None:
        self.kept.append(x.detach().cpu())
        self.labels.append(label)

    def frames(self) -> Tensor:
        """(K, B, ...) the kept states, in order."""
        return torch.stack(self.kept)
