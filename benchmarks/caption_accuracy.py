"""Does a text-to-image model draw what the caption says? Caption accuracy of a latent diffusion pipeline.

For every Shapes caption of a split (the training split's captions, and the held-out colour-shape pairs the model
never saw), the model draws images; the shipped judge reads colour, shape, size and position off each one, and an
image counts as right when all four match the caption (``tinyldm.evaluation.metrics.caption_accuracy``). Also
reported: the accuracy of each attribute, the judged-valid fraction and the seconds per image.

Usage: ``python benchmarks/caption_accuracy.py [--checkpoint DIR] [--guidance-scale 3] [--steps 50] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from report import (  # benchmarks/report.py: scripts run from here, so it imports as a sibling
    chosen_device,
    machine_options,
    report,
)

from tinyldm.data.shapes import HELD_OUT, parse_caption
from tinyldm.evaluation.judge import Judge
from tinyldm.evaluation.metrics import caption_accuracy
from tinyldm.jobs.ldm import load_ldm
from tinyldm.pretrained import checkpoint_dir
from tinyldm.text import shapes_captions


def split_captions(split: str) -> list[str]:
    """The distinct captions of a split: "train" (no held-out pair) or "heldout" (only held-out pairs)."""
    def held(caption: str) -> bool:
        attributes = parse_caption(caption)
        return (attributes["color"], attributes["shape"]) in HELD_OUT

    return [c for c in shapes_captions() if held(c) == (split == "heldout")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="pipeline folder (default: ldm-shapes)")
    parser.add_argument("--judge", type=Path, default=None, help="judge folder (default: judge-shapes)")
    parser.add_argument("--images-per-prompt", type=int, default=1, help="images drawn per caption (default 1)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default 3)")
    parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="sampler (default ddim)")
    parser.add_argument("--steps", type=int, default=50, help="network calls per image (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--batch-size", type=int, default=128, help="captions per sampling call (default 128)")
    machine_options(parser)
    args = parser.parse_args()
    device = chosen_device(args)
    ldm = load_ldm(args.checkpoint or checkpoint_dir("ldm-shapes"), device)
    judge = Judge.from_pretrained(args.judge or checkpoint_dir("judge-shapes")).to(device)

    figures: dict[str, object] = {"device": str(device), "threads": torch.get_num_threads(),
                                  "guidance_scale": args.guidance_scale, "sampler": args.sampler,
                                  "steps": args.steps, "images_per_prompt": args.images_per_prompt}
    generator = torch.Generator(device).manual_seed(args.seed)
    for split in ("train", "heldout"):
        captions = split_captions(split)
        start = time.perf_counter()
        images = torch.cat([
            ldm.sample(captions[i:i + args.batch_size], args.images_per_prompt, steps=args.steps,
                       sampler=args.sampler, guidance_scale=args.guidance_scale, generator=generator,
                       progress=False).cpu()
            for i in range(0, len(captions), args.batch_size)])
        seconds = time.perf_counter() - start
        repeated = [c for c in captions for _ in range(args.images_per_prompt)]
        accuracy = caption_accuracy(judge, images, repeated)  # the judge moves the images to its device
        figures[f"{split}_captions"] = len(captions)
        figures.update({f"{split}_{name}": value for name, value in accuracy.items()})
        figures[f"{split}_seconds_per_image"] = seconds / images.shape[0]
    report(figures, args.json)


if __name__ == "__main__":
    main()
