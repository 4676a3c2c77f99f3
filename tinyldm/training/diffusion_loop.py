"""One plain-PyTorch training loop for diffusion models, and the pieces it is made of.

The loop is Algorithm 1 of Ho et al. 2020 with the usual engineering around it: AdamW, a linear warm-up then
cosine decay of the learning rate, gradient clipping, an EMA of the weights, bf16 autocast on CUDA, a progress bar
with the running loss, sample grids every so often, a loss log in JSON lines and its plot, and checkpoints written
atomically that resume exactly. A non-finite loss stops the run with the step number.

The same loop trains the pixel model of lesson 3 and the text-to-image latent model of lessons 5 and 6, which it
trains through ``LatentDiffusion.training_loss``. The pieces (``TrainConfig``, ``lr_factor``, ``EMA`` and the run
folder, ``tinyldm.training.run_folder``) are separate so that the autoencoder's adversarial loop
(``tinyldm.training.autoencoder_loop``) shares them.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinyldm.diffusion import diffusion_loss
from tinyldm.guidance import drop_captions
from tinyldm.pretrained import config_to_dict
from tinyldm.runtime import dropout_rng
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.training import distributed
from tinyldm.training.ema import EMA
from tinyldm.training.run_folder import RunFolder, tensor_sha256
from tinyldm.training.speed import SpeedConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    files: dict[str, Path] = field(default_factory=dict)  # what the run folder holds, by name ("model": the export)


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
    import matplotlib.pyplot as plt  # here, not at import: the sampling commands never plot

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


def _sample_grid(ema_model: nn.Module, schedule: NoiseSchedule, config: TrainConfig,
                 shape: tuple[int, ...]) -> Tensor:
    """The default preview of an image model: ancestral samples (eta = 1: fresh noise at each step hides less of
    what a half-trained model can already do), x0 clipped to the image range."""
    generator = torch.Generator(schedule.betas.device).manual_seed(config.seed)
    return ddim_sample(ema_model, (config.num_samples, *shape), schedule,
                       steps=min(config.sample_steps, schedule.num_steps), eta=1.0, generator=generator,
                       progress=False)


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
    speed: SpeedConfig | None = None,
    captions: Sequence[str] | None = None,
    p_uncond: float = 0.0,
    settings: dict[str, Any] | None = None,
    export: Callable[[nn.Module, Path], None] | None = None,
    preview: Callable[[nn.Module], Tensor] | None = None,
) -> TrainResult:
    """Train a noise predictor with the simplified loss (Ho et al. 2020, Algorithm 1, Eq. 14).

    Each step draws ``batch_size`` items from ``data`` (with replacement), a step t and noise eps for each, and
    takes an AdamW step on || eps - eps_theta(x_t, t) ||^2. Everything random comes from generators seeded with
    ``config.seed`` whose states are checkpointed, so resuming repeats the uninterrupted run exactly on a CPU.

    A text-conditioned model trains through its own objective: each item has a caption, the batch's captions are
    replaced by the empty one with probability ``p_uncond`` (``tinyldm.guidance.drop_captions``, for
    classifier-free guidance), and the loss is ``model.training_loss(x0, prompts, t=t, eps=eps)``, the very
    function lessons 5 and 6 build (``LatentDiffusion.training_loss``, Rombach et al. 2022, Eq. 3).

    Started by ``torchrun`` (see ``tinyldm.training.distributed``), the processes share each global batch of
    ``batch_size`` items, their gradients are averaged in one all-reduce, and the run takes the same steps as a
    single process would, up to the order of floating-point sums; only process 0 writes to ``out``.

    Args:
        model: without ``captions``, an eps-predictor called as ``model(xt, t)``; with them, a text-conditioned
            pipeline with ``training_loss(x0, prompts, t=, eps=)`` and its noise predictor as ``model.unet``
            (a ``LatentDiffusion``). Trained in place on the device of its parameters; frozen parts stay frozen.
        data: (N, C, H, W) training images (or latents), on any device (batches move to the model's).
        schedule: the noise schedule, on the model's device.
        config: the hyperparameters.
        out: the run folder (``tinyldm.training.run_folder``): settings, loss log and plot, sample grids,
            checkpoints and what ``export`` writes; None keeps everything in memory.
        resume: continue the run saved in ``out``; without it, ``out`` must not hold a run already.
        prediction: the model's target, "eps", "x0" or "v" (see ``tinyldm.diffusion``); "eps" with captions.
        progress: show a tqdm progress bar with the running loss.
        until: stop after this step, with a checkpoint, as if the run were interrupted there (resume later);
            None runs to ``config.steps``.
        speed: the switches that make steps faster without changing what they compute (bf16 autocast, TF32,
            channels_last, fused AdamW, torch.compile, data kept on the GPU); ``SpeedConfig()`` when None.
        captions: one caption per item of ``data`` for a text-conditioned model; None for an unconditional one.
        p_uncond: the probability of training a caption as the empty one.
        settings: what the caller adds to the run's settings (a preset's name, the autoencoder's hash ...);
            resuming checks them with the loop's own.
        export: ``export(ema_model, out)`` writes the averaged model into the run folder at every checkpoint;
            None writes no model.
        preview: ``preview(ema_model)`` returns the images (B, 3, H, W) in [-1, 1] of a sample grid; None:
            ancestral samples of an image model, or no grids with ``captions``.
    Returns:
        a ``TrainResult``; ``model`` holds the last weights and ``result.ema_model`` the averaged ones.
    """
    config.validate()
    stop = config.steps if until is None else until
    if not 1 <= stop <= config.steps:
        raise ValueError(f"until must lie in [1, {config.steps}] (the run's steps), got {until}")
    if data.ndim != 4:
        raise ValueError(f"data must be a tensor of images (N, C, H, W), got shape {tuple(data.shape)}")
    if captions is not None and len(captions) != data.shape[0]:
        raise ValueError(f"got {len(captions)} captions for {data.shape[0]} items of data; pass one per item")
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must lie in [0, 1] (the chance of training a caption as the empty one), got "
                         f"{p_uncond}; Ho & Salimans 2022 use 0.1-0.2")
    if captions is not None and prediction != "eps":
        raise ValueError(f"a text-conditioned model trains through its own training_loss, an eps-prediction "
                         f"objective; got prediction={prediction!r}: leave it at 'eps'")
    distributed.check_global_batch(config.batch_size)
    speed = speed or SpeedConfig()
    device = next(model.parameters()).device
    main = distributed.is_main_process()
    run_settings = {**config_to_dict(config), "prediction": prediction, "schedule_sha256": tensor_sha256(
        schedule.betas), "data_sha256": tensor_sha256(data), "p_uncond": p_uncond, **(settings or {})}
    if captions is not None:
        run_settings["captions_sha256"] = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    folder = RunFolder(out, run_settings, resume)
    data = speed.place_data(data, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    data_gen = torch.Generator().manual_seed(config.seed)  # batch indices: always on the CPU
    noise_gen = torch.Generator(device).manual_seed(config.seed + 1)  # t, eps and dropout seeds
    caption_gen = torch.Generator().manual_seed(config.seed)  # the caption dropout's coins: on the CPU
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay,
                                  **speed.adamw_options(device))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor(k, config.warmup_steps, config.steps, config.lr_decay))
    ema = EMA(model, config.ema_decay)
    parts = {"model": model, "ema": ema, "optimizer": optimizer, "scheduler": scheduler}
    generators = {"data": data_gen, "noise": noise_gen, "captions": caption_gen}
    with folder:  # holds the folder's lock until the run ends, however it ends
        start, records = folder.start(parts, generators)
        losses = [r["loss"] for r in records]
        speed.prepare_model(model if captions is None else model.unet, device)

        model.train()
        train_seconds, pending = 0.0, []
        running = losses[-1] if losses else None
        bar = tqdm(range(start, stop), desc="training", disable=not (progress and main), initial=start,
                   total=config.steps)
        for step in bar:
            tick = time.perf_counter()
            # Every process draws the whole global batch and keeps its share (see tinyldm.training.distributed).
            index = torch.randint(0, data.shape[0], (config.batch_size,), generator=data_gen)
            x0 = speed.format_batch(distributed.shard(data[index.to(data.device)]).to(device, non_blocking=True))
            lr = optimizer.param_groups[0]["lr"]
            with speed.autocast(device), dropout_rng(noise_gen, device, distributed.rank()):
                t = distributed.shard(torch.randint(0, schedule.num_steps, (config.batch_size,), generator=noise_gen,
                                                    device=device))
                eps = distributed.shard(torch.randn((config.batch_size, *x0.shape[1:]), generator=noise_gen,
                                                    device=device, dtype=x0.dtype))
                if captions is None:
                    loss = diffusion_loss(model, x0, schedule, t=t, eps=eps, prediction=prediction)
                else:
                    prompts = drop_captions([captions[i] for i in index.tolist()], p_uncond, caption_gen)
                    loss = model.training_loss(x0, distributed.shard(prompts), t=t, eps=eps)
            value = distributed.mean_over_processes(loss.detach()).item()
            if not math.isfinite(value):
                raise NonFiniteLossError(step + 1, "loss", value, lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(trainable)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip or float("inf"))
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
            if main and config.sample_every and done % config.sample_every == 0 and (preview or captions is None):
                from tinyldm.viz.images import save_grid  # here: a run without grids needs no pictures

                images = preview(ema.model) if preview else _sample_grid(ema.model, schedule, config,
                                                                         data.shape[1:])
                save_grid(images.clamp(-1, 1), Path(out) / "samples" / f"step_{done:06d}.png",
                          nrow=math.ceil(math.sqrt(len(images))), scale=2)
            if done == stop or (config.checkpoint_every and done % config.checkpoint_every == 0):
                folder.checkpoint(done, parts, generators, pending,
                                  None if export is None else lambda path: export(ema.model, path))
                pending = []
        bar.close()
    model.eval()
    if out is not None and main:
        folder.save_figure(plot_losses(losses))
    steps_run = max(0, stop - start)
    speed_ips = steps_run * config.batch_size / train_seconds if train_seconds else 0.0
    files = {**({"model": Path(out)} if out is not None and export is not None else {}), **folder.files()}
    return TrainResult(losses, ema.model, steps_run, train_seconds, speed_ips, files)
