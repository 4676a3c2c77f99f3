"""One plain-PyTorch training loop for diffusion models, and the pieces it is made of.

The loop is Algorithm 1 of Ho et al. 2020 with the usual engineering around it: AdamW, a linear warm-up then
cosine decay of the learning rate, gradient clipping, an EMA of the weights, bf16 autocast on CUDA, a progress bar
with the running loss, sample grids every so often, a loss log in JSON lines and its plot, and checkpoints written
atomically that resume exactly. A non-finite loss stops the run with the step number.

The pieces (``TrainConfig``, ``lr_factor``, ``EMA``, ``save_training_state``, and the run folder's loss log and
resume checks in ``tinyldm.training.run_folder``) are separate so that other loops, such as the autoencoder's adversarial
one (``tinyldm.training.autoencoder_loop``), share them.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinyldm.diffusion import diffusion_loss
from tinyldm.pretrained import config_to_dict, save_schedule
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.training import distributed
from tinyldm.training.checkpoint import STATE_NAME, save_training_state
from tinyldm.training.ema import EMA
from tinyldm.training.run_folder import LOG_NAME, LossLog, open_run_folder
from tinyldm.training.speed import SpeedConfig

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "lr_factor", "plot_losses",
           "train_diffusion"]


@dataclass
class TrainConfig:
    """Hyperparameters of ``train_diffusion``."""

    steps: int = 10_000  # optimiser steps in the whole run
    batch_size: int = 64  # images per step
    lr: float = 2e-4  # peak learning rate of AdamW
    warmup_steps: int = 200  # steps of linear warm-up from 0 to lr
    lr_decay: str = "cosine"  # "cosine" (down to 0 at the last step) or "constant" after the warm-up
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    grad_clip: float = 1.0  # clip the gradient's global norm to this; 0 disables
    ema_decay: float = 0.999  # decay of the weight average used for sampling
    seed: int = 0  # seeds the generators of batches, steps, noise and dropout
    checkpoint_every: int = 500  # steps between checkpoints (and the last step); 0: only the last
    sample_every: int = 1000  # steps between sample grids; 0 disables them
    num_samples: int = 16  # images in each sample grid
    sample_steps: int = 50  # ancestral sampling steps for the sample grids

    def validate(self) -> None:
        """Raise ValueError naming a field that cannot work."""
        for name in ("steps", "batch_size", "num_samples", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "sample_every", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}; 1e-4 to 1e-3 suits these UNets")
        if self.lr_decay not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.lr_decay must be 'cosine' or 'constant', got {self.lr_decay!r}")


@dataclass
class TrainResult:
    """What ``train_diffusion`` returns."""

    losses: list[float]  # the loss at every step since the start of the run (also before a resume)
    ema_model: nn.Module  # the averaged model, for sampling
    steps_run: int  # steps taken by this call (fewer than losses after a resume)
    train_seconds: float  # time spent in training steps by this call (no sampling, no checkpoints)
    images_per_second: float = field(default=0.0)  # steps_run * batch_size / train_seconds


class NonFiniteLossError(FloatingPointError):
    """The loss (or the gradient) became NaN or infinite; ``step`` is the 1-based step where it happened."""

    def __init__(self, step: int, what: str, value: float, lr: float):
        self.step = step
        super().__init__(
            f"the {what} became {value} at step {step} (learning rate {lr:.3g}); training stopped. Lower the "
            "learning rate or raise warmup_steps, keep grad_clip on, and resume from the last checkpoint"
        )


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay: str = "cosine") -> float:
    """The learning rate at ``step`` (0-based) as a fraction of the peak: linear warm-up, then cosine decay to 0.

    Warm-up keeps Adam's first, badly estimated updates small (Goyal et al. 2017); the cosine decay
    (Loshchilov & Hutter 2017) ends the run with small, averaging steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def plot_losses(losses: list[float], window: int = 100, title: str = "training loss") -> Figure:
    """The loss per step (faint) and its moving average over ``window`` steps, on a log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
    steps = torch.arange(1, len(losses) + 1)
    values = torch.tensor(losses, dtype=torch.float64)
    ax.plot(steps, values, alpha=0.25, linewidth=0.8, label="per step")
    if len(losses) >= window:
        smooth = values.unfold(0, window, 1).mean(1)  # (len - window + 1,)
        ax.plot(steps[window - 1:], smooth, label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


@contextlib.contextmanager
def _dropout_rng(generator: torch.Generator, device: torch.device) -> Iterator[None]:
    """Seed PyTorch's global RNG (which dropout draws from) from ``generator`` for one step, then restore it.

    Dropout takes no generator argument; this keeps its draws a function of our generator, so a resumed run
    drops the same units, and leaves the global RNG as it was.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # Every process draws the same seed (their generators are in step); its rank keeps the masks apart.
        torch.manual_seed(seed + distributed.rank())
        yield


def _save_samples(ema_model: nn.Module, schedule: NoiseSchedule, config: TrainConfig, shape: tuple[int, ...],
                  path: Path, conditioning: Tensor | None, decode: Callable[[Tensor], Tensor] | None) -> None:
    from tinyldm.viz.images import save_grid

    generator = torch.Generator(schedule.betas.device).manual_seed(config.seed)
    num = config.num_samples if conditioning is None else min(config.num_samples, conditioning.shape[0])
    cond = None if conditioning is None else {"cond": conditioning[:num].to(schedule.betas.device)}
    # Ancestral steps (eta = 1): fresh noise at each step hides less of what a half-trained model can already do.
    # Clipping x0 to [-1, 1] suits pixels only; latents are decoded to pixels afterwards.
    samples = ddim_sample(ema_model, (num, *shape), schedule, steps=min(config.sample_steps, schedule.num_steps),
                          eta=1.0, generator=generator, conditioning=cond, clip_x0=decode is None, progress=False)
    images = samples if decode is None else decode(samples).clamp(-1, 1)
    save_grid(images, path, nrow=math.ceil(math.sqrt(num)), scale=2)


def train_diffusion(
    model: nn.Module,
    data: Tensor,
    schedule: NoiseSchedule,
    config: TrainConfig,
    out: str | Path | None = None,
    resume: bool = False,
    prediction: str = "eps",
    progress: bool = True,
    until: int | None = None,
    conditioning: Tensor | None = None,
    decode: Callable[[Tensor], Tensor] | None = None,
    speed: SpeedConfig | None = None,
) -> TrainResult:
    """Train a noise predictor with the simplified loss (Ho et al. 2020, Algorithm 1, Eq. 14).

    Each step draws ``batch_size`` images from ``data`` (with replacement), a step t and noise eps for each, and
    takes an AdamW step on || eps - model(x_t, t) ||^2. Everything random comes from generators seeded with
    ``config.seed`` whose states are checkpointed, so resuming repeats the uninterrupted run exactly on a CPU.

    Started by ``torchrun`` (see ``tinyldm.training.distributed``), the processes share each global batch of
    ``batch_size`` images, DistributedDataParallel averages their gradients, and the run takes the same steps as
    a single process would, up to the order of floating-point sums; only process 0 writes to ``out``.

    Args:
        model: called as ``model(xt, t) -> eps_pred``; trained in place on the device of its parameters.
        data: (N, C, H, W) training images in [-1, 1], on any device (batches move to the model's).
        schedule: the noise schedule, on the model's device.
        config: the hyperparameters.
        out: run folder for the loss log, its plot, sample grids, checkpoints and the exported EMA model
            (config.json, model.safetensors, schedule.json); None keeps everything in memory.
        resume: continue the run saved in ``out``; without it, ``out`` must not hold a run already.
        prediction: the model's target, "eps", "x0" or "v" (see ``tinyldm.diffusion``).
        progress: show a tqdm progress bar with the running loss.
        until: stop after this step, with a checkpoint, as if the run were interrupted there (resume later);
            None runs to ``config.steps``.
        conditioning: (N, ...) per-item conditioning, e.g. caption indices: each batch takes the rows of the
            batch's data items and the model is called as ``model(xt, t, cond=rows)``; sample grids use the
            first ``num_samples`` rows. None: an unconditional model.
        decode: turns samples into images for the sample grids, e.g. an autoencoder's ``decode_latents`` when
            ``data`` holds latents; None: the samples are images in [-1, 1].
        speed: the switches that make steps faster without changing what they compute (bf16 autocast, TF32,
            channels_last, fused AdamW, torch.compile, data kept on the GPU); ``SpeedConfig()`` when None.
    Returns:
        a ``TrainResult``; ``model`` holds the last weights and ``result.ema_model`` the averaged ones.
    """
    config.validate()
    stop = config.steps if until is None else until
    if not 1 <= stop <= config.steps:
        raise ValueError(f"until must lie in [1, {config.steps}] (the run's steps), got {until}")
    if data.ndim != 4:
        raise ValueError(f"data must be a tensor of images (N, C, H, W), got shape {tuple(data.shape)}")
    if conditioning is not None and conditioning.shape[0] != data.shape[0]:
        raise ValueError(f"conditioning has {conditioning.shape[0]} rows but data has {data.shape[0]} items; "
                         "pass one row per item")
    distributed.check_global_batch(config.batch_size)
    speed = speed or SpeedConfig()
    device = next(model.parameters()).device
    main = distributed.is_main_process()
    out = Path(out) if out is not None else None
    data = speed.place_data(data, device)
    if conditioning is not None:
        conditioning = speed.place_data(conditioning, device)
    data_gen = torch.Generator().manual_seed(config.seed)  # batch indices: always on the CPU
    noise_gen = torch.Generator(device).manual_seed(config.seed + 1)  # t, eps and dropout seeds
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  **speed.adamw_options(device))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor(k, config.warmup_steps, config.steps, config.lr_decay))
    ema = EMA(model, config.ema_decay)
    log = LossLog(out / LOG_NAME) if out is not None else None
    records: list[dict[str, Any]] = []
    start = 0
    if out is not None:
        start, records = _prepare_run_folder(out, config, resume, model, ema, optimizer, scheduler,
                                             data_gen, noise_gen, log)
    losses = [r["loss"] for r in records]
    network = speed.prepare_model(model, device)  # what the steps call: maybe compiled, maybe wrapped in DDP

    model.train()
    train_seconds, pending = 0.0, []
    running = losses[-1] if losses else None
    bar = tqdm(range(start, stop), desc="training", disable=not (progress and main), initial=start,
               total=config.steps)
    for step in bar:
        tick = time.perf_counter()
        # The whole global batch is drawn on every process, which keeps its share (see tinyldm.training.distributed).
        index = torch.randint(0, data.shape[0], (config.batch_size,), generator=data_gen)
        x0 = speed.format_batch(distributed.shard(data[index.to(data.device)]).to(device, non_blocking=True))
        cond = None if conditioning is None else \
            {"cond": distributed.shard(conditioning[index.to(conditioning.device)]).to(device, non_blocking=True)}
        lr = optimizer.param_groups[0]["lr"]
        with speed.autocast(device), _dropout_rng(noise_gen, device):
            t = torch.randint(0, schedule.num_steps, (config.batch_size,), generator=noise_gen, device=device)
            eps = torch.randn((config.batch_size, *x0.shape[1:]), generator=noise_gen, device=device,
                              dtype=x0.dtype)
            loss = diffusion_loss(network, x0, schedule, t=distributed.shard(t), eps=distributed.shard(eps),
                                  prediction=prediction, conditioning=cond)
        value = distributed.mean_over_processes(loss.detach()).item()
        if not math.isfinite(value):
            raise NonFiniteLossError(step + 1, "loss", value, lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(step + 1, "gradient norm", grad_norm.item(), lr)
        optimizer.step()
        scheduler.step()
        ema.update(model)
        train_seconds += time.perf_counter() - tick

        losses.append(value)
        pending.append({"step": step + 1, "loss": value, "lr": lr, "grad_norm": round(grad_norm.item(), 6)})
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.set_postfix(loss=f"{running:.4f}", refresh=False)
        done = step + 1
        if out is None:
            continue
        if main and config.sample_every and done % config.sample_every == 0:
            _save_samples(ema.model, schedule, config, tuple(data.shape[1:]), out / "samples" / f"step_{done:06d}.png",
                          conditioning, decode)
        if done == stop or (config.checkpoint_every and done % config.checkpoint_every == 0):
            if main:
                log.append(pending)
                _checkpoint(out, done, model, ema, optimizer, scheduler, data_gen, noise_gen, schedule, prediction,
                            data.shape[-1])
            pending = []
            distributed.barrier()  # no process runs ahead of a checkpoint it might have to resume from
    bar.close()
    model.eval()
    if out is not None and main:
        fig = plot_losses(losses)
        fig.savefig(out / "loss.png", dpi=110)
        plt.close(fig)
    steps_run = max(0, stop - start)
    speed_ips = steps_run * config.batch_size / train_seconds if train_seconds else 0.0
    return TrainResult(losses, ema.model, steps_run, train_seconds, speed_ips)


def _prepare_run_folder(out: Path, config: TrainConfig, resume: bool, model: nn.Module, ema: EMA,
                        optimizer: torch.optim.Optimizer, scheduler: Any, data_gen: torch.Generator,
                        noise_gen: torch.Generator, log: LossLog) -> tuple[int, list[dict[str, Any]]]:
    """Start a fresh run in ``out`` or restore the saved one; returns (steps already done, log records kept)."""
    state, records = open_run_folder(out, config_to_dict(config), resume, log)
    if state is None:
        return 0, records
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data_gen.set_state(state["generators"]["data"])
    noise_gen.set_state(state["generators"]["noise"].to(noise_gen.get_state().device))
    return state["step"], records


def _checkpoint(out: Path, step: int, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer, scheduler: Any,
                data_gen: torch.Generator, noise_gen: torch.Generator, schedule: NoiseSchedule, prediction: str,
                image_size: int) -> None:
    save_training_state(out / STATE_NAME, {
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generators": {"data": data_gen.get_state(), "noise": noise_gen.get_state()},
    })
    if hasattr(ema.model, "save_pretrained"):
        ema.model.save_pretrained(out)
        save_schedule(out, schedule, prediction, image_size)
