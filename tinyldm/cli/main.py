"""The ``tinyldm`` command: the course's jobs from a terminal (``tinyldm --help``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tinyldm.cli.parser import MAX_ANIMATED_IMAGES, SCHEDULES, build_parser
from tinyldm.data.shapes import Shapes
from tinyldm.runtime import default_device
from tinyldm.schedule import q_trajectory
from tinyldm.training import distributed

__all__ = ["main", "render_forward", "check_writable"]

# Fractions of the chain shown as the strip's columns, after x0.
STRIP_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def render_forward(
    out: Path, num_images: int = 4, size: int = 32, schedule: str = "linear", num_steps: int = 1000,
    seed: int = 0, frames: int = 40,
) -> dict[str, Path]:
    """Noise a few Shapes images with the forward chain and write a strip, a GIF and the schedule curves.

    Returns:
        name -> path of each file written: "strip" (PNG), "animation" (GIF) and "schedules" (PNG).
    """
    import matplotlib.pyplot as plt  # imported late: --help and the sampling commands need no plots

    from tinyldm.viz import images as viz

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
    plt.close("all")
    return written


def _speed(args: argparse.Namespace):
    from tinyldm.training.speed import SpeedConfig

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
        return args.device or default_device()
    # Under torchrun each process trains on its own GPU (cuda:LOCAL_RANK) and joins the others.
    local_rank = distributed.local_rank()
    device = args.device or default_device(local_rank)
    if local_rank is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if distributed.init_from_environment(device):
        _say(f"data-parallel training: {distributed.world_size()} processes, one global batch shared between them")
    return device


def _run_train(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.judge import train_and_score_judge
    from tinyldm.jobs.pixel import train_pixel

    device = _choose_device(args)
    if args.model == "judge":
        report, written = train_and_score_judge(args.out, args.steps, args.num_images, args.seed, device)
        accuracy = report["accuracy_on_fresh_images"]
        print("judge accuracy on fresh images: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
        return written
    _say(f"tinyldm train {args.model}: {args.config} preset on {device} ({torch.get_num_threads()} CPU threads)")
    result = train_pixel(args.config, args.out, device, steps=args.steps, batch_size=args.batch_size,
                         num_images=args.num_images, resume=args.resume, speed=_speed(args), data=args.data,
                         image_size=args.image_size, strict=args.strict, checkpoint_every=args.checkpoint_every)
    _say(f"trained {result.steps_run} steps at {result.images_per_second:.0f} images/s; "
          f"mean loss of the last 100 steps {sum(result.losses[-100:]) / len(result.losses[-100:]):.4f}")
    return result.files


def _lpips(device: torch.device):
    """The LPIPS network. Weights that cannot be had are a problem of the setup, reported like bad input."""
    from tinyldm.perceptual import LPIPS

    try:
        return LPIPS().to(device)
    except RuntimeError as err:
        raise ValueError(str(err)) from err


def _run_train_autoencoder(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.autoencoder import AUTOENCODER_PRESETS, train_autoencoder_preset, with_loss_recipe

    device = _choose_device(args)
    recipe = f", {args.loss} loss" if args.loss else ""
    _say(f"tinyldm train autoencoder: {args.config} preset{recipe} on {device} ({torch.get_num_threads()} CPU "
         "threads)")
    recipe_loss = with_loss_recipe(AUTOENCODER_PRESETS[args.config], args.loss).loss
    lpips = _lpips(device) if recipe_loss.perceptual_weight > 0 else None
    result = train_autoencoder_preset(args.config, args.out, device, steps=args.steps, batch_size=args.batch_size,
                                      num_images=args.num_images, factor=args.factor, resume=args.resume,
                                      lpips=lpips, data=args.data, image_size=args.image_size, strict=args.strict,
                                      speed=_speed(args), checkpoint_every=args.checkpoint_every, loss=args.loss)
    last = result.records[-100:]
    means = {k: sum(r[k] for r in last) / len(last) for k in ("loss", "l1", "l2", "lpips") if k in last[0]}
    _say(f"trained {result.steps_run} steps at {result.images_per_second:.0f} images/s; means of the last "
          f"{len(last)} steps: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
          + f"; latent scale factor {result.scale_factor:.4f}")
    return result.files


def _run_reconstruct(args: argparse.Namespace) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    from tinyldm.evaluation.judge import Judge
    from tinyldm.jobs.autoencoder import evaluate_autoencoder, load_autoencoder, plot_reconstructions
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    model = load_autoencoder(args.checkpoint or checkpoint_dir("autoencoder-shapes"), device)
    judge = None  # the judge reads Shapes only
    if args.data == "shapes":
        judge = Judge.from_pretrained(args.judge or checkpoint_dir("judge-shapes")).to(device)
    lpips = None if args.no_lpips else _lpips(device)
    metrics, originals, reconstructions = evaluate_autoencoder(model, args.num_images, args.size, args.seed,
                                                               judge=judge, lpips=lpips, data=args.data)
    print(json.dumps(metrics, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    fig = plot_reconstructions(originals, reconstructions)
    fig.savefig(args.out / "reconstructions.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return {"metrics": args.out / "metrics.json", "reconstructions": args.out / "reconstructions.png"}


def _run_train_ldm(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.ldm import train_ldm

    device = _choose_device(args)
    kind = "unconditional" if args.unconditional else "text-to-image"
    _say(f"tinyldm train ldm: {args.config} preset, {kind}, on {device} ({torch.get_num_threads()} CPU threads)")
    result = train_ldm(args.config, args.out, device, autoencoder=args.autoencoder, steps=args.steps,
                       batch_size=args.batch_size, num_images=args.num_images, unconditional=args.unconditional,
                       resume=args.resume, speed=_speed(args), data=args.data, image_size=args.image_size,
                       strict=args.strict, checkpoint_every=args.checkpoint_every)
    last = result.losses[-100:]
    _say(f"trained {result.steps_run} steps at {result.images_per_second:.0f} latents/s; mean loss of the last "
          f"{len(last)} steps {sum(last) / len(last):.4f}")
    return result.files


def _run_train_application(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.applications import train_application

    device = _choose_device(args)
    objective = getattr(args, "objective", "diffusion")
    _say(f"tinyldm train {args.model}: {args.config} preset, {objective}, on {device} ({torch.get_num_threads()} "
         "CPU threads)")
    result = train_application(args.model, args.config, args.out, device, objective=objective, base=args.base,
                               steps=args.steps, batch_size=args.batch_size, num_images=args.num_images,
                               resume=args.resume, speed=_speed(args), checkpoint_every=args.checkpoint_every,
                               data=getattr(args, "data", None),
                               permute_colours=getattr(args, "permute_colours", False))
    last = result.losses[-100:]
    _say(f"trained {result.steps_run} steps at {result.images_per_second:.0f} latents/s; mean loss of the last "
         f"{len(last)} steps {sum(last) / len(last):.4f}")
    return result.files


def _run_demo(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.demo import render_demo
    from tinyldm.jobs.ldm import load_ldm
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    ldm = load_ldm(args.checkpoint or checkpoint_dir("ldm-shapes"), device)
    return render_demo(ldm, args.out, args.num_images, args.seed, steps=args.steps)


def check_writable(out: Path) -> None:
    """Refuse an --out that cannot be written, before any work is done: a file is tried in the folder, or in the
    nearest folder above it that exists (nothing is left behind, so a refused command leaves no empty folder).

    Raises ValueError naming the folder and why.
    """
    existing = out.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    reason = None
    if existing == out.absolute() and not out.is_dir():
        reason = "it is a file, not a folder"
    elif not existing.is_dir():
        reason = f"{existing} is a file, so no folder can be made below it"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            reason = f"{existing} cannot be written: {error.strerror or error}"
    if reason:
        raise ValueError(f"--out {out} cannot be written ({reason}); choose a folder you can write to")


def _write_samples(images: torch.Tensor, frames: torch.Tensor | None, out: Path) -> dict[str, Path]:
    """One PNG per image, a square-ish grid and, when there are frames, the reverse process as a GIF; returns what
    was written. What an earlier run of the command left in ``out`` (more samples than now) is removed first."""
    from tinyldm.viz import images as viz

    for old in [*out.glob("sample_*.png"), out / "grid.png", out / "reverse_process.gif"]:
        old.unlink(missing_ok=True)
    nrow = math.ceil(math.sqrt(images.shape[0]))
    written = {f"image {k}": viz.save_grid(image[None], out / f"sample_{k:03d}.png") for k, image in enumerate(images)}
    written["grid"] = viz.save_grid(images, out / "grid.png", nrow=nrow, scale=4)
    if frames is not None:
        written["animation"] = viz.save_gif(frames, out / "reverse_process.gif", fps=12,
                                            nrow=math.ceil(math.sqrt(frames.shape[1])), scale=3)
    return written


def _run_generate(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.ldm import generate_ldm, load_ldm
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    folder = args.checkpoint or checkpoint_dir("ldm-shapes")
    ldm = load_ldm(folder, device)
    if ldm.text_encoder is not None and args.prompt is None:
        raise ValueError(f"{folder} is a text-to-image model: pass --prompt, e.g. --prompt "
                         "'a large red circle at the top left'")
    with torch.inference_mode():
        images, frames, _ = generate_ldm(ldm, args.prompt, args.num_images, args.seed, args.guidance_scale,
                                         args.sampler, args.steps, frames=40 if args.animation else 0)
    return _write_samples(images, frames, args.out)


def _load_edit_model(args: argparse.Namespace):
    from tinyldm.jobs.ldm import load_ldm
    from tinyldm.pretrained import checkpoint_dir

    folder = args.checkpoint or checkpoint_dir("ldm-shapes")
    ldm = load_ldm(folder, _choose_device(args))
    if ldm.text_encoder is not None and args.prompt is None:
        raise ValueError(f"{folder} is a text-to-image model: pass --prompt, e.g. --prompt "
                         "'a large red circle at the top left'")
    return ldm


def _run_img2img(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.edit import run_img2img

    ldm = _load_edit_model(args)
    with torch.inference_mode():
        return run_img2img(ldm, args.image, args.prompt, args.strength, args.out, args.num_images, args.seed,
                           args.steps, args.sampler, args.guidance_scale)


def _run_inpaint(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.edit import run_inpaint

    if args.method == "trained":
        from tinyldm.concat_conditioning import ConcatConditionedLDM
        from tinyldm.pretrained import checkpoint_dir

        # from_pretrained refuses a text-to-image folder, naming the fix; run_inpaint refuses a super-resolution one
        folder = args.checkpoint or checkpoint_dir("ldm-shapes-inpaint")
        model = ConcatConditionedLDM.from_pretrained(folder).to(_choose_device(args))
    else:
        model = _load_edit_model(args)
    with torch.inference_mode():
        return run_inpaint(model, args.image, args.prompt, args.out, args.mask, args.box, args.method,
                           args.num_images, args.seed, args.steps, args.sampler, args.guidance_scale, args.resample)


def _run_upscale(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.concat_conditioning import ConcatConditionedLDM
    from tinyldm.jobs.edit import run_upscale
    from tinyldm.pretrained import checkpoint_dir

    model = ConcatConditionedLDM.from_pretrained(args.checkpoint or checkpoint_dir("ldm-shapes-sr"))
    model = model.to(_choose_device(args))
    with torch.inference_mode():
        return run_upscale(model, args.image, args.out, args.num_images, args.seed, args.steps, args.sampler)


def _run_sample(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.jobs.pixel import load_pixel_model, sample_pixel
    from tinyldm.pretrained import checkpoint_dir

    device = _choose_device(args)
    folder = args.checkpoint or checkpoint_dir("pixel-shapes")
    model, schedule, size = load_pixel_model(folder, device)
    with torch.inference_mode():
        images, frames, _ = sample_pixel(model, schedule, args.num_images, size, args.seed, args.sampler,
                                         args.steps, frames=40 if args.animation else 0)
    return _write_samples(images, frames, args.out)


def _run_evaluate(args: argparse.Namespace) -> dict[str, Path]:
    from tinyldm.evaluation.judge import Judge
    from tinyldm.jobs.pixel import evaluate_pixel, load_pixel_model
    from tinyldm.pretrained import checkpoint_dir
    from tinyldm.viz import images as viz

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
        if getattr(args, "out", None) is not None:
            check_writable(args.out)
        if getattr(args, "animation", False) and args.num_images > MAX_ANIMATED_IMAGES:
            raise ValueError(f"--animation draws all {args.num_images} images in every frame of one GIF, too small "
                             f"to follow beyond {MAX_ANIMATED_IMAGES}; use --num-images {MAX_ANIMATED_IMAGES} or "
                             "fewer with --animation, or leave --animation out")
        trainers = {"autoencoder": _run_train_autoencoder, "ldm": _run_train_ldm, "inpaint": _run_train_application,
                    "sr": _run_train_application}
        runners = {"demo": _run_demo, "generate": _run_generate, "img2img": _run_img2img, "inpaint": _run_inpaint,
                   "upscale": _run_upscale, "reconstruct": _run_reconstruct, "sample": _run_sample,
                   "evaluate": _run_evaluate}
        if args.command == "train":
            written = trainers.get(args.model, _run_train)(args)  # pixel and judge share _run_train
        elif args.command in runners:
            written = runners[args.command](args)
        else:
            written = render_forward(args.out, args.num_images, args.size, args.schedule, args.num_steps,
                                     args.seed, args.frames)
        main_process = distributed.is_main_process()  # asked before the process group closes
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as err:  # bad input or setup
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
