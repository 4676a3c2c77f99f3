"""The pixel-space model's jobs behind the ``tinyldm`` command: train it, sample it and score its samples.

Each job is a plain function with explicit arguments (the command only parses them), so tests and notebooks can
call it too. The presets are the course's recipes: ``tiny`` for a quick look, ``small`` for the shipped 32x32
checkpoint (about 80 minutes on a 2-core CPU), ``full`` for a 64x64 model on a GPU. Every training job takes
``data=`` to train on your own pictures instead of Shapes (``tinyldm.data.training_set``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tinyldm.data.shapes import shapes_tensor
from tinyldm.data.training_set import training_set
from tinyldm.evaluation.judge import Judge
from tinyldm.evaluation.metrics import evaluate_samples
from tinyldm.jobs.common import FrameRecorder, batches, check_finite_images, pick_preset, record_run, with_overrides
from tinyldm.pretrained import config_to_dict, load_schedule, save_schedule
from tinyldm.runtime import seeded
from tinyldm.sampling import sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.training import distributed
from tinyldm.training.diffusion_loop import TrainConfig, TrainResult, train_diffusion
from tinyldm.training.run_folder import refuse_to_overwrite
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet, UNetConfig

__all__ = ["PixelPreset", "PIXEL_PRESETS", "train_pixel", "load_pixel_model", "sample_pixel", "generate",
           "evaluate_pixel"]


@dataclass
class PixelPreset:
    """A recipe for ``train_pixel``: the network, the loop's settings and the data."""

    unet: UNetConfig  # the network
    train: TrainConfig  # the loop's settings
    image_size: int  # side of the training images, in pixels
    num_images: int  # distinct training images (Shapes train split, seed 0); your own data uses all its pictures
    num_steps: int = 1000  # T of the cosine noise schedule


PIXEL_PRESETS = {
    "tiny": PixelPreset(UNetConfig.tiny(), TrainConfig(steps=1000, batch_size=32, lr=2e-3, warmup_steps=100,
                                                       checkpoint_every=250, sample_every=500), 32, 2048),
    # The shipped model. A constant learning rate with an EMA: the run can be stopped or extended
    # (--resume --steps) at any point and stays the same run.
    "small": PixelPreset(UNetConfig.small(), TrainConfig(steps=6500, batch_size=64, lr=8e-4, warmup_steps=200,
                                                         lr_decay="constant", checkpoint_every=250,
                                                         sample_every=1000), 32, 10_000),
    "full": PixelPreset(UNetConfig.full(), TrainConfig(steps=100_000, batch_size=64, lr=2e-4, warmup_steps=1000,
                                                       ema_decay=0.9999, checkpoint_every=2000,
                                                       sample_every=5000), 64, 50_000),
}


def train_pixel(preset: str, out: str | Path, device: torch.device, steps: int | None = None,
                batch_size: int | None = None, num_images: int | None = None, resume: bool = False,
                progress: bool = True, speed: SpeedConfig | None = None, data: str | Path | None = None,
                image_size: int | None = None, strict: bool = False,
                checkpoint_every: int | None = None) -> TrainResult:
    """Train an unconditional UNet on Shapes pixels, or your own pictures, with a preset, into ``out``.

    ``out`` ends up holding the EMA model as a pretrained folder (config.json, model.safetensors, schedule.json),
    the resumable ``train_state.pt``, the loss log and plot, sample grids and ``run.json`` (settings and timing).

    Args:
        preset: "tiny", "small" or "full" (see ``PIXEL_PRESETS``).
        out: the run folder.
        device: where to train.
        steps, batch_size, num_images: override the preset's values.
        resume: continue the run saved in ``out``.
        progress: show the progress bar.
        speed: GPU speed switches (``tinyldm.training.speed``); the defaults when None.
        data, strict: the training pictures (see ``tinyldm.data.training_set``); None for Shapes.
        image_size: the image side instead of the preset's.
        checkpoint_every: steps between checkpoints instead of the preset's (0: only at the end).
    """
    recipe = pick_preset(PIXEL_PRESETS, preset)
    config = with_overrides(recipe.train, steps=steps, batch_size=batch_size, checkpoint_every=checkpoint_every)
    if not resume:
        refuse_to_overwrite(out)  # before the data is read and the model built
    size = image_size or recipe.image_size
    with seeded(config.seed):
        model = UNet(recipe.unet).to(device)
    model.check_input(torch.zeros(1, recipe.unet.in_channels, size, size), torch.zeros(1, dtype=torch.long))
    images = training_set(data, size, num_images, recipe.num_images, strict, progress)
    schedule = NoiseSchedule.cosine(recipe.num_steps).to(device)

    def export(ema_model: UNet, folder: Path) -> None:
        ema_model.save_pretrained(folder)
        save_schedule(folder, schedule, "eps", size)

    started = time.time()
    result = train_diffusion(model, images.images, schedule, config, out=out, resume=resume, progress=progress,
                             speed=speed, settings={"preset": preset, "unet": config_to_dict(recipe.unet)},
                             export=export)
    if distributed.is_main_process():  # process 0 writes the run's files
        record_run(Path(out), resume, started, result, device, result.losses, preset=preset, data=images.record,
                   image_size=size, num_images=images.images.shape[0])
    return result


def load_pixel_model(directory: str | Path, device: torch.device | None = None) -> tuple[UNet, NoiseSchedule, int]:
    """Load a pixel-space diffusion model folder: returns (UNet in eval mode, its schedule, its image size)."""
    model = UNet.from_pretrained(directory)
    schedule, prediction, image_size = load_schedule(directory)
    if prediction != "eps":
        raise ValueError(f"{directory} holds a {prediction!r}-prediction model; sample it through "
                         "tinyldm.diffusion.as_eps_model")
    device = device or torch.device("cpu")
    return model.to(device), schedule.to(device), image_size or 32


def sample_pixel(model: UNet, schedule: NoiseSchedule, num_images: int, image_size: int, seed: int = 0,
                 sampler: str = "ddpm", steps: int = 100, frames: int = 40, progress: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Draw images and keep a few states of the reverse process for an animation.

    Args:
        model, schedule: from ``load_pixel_model``; sampling runs on the schedule's device.
        num_images: B.
        image_size: side of the images.
        seed: seeds x_T and every step's noise.
        sampler, steps: see ``tinyldm.sampling.sample`` ("ddpm": ancestral, "ddim": deterministic).
        frames: about how many states to keep for the animation; 0 keeps none.
    Returns:
        images (B, 3, H, W) in [-1, 1] (drawn SAMPLE_BATCH at a time), frames (K, B1, 3, H, W) of the first batch
        from x_T to x0 (None without frames), and the K step labels (-1 for x0).
    """
    generator = torch.Generator(schedule.betas.device).manual_seed(seed)
    recorder = FrameRecorder(min(steps, schedule.num_steps), frames, "x_prev") if frames else None
    model.eval()
    sizes = batches(num_images, progress=progress)
    images = torch.cat([sample(model, (n, model.config.in_channels, image_size, image_size), schedule, sampler,
                               steps, generator=generator, callback=recorder if k == 0 else None, clip_x0=True,
                               progress=progress and len(sizes) == 1).cpu()
                        for k, n in enumerate(sizes)])
    check_finite_images(images, model, f"{sampler} with {steps} steps")
    if recorder is None:
        return images.clamp(-1, 1), None, []
    return images.clamp(-1, 1), recorder.frames(), recorder.labels


@torch.no_grad()
def generate(model: UNet, schedule: NoiseSchedule, num_images: int, image_size: int, seed: int = 0,
             sampler: str = "ddpm", steps: int = 100, batch_size: int = 128, progress: bool = True) -> torch.Tensor:
    """Draw ``num_images`` images in batches from one seeded generator: (num_images, 3, H, W) in [-1, 1], CPU."""
    generator = torch.Generator(schedule.betas.device).manual_seed(seed)
    model.eval()
    parts = []
    for start in range(0, num_images, batch_size):
        shape = (min(batch_size, num_images - start), model.config.in_channels, image_size, image_size)
        images = sample(model, shape, schedule, sampler, steps, generator=generator, clip_x0=True, progress=progress)
        parts.append(images.clamp(-1, 1).cpu())
    return torch.cat(parts)


def evaluate_pixel(model: UNet, schedule: NoiseSchedule, image_size: int, judge: Judge, num_images: int = 512,
                   seed: int = 0, sampler: str = "ddpm", steps: int = 100, progress: bool = True
                   ) -> tuple[dict[str, float], torch.Tensor]:
    """Generate ``num_images`` images and score them with the judge against twice as many real test-split images.

    Returns:
        the metrics of ``tinyldm.evaluation.metrics.evaluate_samples`` (plus the settings), and the generated images.
    """
    images = generate(model, schedule, num_images, image_size, seed, sampler, steps, progress=progress)
    real = shapes_tensor(2 * max(num_images, 32), image_size, seed=seed, split="test")  # 2N: see evaluate_samples
    metrics = evaluate_samples(judge, images, real)
    settings = {"num_images": num_images, "seed": seed, "sampler": sampler,
                "sampler_steps": min(steps, schedule.num_steps)}
    return {**settings, **metrics}, images
