"""The ``tinyldm`` command: the course's jobs from a terminal (``tinyldm --help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

import torch
from torch.utils.data import DataLoader

from tinyldm.data import Shapes
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
    forward_options(commands.add_parser(
        "demo", help="the course's showcase job; until text-to-image exists, the forward chain"), "outputs/demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tinyldm`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        written = render_forward(args.out, args.num_images, args.size, args.schedule, args.num_steps,
                                 args.seed, args.frames)
    except ValueError as err:  # bad input the parser cannot see (e.g. an image size Shapes cannot draw)
        print(f"tinyldm {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(f"tinyldm {args.command}: wrote")
    for name, path in written.items():
        print(f"  {path}  ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
