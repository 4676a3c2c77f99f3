"""The jobs behind the ``tinyldm`` command: train the pixel-space model, and sample from a trained one.

Each job is a plain function with explicit arguments (the command only parses them), so tests and notebooks can
call it too. The presets are the course's recipes: ``tiny`` for a quick look, ``small`` for the shipped 32x32
checkpoint (about 80 minutes on a 2-core CPU), ``full`` for a 64x64 model on a GPU. Every training job takes
``data=`` to train on your own pictures instead of Shapes (``training_images``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tinyldm.data.folder import image_text_pairs
from tinyldm.data.shapes import Shapes, shapes_tensor
from tinyldm.evaluation.judge import Judge, train_judge
from tinyldm.evaluation.metrics import evaluate_samples, judge_accuracy
from tinyldm.pretrained import load_schedule, save_schedule
from tinyldm.runtime import seeded
from tinyldm.sampling import ddim_sample, ddpm_sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.training import distributed
from tinyldm.training.diffusion_loop import TrainConfig, TrainResult, train_diffusion
from tinyldm.training.run_folder import append_run_record
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet, UNetConfig

__all__ = ["PixelPreset", "PIXEL_PRESETS", "training_images", "check_resumed_data", "train_pixel",
           "load_pixel_model", "run_sampler", "sample_pixel", "generate", "evaluate_pixel", "train_and_score_judge"]


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


def training_images(data: str | Path | None, size: int, num_images: int | None, default_num: int,
                    strict: bool = False, progress: bool = True) -> tuple[torch.Tensor, dict]:
    """The images of an unconditional training job and a record of where they came from, for ``run.json``.

    Args:
        data: None for the Shapes train split (seed 0); else a folder of captioned pictures, "mnist" or
            "fashion-mnist" (``tinyldm.data.folder.image_text_pairs``; the captions go unused).
        size: S, the image side.
        num_images: how many (the first ones); None: ``default_num`` Shapes, or every picture of ``data``.
        strict, progress: see ``tinyldm.data.folder.read_image_folder``.
    Returns:
        images (n, 3, S, S) in [-1, 1] on the CPU, and the record ({"source": "shapes"} or the pairs' record).
    """
    if data is None:
        n = num_images or default_num
        return shapes_tensor(n, size), {"source": "shapes"}
    pairs = image_text_pairs(data, size, num_images, strict, None if progress else False)
    return pairs.images, pairs.record()


def check_resumed_data(out: str | Path, record: dict, resume: bool) -> None:
    """Refuse to resume a run on other images than it trained on (``run.json`` records them; a record without
    a data entry is a Shapes run)."""
    path = Path(out) / "run.json"
    if not resume or not path.is_file():
        return
    before = json.loads(path.read_text())["runs"][-1].get("data", {"source": "shapes"})
    if before.get("images_sha256") != record.get("images_sha256"):
        raise ValueError(f"cannot resume {out} on other images: it trained on {before['source']} "
                         f"({before.get('pairs', 'generated')} images), now {record['source']}; resume with the "
                         "run's data (unchanged) or choose another output folder")


def train_pixel(preset: str, out: str | Path, device: torch.device, steps: int | None = None,
                batch_size: int | None = None, num_images: int | None = None, resume: bool = False,
                progress: bool = True, speed: SpeedConfig | None = None, data: str | Path | None = None,
                image_size: int | None = None, strict: bool = False) -> TrainResult:
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
        data, strict: the training pictures (see ``training_images``); None for Shapes.
        image_size: the image side instead of the preset's.
    """
    if preset not in PIXEL_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PIXEL_PRESETS)}")
    recipe = PIXEL_PRESETS[preset]
    config = replace(recipe.train, **{k: v for k, v in (("steps", steps), ("batch_size", batch_size))
                                      if v is not None})
    size = image_size or recipe.image_size
    with seeded(config.seed):
        model = UNet(recipe.unet).to(device)
    model.check_input(torch.zeros(1, recipe.unet.in_channels, size, size), torch.zeros(1, dtype=torch.long))
    images, data_record = training_images(data, size, num_images, recipe.num_images, strict, progress)
    n = images.shape[0]  # (n, 3, size, size) kept on the CPU; batches move
    check_resumed_data(out, data_record, resume)
    schedule = NoiseSchedule.cosine(recipe.num_steps).to(device)
    out = Path(out)
    start = time.time()
    result = train_diffusion(model, images, schedule, config, out=out, resume=resume, progress=progress,
                             speed=speed)
    if not distributed.is_main_process():  # process 0 writes the run's files
        return result
    save_schedule(out, schedule, "eps", size)
    record = {"preset": preset, "device": str(device), "threads": torch.get_num_threads(),
              "data": data_record, "image_size": size, "num_images": n, "steps_run": result.steps_run,
              "until_step": config.steps,
              "wall_seconds": round(time.time() - start, 1), "train_seconds": round(result.train_seconds, 1),
              "images_per_second": round(result.images_per_second, 1),
              "final_loss_mean_100": sum(result.losses[-100:]) / len(result.losses[-100:])}
    append_run_record(out, record, resume)
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


def run_sampler(model: UNet, shape: tuple[int, ...], schedule: NoiseSchedule, sampler: str = "ddpm",
                steps: int = 100, generator: torch.Generator | None = None, callback=None,
                progress: bool = True) -> torch.Tensor:
    """Draw a batch with one of the two samplers of lesson 2, x0 predictions clipped to the image range.

    "ddim" is deterministic DDIM (eta = 0) on ``steps`` evenly spaced steps (Song et al. 2021). "ddpm" is ancestral
    sampling: all T steps of Ho et al. 2020, Algorithm 2 when ``steps >= T``, otherwise the same on ``steps``
    evenly spaced steps, which is DDIM with eta = 1 (Song et al. 2021, Eq. 16). The fresh noise of every ancestral
    step corrects some of the errors an imperfect model makes on the way, so for an undertrained model "ddpm"
    gives cleaner images than "ddim" at the same number of steps.

    Returns:
        (B, C, H, W) samples, on the schedule's device.
    """
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
    if sampler == "ddpm" and steps >= schedule.num_steps:
        return ddpm_sample(model, shape, schedule, generator=generator, callback=callback, clip_x0=True,
                           progress=progress)
    return ddim_sample(model, shape, schedule, steps=steps, eta=1.0 if sampler == "ddpm" else 0.0,
                       generator=generator, callback=callback, clip_x0=True, progress=progress)


def sample_pixel(model: UNet, schedule: NoiseSchedule, num_images: int, image_size: int, seed: int = 0,
                 sampler: str = "ddpm", steps: int = 100, frames: int = 40, progress: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Draw images and keep a few states of the reverse process for an animation.

    Args:
        model, schedule: from ``load_pixel_model``; sampling runs on the schedule's device.
        num_images: B.
        image_size: side of the images.
        seed: seeds x_T and every step's noise.
        sampler, steps: see ``run_sampler``.
        frames: about how many states to keep for the animation.
    Returns:
        images (B, 3, H, W) in [-1, 1], frames (K, B, 3, H, W) from x_T to x0, and the K step labels (-1 for x0).
    """
    generator = torch.Generator(schedule.betas.device).manual_seed(seed)
    every = max(1, math.ceil(min(steps, schedule.num_steps) / frames))
    kept, labels = [], []

    def record(info: dict) -> None:
        if info["i"] == 0:
            kept.append(info["xt"].cpu())
            labels.append(info["t"])
        if (info["i"] + 1) % every == 0 or info["t_prev"] == -1:
            kept.append(info["x_prev"].cpu())
            labels.append(info["t_prev"])

    model.eval()
    shape = (num_images, model.config.in_channels, image_size, image_size)
    images = run_sampler(model, shape, schedule, sampler, steps, generator, record, progress)
    return images.clamp(-1, 1).cpu(), torch.stack(kept), labels


@torch.no_grad()
def generate(model: UNet, schedule: NoiseSchedule, num_images: int, image_size: int, seed: int = 0,
             sampler: str = "ddpm", steps: int = 100, batch_size: int = 128, progress: bool = True) -> torch.Tensor:
    """Draw ``num_images`` images in batches from one seeded generator: (num_images, 3, H, W) in [-1, 1], CPU."""
    generator = torch.Generator(schedule.betas.device).manual_seed(seed)
    model.eval()
    parts = []
    for start in range(0, num_images, batch_size):
        shape = (min(batch_size, num_images - start), model.config.in_channels, image_size, image_size)
        images = run_sampler(model, shape, schedule, sampler, steps, generator, progress=progress)
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


def train_and_score_judge(out: str | Path, steps: int = 1000, num_images: int = 8192, seed: int = 0,
                          device: torch.device | None = None, progress: bool = True) -> dict[str, float]:
    """Train the judge, save it to ``out`` and measure it on fresh images (test split and held-out pairs,
    another seed). Writes ``accuracy.json`` next to the weights and returns it."""
    start = time.time()
    judge, losses = train_judge(num_images, steps, seed=seed, device=device, progress=progress)
    judge = judge.cpu()
    judge.save_pretrained(out)
    fresh = [Shapes(2000, seed=seed + 7, split="test"), Shapes(400, seed=seed + 7, split="heldout")]
    items = [d[i] for d in fresh for i in range(len(d))]
    accuracy = judge_accuracy(judge, torch.stack([it["image"] for it in items]), [it["attributes"] for it in items])
    report = {"accuracy_on_fresh_images": accuracy, "fresh_images": len(items), "steps": steps,
              "num_images": num_images, "seed": seed, "wall_seconds": round(time.time() - start, 1),
              "final_loss_mean_50": sum(losses[-50:]) / len(losses[-50:])}
    (Path(out) / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
