"""The ``tinyldm`` command: the course's jobs from a terminal (``tinyldm --help``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

import torch
from torch.utils.data import DataLoader

from tinyldm import distributed
from tinyldm.data import Shapes
from tinyldm.device import default_device
from tinyldm.schedule import NoiseSchedule, q_trajectory

__all__ = ["build_parser", "main", "render_forward"]

SCHEDULES = {
    "linear": NoiseSchedule.linear,
    "cosine": NoiseSchedule.cosine,
    "scaled_linear": NoiseSchedule.scaled_linear,
}
# Fractions of the chain shown as the strip's columns, after x0.
STRIP_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def render_forward(
    out: Path, num_images: int = 4, size: int = 32, schedule: str = "linear", num_steps: int = 1000,
    seed: int = 0, frames: int = 40,
) -> dict[str, Path]:
    """Noise a few Shapes images with the forward chain and write a strip, a GIF and the schedule curves.

    Returns:
        name -> path of each file written: "strip" (PNG), "animation" (GIF) and "schedules" (PNG).
    """
    from tinyldm import viz  # imported late: matplotlib and ipywidgets are not needed for --help

    if frames < 2:
        raise ValueError(f"frames must be at least 2 (x0 and x_T), got {frames}")
    noise_schedule = SCHEDULES[schedule](num_steps=num_steps)
    batch = next(iter(DataLoader(Shapes(num_images, size=size, seed=seed), batch_size=num_images)))
    x0 = batch["image"]  # (B, 3, size, size)

    strip_steps = [-1] + sorted({max(0, round(num_steps * f) - 1) for f in STRIP_FRACTIONS})
    gif_steps = sorted({-1, num_steps - 1, *range(0, num_steps, max(1, num_steps // (frames - 1)))})
    record = sorted(set(strip_steps) | set(gif_steps))
    path = q_trajectory(x0, noise_schedule, record, generator=torch.Generator().manual_seed(seed))
    frame_of = {step: path[k] for k, step in enumerate(record)}  # step -> (B, 3, size, size)

    out.mkdir(parents=True, exist_ok=True)
    written = {"strip": out / "forward_chain.png", "animation": out / "forward_chain.gif",
               "schedules": out / "schedules.png"}
    fig = viz.plot_chain(torch.stack([frame_of[s] for s in strip_steps]), strip_steps)
    fig.suptitle(f"the forward chain q(x_t | x_(t-1)), {schedule} schedule, T = {num_steps}", fontsize=10)
    fig.savefig(written["strip"], dpi=120, bbox_inches="tight")
    viz.save_gif(torch.stack([frame_of[s] for s in gif_steps]), written["animation"], nrow=num_images)
    curves = viz.plot_schedules({name: make(num_steps=num_steps) for name, make in SCHEDULES.items()})
    curves.savefig(written["schedules"], dpi=120, bbox_inches="tight")
    matplotlib.pyplot.close("all")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyldm", description="tinyldm: the jobs of the latent diffusion course, from a terminal."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def forward_options(sub: argparse.ArgumentParser, out_default: str | None) -> None:
        sub.add_argument("--out", type=Path, default=out_default, required=out_default is None,
                         help="folder for the pictures" + (f" (default {out_default})" if out_default else ""))
        sub.add_argument("--num-images", type=_positive_int, default=4, help="Shapes images to noise (default 4)")
        sub.add_argument("--size", type=_positive_int, default=32, help="image side in pixels (default 32)")
        sub.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear", help="beta schedule")
        sub.add_argument("--num-steps", type=_positive_int, default=1000, help="T, the chain's length")
        sub.add_argument("--seed", type=int, default=0, help="seed for the images and the noise (default 0)")
        sub.add_argument("--frames", type=_positive_int, default=40, help="frames in the GIF (default 40)")

    forward_options(commands.add_parser(
        "forward", help="render the forward noising chain of a few Shapes images (strip, GIF, schedules)"), None)

    def device_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", default=None, help="cpu, cuda, mps ... (default: cuda > mps > cpu)")
        sub.add_argument("--threads", type=_positive_int, default=None,
                         help="CPU threads for PyTorch (default: PyTorch's choice, one per core)")

    train = commands.add_parser("train", help="train a model (see tinyldm train pixel --help)")
    models = train.add_subparsers(dest="model", required=True, metavar="MODEL")

    def run_options(sub: argparse.ArgumentParser, holds: str, batch: str = "images") -> None:
        """The options every preset-based training command shares."""
        sub.add_argument("--config", choices=("tiny", "small", "full"), default="small",
                         help="preset: tiny (minutes), small (the shipped 32x32 model), full (64x64, a GPU)")
        sub.add_argument("--out", type=Path, required=True, help=f"run folder: {holds}")
        sub.add_argument("--steps", type=_positive_int, default=None, help="optimiser steps (default: the preset's)")
        sub.add_argument("--batch-size", type=_positive_int, default=None, help=f"{batch} per step")
        sub.add_argument("--num-images", type=_positive_int, default=None,
                         help="distinct training images (default: the preset's Shapes, or every picture of --data)")
        sub.add_argument("--data", default=None, metavar="DIR|mnist|fashion-mnist",
                         help="train on your own pictures: a folder with captions.jsonl (or captions.csv) naming "
                              "each one, or mnist / fashion-mnist (default: Shapes; see data/README.md)")
        sub.add_argument("--image-size", type=_positive_int, default=None,
                         help="image side in pixels: pictures are resized and centre-cropped to it (default: the "
                              "preset's, 32 or 64)")
        sub.add_argument("--strict", action="store_true",
                         help="stop at the first unreadable or uncaptioned picture of --data instead of skipping it")
        sub.add_argument("--resume", action="store_true", help="continue the run saved in --out")
        device_options(sub)

    def speed_options(sub: argparse.ArgumentParser) -> None:
        """GPU speed switches of the diffusion training loop (tinyldm.speed); the CPU ignores all but --compile."""
        group = sub.add_argument_group("speed on a GPU (see tinyldm.speed)")
        group.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32 on CUDA")
        group.add_argument("--tf32", action="store_true", help="TF32 tensor cores for float32 matmuls on CUDA")
        group.add_argument("--channels-last", action="store_true", help="NHWC memory layout on CUDA")
        group.add_argument("--fused-adamw", action="store_true", help="AdamW's fused CUDA kernel")
        group.add_argument("--compile", action="store_true", help="torch.compile the network (compiles first)")

    pixel = models.add_parser("pixel", help="a pixel-space diffusion UNet on Shapes (lesson 3)")
    run_options(pixel, "model, checkpoints, loss log, samples")
    speed_options(pixel)
    autoencoder = models.add_parser("autoencoder", help="a KL autoencoder for latent diffusion (lesson 4)")
    run_options(autoencoder, "model, checkpoints, loss log, reconstructions")
    autoencoder.add_argument("--factor", type=int, choices=(2, 4, 8), default=None,
                             help="down-sampling factor f: latents are (H/f, W/f) (default: the preset's, 4 or 8)")
    ldm = models.add_parser("ldm", help="a text-to-image latent diffusion model on Shapes (lessons 5-6)")
    run_options(ldm, "the pipeline (autoencoder/, unet/, text_encoder/), checkpoints, loss log", batch="latents")
    speed_options(ldm)
    ldm.add_argument("--autoencoder", type=Path, default=None,
                     help="folder of the frozen autoencoder (default: the preset's, data/checkpoints/"
                          "autoencoder-shapes for tiny and small)")
    ldm.add_argument("--unconditional", action="store_true",
                     help="no text encoder and no cross-attention: unconditional latent diffusion (lesson 5)")
    judge = models.add_parser("judge", help="the Shapes judge classifier that tinyldm evaluate uses")
    judge.add_argument("--out", type=Path, required=True, help="folder for the judge")
    judge.add_argument("--steps", type=_positive_int, default=1000, help="optimiser steps (default 1000)")
    judge.add_argument("--num-images", type=_positive_int, default=8192, help="real training images (default 8192)")
    judge.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    device_options(judge)

    def sampler_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm",
                         help="ddpm: ancestral (stochastic, the default); ddim: deterministic (eta = 0)")
        sub.add_argument("--steps", type=_positive_int, default=100,
                         help="network calls per image (default 100); ddpm with --steps 1000 is the full chain")

    demo = commands.add_parser("demo", help="the course's showcase: text to image for four captions, two of them "
                                            "never seen in training")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="folder for the pictures "
                      "(default outputs/demo)")
    demo.add_argument("--checkpoint", type=Path, default=None,
                      help="pipeline folder (default: the shipped data/checkpoints/ldm-shapes)")
    demo.add_argument("--num-images", type=_positive_int, default=4, help="images per caption (default 4)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    demo.add_argument("--steps", type=_positive_int, default=50, help="deterministic DDIM steps (default 50)")
    device_options(demo)

    sample = commands.add_parser("sample", help="draw images from a trained pixel model: PNGs, a grid, a GIF")
    sample.add_argument("--checkpoint", type=Path, default=None,
                        help="model folder (default: the shipped data/checkpoints/pixel-shapes)")
    sample.add_argument("--num-images", type=_positive_int, default=16, help="images to draw (default 16)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    sample.add_argument("--out", type=Path, required=True, help="folder for the pictures")
    sampler_options(sample)
    device_options(sample)

    generate = commands.add_parser("generate", help="text to image with a latent diffusion model: PNGs, a grid, "
                                                    "a GIF of the reverse process")
    generate.add_argument("--prompt", default=None,
                          help="what to draw, e.g. 'a large red circle at the top left' (leave out for an "
                               "unconditional model)")
    generate.add_argument("--checkpoint", type=Path, default=None,
                          help="pipeline folder (default: the shipped data/checkpoints/ldm-shapes)")
    generate.add_argument("--num-images", type=_positive_int, default=16, help="images to draw (default 16)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    generate.add_argument("--guidance-scale", type=_non_negative_float, default=3.0,
                          help="classifier-free guidance scale: 1 = none, larger follows the prompt more closely, "
                               "0 = ignore it (default 3)")
    generate.add_argument("--out", type=Path, required=True, help="folder for the pictures")
    sampler_options(generate)
    device_options(generate)

    evaluate = commands.add_parser("evaluate", help="judge a pixel model's samples: validity, frequencies, FID")
    evaluate.add_argument("--checkpoint", type=Path, default=None,
                          help="model folder (default: the shipped data/checkpoints/pixel-shapes)")
    evaluate.add_argument("--judge", type=Path, default=None,
                          help="judge folder (default: the shipped data/checkpoints/judge-shapes)")
    evaluate.add_argument("--num-images", type=_positive_int, default=512, help="images to generate (default 512)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    sampler_options(evaluate)
    evaluate.add_argument("--out", type=Path, default=None, help="also write metrics.json and samples.png here")
    device_options(evaluate)

    rec = commands.add_parser("reconstruct", help="encode and decode fresh Shapes images with an autoencoder and "
                                                  "score the reconstructions: PSNR, LPIPS, judge agreement, FID")
    rec.add_argument("--checkpoint", type=Path, default=None,
                     help="autoencoder folder (default: the shipped data/checkpoints/autoencoder-shapes)")
    rec.add_argument("--judge", type=Path, default=None,
                     help="judge folder (default: the shipped data/checkpoints/judge-shapes)")
    rec.add_argument("--num-images", type=_positive_int, default=512,
                     help="test-split images to reconstruct (default 512, at least 2)")
    rec.add_argument("--seed", type=int, default=1, help="seed of the test-split images (default 1)")
    rec.add_argument("--size", type=_positive_int, default=32, help="image side in pixels (default 32)")
    rec.add_argument("--no-lpips", action="store_true",
                     help="skip LPIPS (it needs torchvision's AlexNet weights: online, or $TINYLDM_LPIPS_WEIGHTS)")
    rec.add_argument("--out", type=Path, required=True, help="folder for reconstructions.png and metrics.json")
    device_options(rec)
    return parser


def _speed(args: argparse.Namespace):
    from tinyldm.speed import SpeedConfig

    return SpeedConfig(bf16=args.bf16, tf32=args.tf32, channels_last=args.channels_last,
                       fused_adamw=args.fused_adamw, compile=args.compile)


def _say(message: str) -> None:
    """Print a training command's message once, from the main process of a multi-process run."""
    if distributed.is_main_process():
        print(message)


def _choose_device(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command != "train":
        return torch.device(args.device) if args.device else default_device()
    # Under torchrun each process trains on its own GPU (cuda:LOCAL_RANK) and joins the others.
    local_rank = distributed.local_rank()
    device = torch.device(args.device) if args.device else default_device(local_rank)
    if local_rank is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if distributed.init_from_environment(device):
        _say(f"data-parallel training: {distributed.world_size()} processes, one global batch shared between them")
    return device


def _run_train(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs import train_and_score_judge, train_pixel

    device = _choose_device(args)
    if args.model == "judge":
        report = train_and_score_judge(args.out, args.steps, args.num_images, args.seed, device)
        accuracy = report["accuracy_on_fresh_images"]
        print("judge accuracy on fresh images: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
        return {"judge": args.out / "model.safetensors", "accuracy": args.out / "accuracy.json"}
    _say(f"tinyldm train {args.model}: {args.config} preset on {device} ({torch.get_num_threads()} CPU threads)")
    result = train_pixel(args.config, args.out, device, steps=args.steps, batch_size=args.batch_size,
                         num_images=args.num_images, resume=args.resume, speed=_speed(args), data=args.data,
                         image_size=args.image_size, strict=args.strict)
    _say(f"trained {result.steps_run} steps at {result.images_per_second:.0f} images/s; "
          f"mean loss of the last 100 steps {sum(result.losses[-100:]) / len(result.losses[-100:]):.4f}")
    return {"model": args.out / "model.safetensors", "config": args.out / "config.json",
            "loss log": args.out / "loss.jsonl", "loss plot": args.out / "loss.png"}


def _lpips(device: torch.device):
    """The LPIPS network. Weights that cannot be had are a problem of the setup, reported like bad input."""
    from tinyldm.perceptual import LPIPS

    try:
        return LPIPS().to(device)
    except RuntimeError as err:
        raise ValueError(str(err)) from err


def _run_train_autoencoder(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.autoencoder_jobs import AUTOENCODER_PRESETS, train_autoencoder_preset

    device = _choose_device(args)
    _say(f"tinyldm train autoencoder: {args.config} preset on {device} ({torch.get_num_threads()} CPU threads)")
    lpips = _lpips(device) if AUTOENCODER_PRESETS[args.config].loss.perceptual_weight > 0 else None
    result = train_autoencoder_preset(args.config, args.out, device, steps=args.steps, batch_size=args.batch_size,
                                      num_images=args.num_images, factor=args.factor, resume=args.resume,
                                      lpips=lpips, data=args.data, image_size=args.image_size, strict=args.strict)
    last = result.records[-100:]
    means = {k: sum(r[k] for r in last) / len(last) for k in ("loss", "l1", "lpips") if k in last[0]}
    _say(f"trained {result.steps_run} steps at {result.images_per_second:.0f} images/s; means of the last "
          f"{len(last)} steps: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
          + f"; latent scale factor {result.scale_factor:.4f}")
    return {"model": args.out / "model.safetensors", "config": args.out / "config.json",
            "loss log": args.out / "loss.jsonl", "loss plot": args.out / "loss.png"}


def _run_reconstruct(args: argparse.Namespace) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    from tinyldm.autoencoder_jobs import evaluate_autoencoder, load_autoencoder, plot_reconstructions
    from tinyldm.evaluate import Judge
    from tinyldm.pretrained import checkpoint_dir

    if args.num_images < 2:
        raise ValueError(f"--num-images must be at least 2 to compare distributions (FID), got {args.num_images}")
    device = _choose_device(args)
    model = load_autoencoder(args.checkpoint or checkpoint_dir("autoencoder-shapes"), device)
    judge = Judge.from_pretrained(args.judge or checkpoint_dir("judge-shapes")).to(device)
    lpips = None if args.no_lpips else _lpips(device)
    metrics, originals, reconstructions = evaluate_autoencoder(model, args.num_images, args.size, args.seed,
                                                               judge=judge, lpips=lpips)
    print(json.dumps(metrics, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    fig = plot_reconstructions(originals, reconstructions)
    fig.savefig(args.out / "reconstructions.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return {"metrics": args.out / "metrics.json", "reconstructions": args.out / "reconstructions.png"}


def _run_train_ldm(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.ldm_jobs import train_ldm

    device = _choose_device(args)
    kind = "unconditional" if args.unconditional else "text-to-image"
    _say(f"tinyldm train ldm: {args.config} preset, {kind}, on {device} ({torch.get_num_threads()} CPU threads)")
    result = train_ldm(args.config, args.out, device, autoencoder=args.autoencoder, steps=args.steps,
                       batch_size=args.batch_size, num_images=args.num_images, unconditional=args.unconditional,
                       resume=args.resume, speed=_speed(args), data=args.data, image_size=args.image_size,
                       strict=args.strict)
    last = result.losses[-100:]
    _say(f"trained {result.steps_run} steps at {result.images_per_second:.0f} latents/s; mean loss of the last "
          f"{len(last)} steps {sum(last) / len(last):.4f}")
    return {"pipeline": args.out / "config.json", "unet": args.out / "unet" / "model.safetensors",
            "loss log": args.out / "loss.jsonl", "loss plot": args.out / "loss.png"}


def _run_demo(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.demo import render_demo
    from tinyldm.ldm_jobs import load_ldm
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    ldm = load_ldm(args.checkpoint or checkpoint_dir("ldm-shapes"), device)
    return render_demo(ldm, args.out, args.num_images, args.seed, steps=args.steps)


def _write_samples(images: torch.Tensor, frames: torch.Tensor, out: Path) -> dict[str, Path]:
    """One PNG per image, a square-ish grid and the reverse process as a GIF; returns what was written."""
    from tinyldm import viz

    nrow = math.ceil(math.sqrt(images.shape[0]))
    written = {f"image {k}": viz.save_grid(image[None], out / f"sample_{k:03d}.png") for k, image in enumerate(images)}
    written["grid"] = viz.save_grid(images, out / "grid.png", nrow=nrow, scale=4)
    written["animation"] = viz.save_gif(frames, out / "reverse_process.gif", fps=12, nrow=nrow, scale=3)
    return written


def _run_generate(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.ldm_jobs import generate_ldm, load_ldm
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    folder = args.checkpoint or checkpoint_dir("ldm-shapes")
    ldm = load_ldm(folder, device)
    if ldm.text_encoder is not None and args.prompt is None:
        raise ValueError(f"{folder} is a text-to-image model: pass --prompt, e.g. --prompt "
                         "'a large red circle at the top left'")
    images, frames, _ = generate_ldm(ldm, args.prompt, args.num_images, args.seed, args.guidance_scale,
                                     args.sampler, args.steps)
    return _write_samples(images, frames, args.out)


def _run_sample(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs import load_pixel_model, sample_pixel
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    folder = args.checkpoint or checkpoint_dir("pixel-shapes")
    model, schedule, size = load_pixel_model(folder, device)
    images, frames, _ = sample_pixel(model, schedule, args.num_images, size, args.seed, args.sampler,
                                     args.steps)
    return _write_samples(images, frames, args.out)


def _run_evaluate(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm import viz
    from tinyldm.evaluate import Judge
    from tinyldm.jobs import evaluate_pixel, load_pixel_model
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    model, schedule, size = load_pixel_model(args.checkpoint or checkpoint_dir("pixel-shapes"), device)
    judge = Judge.from_pretrained(args.judge or checkpoint_dir("judge-shapes")).to(device)
    metrics, images = evaluate_pixel(model, schedule, size, judge, args.num_images, args.seed, args.sampler,
                                     args.steps)
    print(json.dumps(metrics, indent=2))
    if args.out is None:
        return {}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {"metrics": args.out / "metrics.json",
            "samples": viz.save_grid(images[:64], args.out / "samples.png", nrow=8, scale=3)}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tinyldm`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and args.model == "autoencoder":
            written = _run_train_autoencoder(args)
        elif args.command == "train" and args.model == "ldm":
            written = _run_train_ldm(args)
        elif args.command == "train":
            written = _run_train(args)
        elif args.command == "demo":
            written = _run_demo(args)
        elif args.command == "generate":
            written = _run_generate(args)
        elif args.command == "reconstruct":
            written = _run_reconstruct(args)
        elif args.command == "sample":
            written = _run_sample(args)
        elif args.command == "evaluate":
            written = _run_evaluate(args)
        else:
            written = render_forward(args.out, args.num_images, args.size, args.schedule, args.num_steps,
                                     args.seed, args.frames)
        main_process = distributed.is_main_process()  # asked before the process group closes
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # bad input the parser cannot see
        print(f"tinyldm {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.close()
    if not main_process:
        return 0
    if written:
        print(f"tinyldm {args.command}: wrote")
    for name, path in written.items():
        print(f"  {path}  ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
