"""The ``tinyldm`` command's arguments: every subcommand, its options, their defaults and their help."""

from __future__ import annotations

import argparse
import importlib
import math
from pathlib import Path
from typing import Callable

import torch

from tinyldm.sampling import SAMPLERS
from tinyldm.schedule import NoiseSchedule

__all__ = ["SCHEDULES", "MAX_FORWARD_SIZE", "GENERATE_SAMPLER", "GENERATE_STEPS", "EDIT_SAMPLER", "EDIT_STEPS",
           "INPAINT_METHODS", "MAX_ANIMATED_IMAGES",
           "build_parser", "parse_device"]

MAX_FORWARD_SIZE = 1024  # the forward command's largest image side: a strip of 4 such images is already 100 MB
_MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds
# generate's sampler: the fewest network calls that keep the shipped model's card accuracy, read off the sampler
# sweep in data/checkpoints/ldm-shapes/README.md (python benchmarks/caption_accuracy.py --sweep)
GENERATE_SAMPLER = "dpm++"
GENERATE_STEPS = 6
# the editing commands' sampler: ancestral steps let an edit settle into what is kept (img2img runs a share of them)
EDIT_SAMPLER = "ddpm"
EDIT_STEPS = 50
INPAINT_METHODS = ("blend", "trained")  # blended latent diffusion (tinyldm.inpainting); a model trained with masks
MAX_ANIMATED_IMAGES = 16  # a GIF shows every image in every frame: more than 4 x 4 are too small to follow

SCHEDULES = {
    "linear": NoiseSchedule.linear,
    "cosine": NoiseSchedule.cosine,
    "scaled_linear": NoiseSchedule.scaled_linear,
}


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number in [low, high] (no upper bound when high is None)."""

    if high is not None:
        wanted = f"a whole number from {low} to {high}"
    else:
        wanted = "a positive whole number" if low == 1 else f"a whole number at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse


_positive_int = _int_in(1)
_seed = _int_in(0, _MAX_SEED)


def parse_device(text: str) -> torch.device:
    """The device named on the command line, checked against this machine: cpu, cuda, cuda:N or mps.

    Raises argparse.ArgumentTypeError naming the device and what this machine has instead.
    """
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: PyTorch finds no CUDA GPU on this machine; use --device cpu, "
                                             "or leave --device out to use the fastest device there is")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"there is no {text}: this machine has {count} CUDA device(s), "
                                             f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text}: Apple's MPS is not available on this machine; use --device "
                                             "cpu, or leave --device out")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"device {text!r} is not one tinyldm runs on; use cpu, cuda, cuda:N or mps")
    return device


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _preset_of(module: str, table: str) -> Callable[[str], str]:
    """An argparse type that accepts the names of a job's presets (``module.table``), read when the command runs,
    so that ``--help`` does not import the jobs and the presets are named in one place only."""

    def preset(text: str) -> str:
        presets = getattr(importlib.import_module(module), table)
        if text not in presets:
            raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose from {', '.join(sorted(presets))}")
        return text

    return preset


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a strength in (0, 1] (0.3 keeps the picture, 1 forgets it), "
                                         f"got {text}")
    return value


def _box(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected four whole numbers X0,Y0,X1,Y1 (pixels, end-exclusive), got "
                                         f"{text!r}")
    return box  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyldm", description="tinyldm: the jobs of the latent diffusion course, from a terminal."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def forward_options(sub: argparse.ArgumentParser, out_default: str | None) -> None:
        sub.add_argument("--out", type=Path, default=out_default, required=out_default is None,
                         help="folder for the pictures" + (f" (default {out_default})" if out_default else ""))
        sub.add_argument("--num-images", type=_positive_int, default=4, help="Shapes images to noise (default 4)")
        sub.add_argument("--size", type=_int_in(1, MAX_FORWARD_SIZE), default=32,
                         help=f"image side in pixels, at most {MAX_FORWARD_SIZE} (default 32)")
        sub.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear", help="beta schedule")
        sub.add_argument("--num-steps", type=_positive_int, default=1000, help="T, the chain's length")
        sub.add_argument("--seed", type=_seed, default=0, help="seed for the images and the noise (default 0)")
        sub.add_argument("--frames", type=_positive_int, default=40, help="frames in the GIF (default 40)")

    forward_options(commands.add_parser(
        "forward", help="render the forward noising chain of a few Shapes images (strip, GIF, schedules)"), None)

    def device_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", type=parse_device, default=None,
                         help="cpu, cuda, cuda:N or mps (default: cuda > mps > cpu)")
        sub.add_argument("--threads", type=_positive_int, default=None,
                         help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")

    train = commands.add_parser("train", help="train a model (see tinyldm train pixel --help)")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")

    def run_options(sub: argparse.ArgumentParser, job: str, table: str, holds: str, batch: str = "images") -> None:
        """The options every preset-based training command shares."""
        sub.add_argument("--config", type=_preset_of(f"tinyldm.jobs.{job}", table), default="small",
                         help=f"a preset of tinyldm.jobs.{job}.{table} (default small, the shipped 32x32 model; "
                              "tiny trains in minutes, full is 64x64 for a GPU)")
        sub.add_argument("--out", type=Path, required=True, help=f"run folder: {holds}")
        sub.add_argument("--steps", type=_positive_int, default=None, help="optimiser steps (default: the preset's)")
        sub.add_argument("--batch-size", type=_positive_int, default=None, help=f"{batch} per step")
        sub.add_argument("--num-images", type=_positive_int, default=None,
                         help="distinct training images (default: the preset's Shapes, or every picture of --data)")
        sub.add_argument("--data", default=None, metavar="DIR|photos|mnist|fashion-mnist",
                         help="train on other pictures: a folder with captions.jsonl (or captions.csv) naming each "
                              "one, photos (crops of the train photographs that ship with scikit-image), or mnist / "
                              "fashion-mnist (default: Shapes; see data/README.md)")
        sub.add_argument("--image-size", type=_positive_int, default=None,
                         help="image side in pixels: pictures are resized and centre-cropped to it (default: the "
                              "preset's, 32 or 64)")
        sub.add_argument("--strict", action="store_true",
                         help="stop at the first unreadable or uncaptioned picture of --data instead of skipping it")
        sub.add_argument("--resume", action="store_true", help="continue the run saved in --out")
        sub.add_argument("--checkpoint-every", type=_int_in(0), default=None, metavar="N",
                         help="write a checkpoint (and the model) every N steps, so that a run can be stopped and "
                              "resumed; 0: only at the end (default: the preset's)")
        device_options(sub)

    def speed_options(sub: argparse.ArgumentParser) -> None:
        """GPU speed switches of the training loops (tinyldm.training.speed); the CPU ignores all but --compile."""
        group = sub.add_argument_group("speed on a GPU (see tinyldm.training.speed)")
        group.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32 on CUDA")
        group.add_argument("--tf32", action="store_true", help="TF32 tensor cores for float32 matmuls on CUDA")
        group.add_argument("--channels-last", action="store_true", help="NHWC memory layout on CUDA")
        group.add_argument("--fused-adamw", action="store_true", help="AdamW's fused CUDA kernel")
        group.add_argument("--compile", action="store_true", help="torch.compile the network (compiles first)")

    pixel = models.add_parser("pixel", help="a pixel-space diffusion UNet on Shapes (lesson 3)")
    run_options(pixel, "pixel", "PIXEL_PRESETS", "model, checkpoints, loss log, samples")
    speed_options(pixel)
    autoencoder = models.add_parser("autoencoder", help="a KL autoencoder for latent diffusion (lesson 4)")
    run_options(autoencoder, "autoencoder", "AUTOENCODER_PRESETS", "model, checkpoints, loss log, reconstructions")
    speed_options(autoencoder)
    autoencoder.add_argument("--factor", type=int, choices=(2, 4, 8), default=None,
                             help="down-sampling factor f: latents are (H/f, W/f) (default: the preset's, 4 or 8)")
    autoencoder.add_argument("--loss", choices=("mse", "lpips", "gan"), default=None,
                             help="the loss recipe: mse (pixels only), lpips (L1 + LPIPS) or gan (L1 + LPIPS + "
                                  "PatchGAN with the adaptive weight, at the GAN weight 0.1 and a discriminator as "
                                  "fast as the autoencoder: the one that learns on photos) (default: the preset's, "
                                  "L1 + LPIPS + PatchGAN as the shipped Shapes autoencoder was trained)")
    ldm = models.add_parser("ldm", help="a text-to-image latent diffusion model on Shapes (lessons 5-6)")
    run_options(ldm, "ldm", "LDM_PRESETS", "the pipeline (autoencoder/, unet/, text_encoder/), checkpoints, loss log",
                batch="latents")
    speed_options(ldm)
    ldm.add_argument("--autoencoder", type=Path, default=None,
                     help="folder of the frozen autoencoder (default: the preset's, data/checkpoints/"
                          "autoencoder-shapes for tiny and small)")
    ldm.add_argument("--unconditional", action="store_true",
                     help="no text encoder and no cross-attention: unconditional latent diffusion (lesson 5)")
    for name, table, what in (("inpaint", "INPAINT_PRESETS", "an inpainting model (lesson 8)"),
                              ("sr", "SR_PRESETS", "a 4x super-resolution model, 8x8 -> 32x32 (lesson 8)")):
        application = models.add_parser(name, help=f"{what}, fine-tuned from the text-to-image model by concat "
                                                    "conditioning")
        application.add_argument("--config", type=_preset_of("tinyldm.jobs.applications", table), default="small",
                                 help=f"a preset of tinyldm.jobs.applications.{table} (default small, the shipped "
                                      "model; tiny trains in seconds)")
        application.add_argument("--out", type=Path, required=True, help="run folder: the model, checkpoints, loss log")
        application.add_argument("--base", type=Path, default=None,
                                 help="the text-to-image pipeline to fine-tune (default data/checkpoints/ldm-shapes)")
        application.add_argument("--steps", type=_positive_int, default=None,
                                 help="optimiser steps (default: the preset's)")
        application.add_argument("--batch-size", type=_positive_int, default=None, help="latents per step")
        application.add_argument("--num-images", type=_positive_int, default=None,
                                 help="distinct Shapes training images (default: the preset's)")
        application.add_argument("--resume", action="store_true", help="continue the run saved in --out")
        application.add_argument("--checkpoint-every", type=_int_in(0), default=None, metavar="N",
                                 help="steps between checkpoints (default: the preset's; 0: only at the end)")
        device_options(application)
        speed_options(application)
        if name == "sr":
            application.add_argument("--objective", choices=("diffusion", "regression"), default="diffusion",
                                     help="diffusion (the default) or regression: the same network trained with "
                                          "an MSE to predict the high-resolution latent in one call (the baseline "
                                          "of Rombach et al. 2022, Tab. 5)")
            application.add_argument("--data", choices=("photos",), default=None,
                                     help="photos: upscale crops of scikit-image's photographs (the train split, "
                                          "true colours) with a model built from scratch on the photos-ae-lpips "
                                          "autoencoder, no text (default: fine-tune the Shapes model)")
            application.add_argument("--permute-colours", action="store_true",
                                     help="with --data photos: put each training crop's colour channels in a random "
                                          "order, as the photo autoencoders trained (default: true colours)")
    judge = models.add_parser("judge", help="the Shapes judge classifier that tinyldm evaluate uses")
    judge.add_argument("--out", type=Path, required=True, help="folder for the judge")
    judge.add_argument("--steps", type=_positive_int, default=1000, help="optimiser steps (default 1000)")
    judge.add_argument("--num-images", type=_positive_int, default=8192, help="real training images (default 8192)")
    judge.add_argument("--seed", type=_seed, default=0, help="seed (default 0)")
    device_options(judge)

    def sampler_options(sub: argparse.ArgumentParser, sampler: str = "ddpm", steps: int = 100,
                        animation: bool = False) -> None:
        sub.add_argument("--sampler", choices=SAMPLERS, default=sampler,
                         help=f"ddpm: ancestral (stochastic); ddim: deterministic (eta = 0); dpm++: DPM-Solver++(2M), "
                              f"deterministic and second order, good in few steps (default {sampler})")
        sub.add_argument("--steps", type=_int_in(1, 1000), default=steps,
                         help=f"network calls per image, 1 to 1000 (default {steps}); ddpm with --steps 1000 is the "
                              "full chain")
        if animation:
            sub.add_argument("--animation", action="store_true",
                             help=f"also write the reverse process as a GIF (reverse_process.gif), for at most "
                                  f"{MAX_ANIMATED_IMAGES} images")

    demo = commands.add_parser("demo", help="the course's showcase: text to image for four captions, two of them "
                                            "never seen in training")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="folder for the pictures "
                      "(default outputs/demo)")
    demo.add_argument("--checkpoint", type=Path, default=None,
                      help="pipeline folder (default: the shipped data/checkpoints/ldm-shapes)")
    demo.add_argument("--num-images", type=_positive_int, default=4, help="images per caption (default 4)")
    demo.add_argument("--seed", type=_seed, default=0, help="seed of the noise (default 0)")
    demo.add_argument("--steps", type=_positive_int, default=50, help="deterministic DDIM steps (default 50)")
    device_options(demo)

    sample = commands.add_parser("sample", help="draw images from a trained pixel model: PNGs, a grid, a GIF")
    sample.add_argument("--checkpoint", type=Path, default=None,
                        help="model folder (default: the shipped data/checkpoints/pixel-shapes)")
    sample.add_argument("--num-images", type=_positive_int, default=16, help="images to draw (default 16)")
    sample.add_argument("--seed", type=_seed, default=0, help="seed of the noise (default 0)")
    sample.add_argument("--out", type=Path, required=True, help="folder for the pictures")
    sampler_options(sample, animation=True)
    device_options(sample)

    generate = commands.add_parser("generate", help="text to image with a latent diffusion model: PNGs, a grid, "
                                                    "a GIF of the reverse process")
    generate.add_argument("--prompt", default=None,
                          help="what to draw, e.g. 'a large red circle at the top left' (leave out for an "
                               "unconditional model)")
    generate.add_argument("--checkpoint", type=Path, default=None,
                          help="pipeline folder (default: the shipped data/checkpoints/ldm-shapes)")
    generate.add_argument("--num-images", type=_positive_int, default=4, help="images to draw (default 4)")
    generate.add_argument("--seed", type=_seed, default=0, help="seed of the noise (default 0)")
    generate.add_argument("--guidance-scale", type=_non_negative_float, default=3.0,
                          help="classifier-free guidance scale: 1 = none, larger follows the prompt more closely, "
                               "0 = ignore it (default 3)")
    generate.add_argument("--out", type=Path, required=True, help="folder for the pictures")
    sampler_options(generate, GENERATE_SAMPLER, GENERATE_STEPS, animation=True)
    device_options(generate)

    def edit_options(sub: argparse.ArgumentParser, image_help: str = "the picture to edit, a PNG or JPEG at the "
                     "model's size (32x32 for ldm-shapes)", checkpoint_help: str = "pipeline folder (default: the "
                     "shipped data/checkpoints/ldm-shapes)", prompt: bool = True) -> None:
        """The options the editing commands (img2img, inpaint, upscale) share; ``prompt=False`` leaves out the
        prompt and the guidance, for a model that reads no caption."""
        sub.add_argument("--image", type=Path, required=True, help=image_help)
        if prompt:
            sub.add_argument("--prompt", default=None,
                             help="what the edited picture should show, e.g. 'a large red circle at the top left' "
                                  "(leave out for an unconditional model)")
        sub.add_argument("--out", type=Path, required=True, help="folder for the pictures")
        sub.add_argument("--checkpoint", type=Path, default=None, help=checkpoint_help)
        sub.add_argument("--num-images", type=_positive_int, default=1, help="results to draw (default 1)")
        sub.add_argument("--seed", type=_seed, default=0, help="seed of the noise (default 0)")
        if prompt:
            sub.add_argument("--guidance-scale", type=_non_negative_float, default=3.0,
                             help="classifier-free guidance scale: 1 = none, larger follows the prompt more closely "
                                  "(default 3)")
        sampler_options(sub, EDIT_SAMPLER, EDIT_STEPS)
        device_options(sub)

    img2img = commands.add_parser("img2img", help="redraw a picture after a prompt with SDEdit: noise it part of "
                                                  "the way, denoise it with a text-to-image model")
    img2img.add_argument("--strength", type=_strength, default=0.6,
                         help="how far to noise, in (0, 1]: 0.3 keeps the picture and redraws its details, 1 "
                              "forgets it; runs the last strength * --steps steps (default 0.6)")
    edit_options(img2img)

    inpaint = commands.add_parser("inpaint", help="fill a hole in a picture after a prompt, keeping every other "
                                                  "pixel")
    hole = inpaint.add_mutually_exclusive_group(required=True)
    hole.add_argument("--mask", type=Path, default=None,
                      help="a picture at the image's size, white where to fill (grey levels above half count as "
                           "white)")
    hole.add_argument("--box", type=_box, default=None, metavar="X0,Y0,X1,Y1",
                      help="the hole as a box in pixels, end-exclusive, x to the right and y down: 8,8,24,24")
    inpaint.add_argument("--method", choices=INPAINT_METHODS, default="blend",
                         help="blend: blended latent diffusion, with any text-to-image model and no training; "
                              "trained: a model with inpainting channels (default --checkpoint for it: the shipped "
                              "data/checkpoints/ldm-shapes-inpaint) (default blend)")
    inpaint.add_argument("--resample", type=_positive_int, default=1,
                         help="blend only: take every step this many times, going back by the forward process in "
                              "between, so the hole settles into its surroundings (RePaint; costs that many times the "
                              "network calls; default 1)")
    edit_options(inpaint)

    upscale = commands.add_parser("upscale", help="enlarge a small picture 4x with a super-resolution model "
                                                  "(8x8 to 32x32 with the shipped ldm-shapes-sr)")
    edit_options(upscale, "the low-resolution picture, a PNG or JPEG at the model's low resolution (8x8)",
                 "super-resolution model folder (default: the shipped data/checkpoints/ldm-shapes-sr); a regression "
                 "model (tinyldm train sr --objective regression) makes one call", prompt=False)

    evaluate = commands.add_parser("evaluate", help="judge a pixel model's samples: validity, frequencies, FID")
    evaluate.add_argument("--checkpoint", type=Path, default=None,
                          help="model folder (default: the shipped data/checkpoints/pixel-shapes)")
    evaluate.add_argument("--judge", type=Path, default=None,
                          help="judge folder (default: the shipped data/checkpoints/judge-shapes)")
    evaluate.add_argument("--num-images", type=_int_in(2), default=512,
                          help="images to generate, at least 2 to compare distributions (default 512)")
    evaluate.add_argument("--seed", type=_seed, default=0, help="seed of the noise (default 0)")
    sampler_options(evaluate)
    evaluate.add_argument("--out", type=Path, default=None, help="also write metrics.json and samples.png here")
    device_options(evaluate)

    rec = commands.add_parser("reconstruct", help="encode and decode fresh test images with an autoencoder and score "
                                                  "the reconstructions: PSNR, LPIPS, high-frequency ratio, two-sample "
                                                  "test, and on Shapes judge agreement and FID")
    rec.add_argument("--checkpoint", type=Path, default=None,
                     help="autoencoder folder (default: the shipped data/checkpoints/autoencoder-shapes)")
    rec.add_argument("--judge", type=Path, default=None,
                     help="judge folder, for Shapes (default: the shipped data/checkpoints/judge-shapes)")
    rec.add_argument("--data", choices=("shapes", "photos"), default="shapes",
                     help="the test images: Shapes' test split, or crops of the test photographs (chelsea, gravel, "
                          "rocket), which training on --data photos never sees (default shapes)")
    rec.add_argument("--num-images", type=_int_in(2), default=512,
                     help="test-split images to reconstruct (default 512, at least 2)")
    rec.add_argument("--seed", type=_seed, default=1, help="seed of the test-split images (default 1)")
    rec.add_argument("--size", type=_positive_int, default=32, help="image side in pixels (default 32)")
    rec.add_argument("--no-lpips", action="store_true",
                     help="skip LPIPS (it needs torchvision's AlexNet weights: online, or $TINYLDM_LPIPS_WEIGHTS)")
    rec.add_argument("--out", type=Path, required=True, help="folder for reconstructions.png and metrics.json")
    device_options(rec)
    return parser
