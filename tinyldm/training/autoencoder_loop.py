"""The autoencoder's training loop: two optimisers, one for the autoencoder and one for the PatchGAN critic.

Each step is the recipe of Esser et al. 2021 (taming transformers) as latent diffusion used it (Rombach et al.
2022, App. G): encode a batch, draw z from the posterior, decode, and take an Adam step on the autoencoder with
L1 + LPIPS + a tiny KL + (after ``disc_start``) the adaptive-weighted GAN term; then take an Adam step on the
discriminator with the hinge loss on real images and the (detached) reconstructions. The engineering is the
diffusion loop's (``tinyldm.training.diffusion_loop``): warm-up and cosine decay, gradient clipping, an optional
EMA, the speed switches (``tinyldm.training.speed``), reconstruction grids, and the same run folder
(``tinyldm.training.run_folder``: settings, loss log, atomic checkpoints of both optimisers, the discriminator, the
EMA and the random generators) that resumes exactly. The exported model carries its latent scale factor
(Sec. 4.3.2).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinyldm.autoencoder import AutoencoderKL, estimate_scale_factor
from tinyldm.autoencoder_loss import AutoencoderLoss
from tinyldm.pretrained import config_to_dict
from tinyldm.runtime import dropout_rng
from tinyldm.training import distributed
from tinyldm.training.diffusion_loop import NonFiniteLossError, lr_factor
from tinyldm.training.ema import EMA
from tinyldm.training.run_folder import RunFolder, tensor_sha256
from tinyldm.training.speed import SpeedConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["AutoencoderTrainConfig", "AutoencoderTrainResult", "train_autoencoder", "plot_autoencoder_losses",
           "DISCRIMINATOR_FOLDER", "SCALE_IMAGES"]

DISCRIMINATOR_FOLDER = "discriminator"  # where a GAN run saves its discriminator, inside the model's folder
SCALE_IMAGES = 2048  # training images the exported scale factor is estimated on (std of 65k+ latent numbers)
_SAME_AS_LOSS = ("total",)  # the loss's own name for the total, logged as "loss"
_NOT_PLOTTED = ("step", "lr", "disc_lr", "nll")  # a setting, a counter, and the sum of two plotted terms
_SHARED_PANELS = {"disc_grad_norm": "grad_norm", "d_loss": "g_loss", "logits_fake": "logits_real"}  # term -> panel
_PANEL_TITLES = {"loss": "autoencoder loss", "grad_norm": "gradient norms", "g_loss": "GAN losses",
                 "logits_real": "discriminator logits"}


@dataclass
class AutoencoderTrainConfig:
    """Hyperparameters of ``train_autoencoder``."""

    steps: int = 20_000  # autoencoder optimiser steps in the whole run
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # peak learning rate of the autoencoder's Adam
    disc_lr: float = 2e-4  # peak learning rate of the discriminator's Adam (higher rates made it collapse)
    betas: tuple[float, float] = (0.5, 0.9)  # Adam's (beta1, beta2) for both, as in taming: a GAN's target moves
    weight_decay: float = 0.0  # AdamW's decoupled weight decay, both optimisers
    warmup_steps: int = 100  # steps of linear warm-up from 0 to the peak learning rates
    lr_decay: str = "cosine"  # "cosine" (down to 0 at the last step) or "constant" after the warm-up
    grad_clip: float = 1.0  # clip each network's gradient norm to this; 0 disables
    ema_decay: float = 0.0  # decay of an EMA of the autoencoder's weights, exported instead of them; 0: no EMA
    seed: int = 0  # seeds the generators of batches and posterior samples
    checkpoint_every: int = 500  # steps between checkpoints (and the last step); 0: only the last
    sample_every: int = 1000  # steps between reconstruction grids; 0 disables them
    num_samples: int = 8  # training images shown (originals over reconstructions) in each grid

    @classmethod
    def tiny(cls) -> AutoencoderTrainConfig:
        """A few hundred steps: the lesson's quick run and the tests."""
        return cls(steps=300, batch_size=16, warmup_steps=20, checkpoint_every=100, sample_every=100)

    def validate(self) -> None:
        """Raise ValueError naming a field that cannot work."""
        for name in ("steps", "batch_size", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"AutoencoderTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "sample_every", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"AutoencoderTrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "disc_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AutoencoderTrainConfig.{name} must be positive, got {getattr(self, name)}; "
                                 "1e-4 to 1e-3 suits these small networks")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"AutoencoderTrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"AutoencoderTrainConfig.ema_decay must lie in [0, 1) (0: no EMA), got {self.ema_decay}")
        if self.lr_decay not in ("cosine", "constant"):
            raise ValueError(f"AutoencoderTrainConfig.lr_decay must be 'cosine' or 'constant', got {self.lr_decay!r}")


@dataclass
class AutoencoderTrainResult:
    """What ``train_autoencoder`` returns."""

    records: list[dict[str, Any]]  # one log record per step since the start of the run: every loss term
    model: AutoencoderKL  # the exported model (the EMA one if ema_decay > 0), its scale_factor set
    steps_run: int  # steps taken by this call (fewer than records after a resume)
    train_seconds: float  # time spent in training steps by this call (no grids, no checkpoints)
    images_per_second: float = field(default=0.0)  # steps_run * batch_size / train_seconds
    scale_factor: float = field(default=1.0)  # 1 / std of the latents on the training images
    files: dict[str, Path] = field(default_factory=dict)  # what the run folder holds, by name ("model": the export)

    @property
    def losses(self) -> list[float]:
        """The autoencoder's total loss at every step."""
        return [r["loss"] for r in self.records]


def train_autoencoder(
    model: AutoencoderKL,
    loss: AutoencoderLoss,
    data: Tensor,
    config: AutoencoderTrainConfig,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    until: int | None = None,
    settings: dict[str, Any] | None = None,
    speed: SpeedConfig | None = None,
) -> AutoencoderTrainResult:
    """Train a KL autoencoder with reconstruction, perceptual, KL and adversarial losses (Esser et al. 2021, Eq. 6
    and 7; Rombach et al. 2022, Sec. 3.1).

    Every random draw (batches, posterior samples) comes from generators seeded with ``config.seed`` whose states
    are checkpointed, so a resumed run repeats the uninterrupted one exactly on a CPU.

    Args:
        model: the autoencoder, trained in place on the device of its parameters.
        loss: the loss; its discriminator (if the GAN term is on) is trained too. On the model's device.
        data: (N, C, H, W) training images in [-1, 1], on any device (batches move to the model's).
        config: the hyperparameters.
        out: run folder for the loss log and plot, reconstruction grids, checkpoints and the exported model
            (config.json, model.safetensors with the scale factor); None keeps everything in memory.
        resume: continue the run saved in ``out``; without it, ``out`` must not hold a run already.
        progress: show a tqdm progress bar with running losses.
        until: stop after this step, with a checkpoint, as if the run were interrupted there; None runs to
            ``config.steps``.
        settings: what the caller adds to the run's settings; resuming checks them with the loop's own.
        speed: the switches that make steps faster without changing what they compute (bf16 autocast, TF32,
            channels_last, fused AdamW, torch.compile, data kept on the GPU); ``SpeedConfig()`` when None.
    Returns:
        an ``AutoencoderTrainResult``; ``model`` holds the last weights.
    """
    config.validate()
    stop = config.steps if until is None else until
    if not 1 <= stop <= config.steps:
        raise ValueError(f"until must lie in [1, {config.steps}] (the run's steps), got {until}")
    if data.ndim != 4 or data.shape[1] != model.config.in_channels:
        raise ValueError(f"data must be images (N, {model.config.in_channels}, H, W), got shape {tuple(data.shape)}")
    distributed.check_global_batch(config.batch_size)
    speed = speed or SpeedConfig()
    device = next(model.parameters()).device
    out = Path(out) if out is not None else None
    folder = RunFolder(out, {**config_to_dict(config), "autoencoder": config_to_dict(model.config),
                             "loss": config_to_dict(loss.config), "data_sha256": tensor_sha256(data),
                             **(settings or {})}, resume)
    data = speed.place_data(data, device)
    disc = loss.discriminator
    data_gen = torch.Generator().manual_seed(config.seed)  # batch indices: always on the CPU
    noise_gen = torch.Generator(device).manual_seed(config.seed + 1)  # posterior samples (and dropout seeds)

    def optimiser(params, lr):
        return torch.optim.AdamW(params, lr=lr, betas=config.betas, weight_decay=config.weight_decay,
                                 **speed.adamw_options(device))

    opt_g = optimiser(model.parameters(), config.lr)
    sched_g = torch.optim.lr_scheduler.LambdaLR(
        opt_g, lambda k: lr_factor(k, config.warmup_steps, config.steps, config.lr_decay))
    opt_d = optimiser(disc.parameters(), config.disc_lr) if disc is not None else None
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    parts = {"model": model, "ema": ema, "discriminator": disc, "optimizer": opt_g, "scheduler": sched_g,
             "disc_optimizer": opt_d}
    generators = {"data": data_gen, "noise": noise_gen}
    with folder:  # holds the folder's lock until the run ends, however it ends
        start, records = folder.start(parts, generators)
        speed.prepare_model(model, device)
        if disc is not None:
            speed.prepare_model(disc, device)

        clip = config.grad_clip or float("inf")
        model.train()
        train_seconds, pending = 0.0, []
        running: dict[str, float] = {}
        main = distributed.is_main_process()
        latent_shape = (model.config.latent_channels, data.shape[-2] // model.downsampling_factor,
                        data.shape[-1] // model.downsampling_factor)
        bar = tqdm(range(start, stop), desc="training", disable=not (progress and main), initial=start,
                   total=config.steps)
        for step in bar:
            tick = time.perf_counter()
            # Every process draws the whole global batch and keeps its share (see tinyldm.training.distributed).
            index = torch.randint(0, data.shape[0], (config.batch_size,), generator=data_gen)
            x = speed.format_batch(distributed.shard(data[index.to(data.device)]).to(device, non_blocking=True))
            lr = opt_g.param_groups[0]["lr"]
            record: dict[str, Any] = {"step": step + 1, "lr": lr}
            # The autoencoder's step (the loss keeps the discriminator's weights out of this graph).
            with speed.autocast(device), dropout_rng(noise_gen, device, distributed.rank()):
                latent_eps = torch.randn((config.batch_size, *latent_shape), generator=noise_gen, device=device)
                reconstruction, posterior = model(x, sample_posterior=True, eps=distributed.shard(latent_eps))
                g_total, g_logs = loss.generator_loss(x, reconstruction, posterior, step, model.last_layer,
                                                          average=distributed.mean_over_processes)
            record["loss"] = _finite(distributed.mean_over_processes(g_total.detach()), step, "loss", lr)
            opt_g.zero_grad(set_to_none=True)
            g_total.backward()
            distributed.average_gradients(model.parameters())
            record["grad_norm"] = _finite(nn.utils.clip_grad_norm_(model.parameters(), clip), step, "gradient norm", lr)
            opt_g.step()
            sched_g.step()
            record.update((k, v) for k, v in g_logs.items() if k not in _SAME_AS_LOSS)
            # The discriminator's step on the same batch, from the delayed start on.
            if loss.discriminator_active(step):
                with speed.autocast(device):
                    d_total, d_logs = loss.discriminator_loss(x, reconstruction.detach(), step)
                _finite(distributed.mean_over_processes(d_total.detach()), step, "discriminator loss", lr)
                opt_d.zero_grad(set_to_none=True)
                d_total.backward()
                distributed.average_gradients(disc.parameters())
                record["disc_grad_norm"] = _finite(nn.utils.clip_grad_norm_(disc.parameters(), clip), step,
                                                   "discriminator gradient norm", lr)
                # The discriminator warms up from its own start and decays to the run's end with the autoencoder.
                start_d = loss.config.disc_start
                record["disc_lr"] = config.disc_lr * lr_factor(step - start_d, config.warmup_steps,
                                                               config.steps - start_d, config.lr_decay)
                for group in opt_d.param_groups:
                    group["lr"] = record["disc_lr"]
                opt_d.step()
                record.update(d_logs)
            if ema is not None:
                ema.update(model)
            train_seconds += time.perf_counter() - tick

            record = _mean_record(record)
            records.append(record)
            pending.append(record)
            for key in ("loss", "d_loss"):
                if key in record:
                    running[key] = record[key] if key not in running else 0.98 * running[key] + 0.02 * record[key]
            bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, refresh=False)
            done = step + 1
            if out is None:
                continue
            if main and config.sample_every and done % config.sample_every == 0:
                _save_reconstructions(ema.model if ema else model, data[:config.num_samples],
                                      out / "reconstructions" / f"step_{done:06d}.png")
            if done == stop or (config.checkpoint_every and done % config.checkpoint_every == 0):
                folder.checkpoint(done, parts, generators, pending,
                                  lambda path: _save(_export(ema.model if ema else model, data, config.seed), disc,
                                                     path))
                pending = []
        bar.close()
    model.eval()
    exported = _export(ema.model if ema else model, data, config.seed)
    if out is not None and main:
        folder.save_figure(plot_autoencoder_losses(records))
    steps_run = max(0, stop - start)
    images_per_second = steps_run * config.batch_size / train_seconds if train_seconds else 0.0
    files = {**({"model": out} if out is not None else {}), **folder.files()}
    if out is not None and (out / DISCRIMINATOR_FOLDER).is_dir():
        files["discriminator"] = out / DISCRIMINATOR_FOLDER
    return AutoencoderTrainResult(records, exported, steps_run, train_seconds, images_per_second,
                                  exported.scale_factor.item(), files)


def _mean_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record's numbers averaged over the processes (each measured them on its share of the batch)."""
    if not distributed.is_distributed():
        return record
    keys = [k for k, v in record.items() if isinstance(v, float) and k not in ("lr", "disc_lr")]
    means = distributed.mean_over_processes(torch.tensor([record[k] for k in keys], dtype=torch.float64))
    return {**record, **dict(zip(keys, means.tolist()))}


def _finite(value: Tensor, step: int, what: str, lr: float) -> float:
    """``value`` as a float, or NonFiniteLossError naming the 1-based step."""
    number = value.item()
    if not math.isfinite(number):
        raise NonFiniteLossError(step + 1, what, number, lr)
    return number


def _export(model: AutoencoderKL, data: Tensor, seed: int) -> AutoencoderKL:
    """A copy of ``model`` in eval mode with its scale factor estimated on the first SCALE_IMAGES training images.

    A copy, so that the scale (a buffer) never leaks into the EMA or the training state: resuming stays exact.
    """
    exported = copy.deepcopy(model).eval()
    device = next(exported.parameters()).device
    generator = torch.Generator(device).manual_seed(seed + 2)
    exported.set_scale_factor(estimate_scale_factor(exported, data[:SCALE_IMAGES], generator=generator))
    return exported


def _save(model: AutoencoderKL, discriminator: nn.Module | None, folder: Path) -> None:
    """The exported autoencoder into ``folder``, and the discriminator, if the run has one, into its
    ``DISCRIMINATOR_FOLDER``, where ``PatchDiscriminator.from_pretrained`` reads it."""
    model.save_pretrained(folder)
    if discriminator is not None:
        discriminator.save_pretrained(folder / DISCRIMINATOR_FOLDER)


@torch.no_grad()
def _save_reconstructions(model: AutoencoderKL, x: Tensor, path: Path) -> None:
    """Originals (top row) over their reconstructions from the posterior mean (bottom row)."""
    from tinyldm.viz.images import save_grid

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    reconstruction = model(x.to(device), sample_posterior=False)[0]
    save_grid(torch.cat([x.cpu(), reconstruction.float().cpu()]), path, nrow=len(x), scale=2)
    model.train(was_training)


def plot_autoencoder_losses(records: list[dict[str, Any]], window: int = 100) -> Figure:
    """One panel per logged term (total, pixel, perceptual, KL, adaptive weight ...), per step (faint) and its
    moving average over ``window`` steps; the two gradient norms, the two GAN losses and the discriminator's
    logits on real and fake images each share a panel.

    Args:
        records: the log records of ``train_autoencoder`` (or the lines of its ``loss.jsonl``).
    """
    import matplotlib.pyplot as plt  # here, not at import: loading a model never plots

    names = [k for k in dict.fromkeys(k for r in records for k in r) if k not in _NOT_PLOTTED]
    panels: dict[str, list[str]] = {}
    for name in names:
        panels.setdefault(_SHARED_PANELS.get(name, name), []).append(name)
    cols = min(4, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (panel, keys) in zip(axes.flat, panels.items()):
        positive = True
        for key in keys:
            steps = torch.tensor([r["step"] for r in records if key in r], dtype=torch.float64)
            values = torch.tensor([float(r[key]) for r in records if key in r], dtype=torch.float64)
            line = ax.plot(steps, values, alpha=0.3, linewidth=0.8, label=key)[0]
            if len(values) >= window:
                smooth = values.unfold(0, window, 1).mean(1)  # (len - window + 1,)
                ax.plot(steps[window - 1:], smooth, color=line.get_color())
            positive = positive and len(values) > 0 and bool((values > 0).all())
        ax.set_title(_PANEL_TITLES.get(panel, panel), fontsize=9)
        ax.set_yscale("log" if positive else "linear")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    # Constrained layout costs seconds with a dozen panels; fixed margins do.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.93, wspace=0.3, hspace=0.45)
    return fig
