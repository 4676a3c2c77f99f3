"""How fast does ``tinyldm generate`` draw? Seconds per call and GFLOP/s of the shipped text-to-image model, with
the CPU's threads and channels_last memory format switched, against the machine's measured fp32 matmul peak.

Each setting draws ``--num-images`` images of one prompt with the command's defaults (DPM-Solver++, 6 steps,
guidance 3, no animation) under ``torch.inference_mode``, the best of ``--repeats`` calls after a warm-up. The FLOPs
of one call are counted once with ``FlopCounterMode`` (the UNet's calls, the text encoder and the decoder), so
GFLOP/s = FLOPs / seconds. The import time is not part of it: ``python -X importtime`` measures that.

Usage: ``python benchmarks/generate_speed.py [--num-images 4] [--repeats 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from report import chosen_device, machine_options, report  # benchmarks/report.py, a sibling of this script
from throughput import matmul_flops
from torch.utils.flop_counter import FlopCounterMode

from tinyldm.cli.parser import GENERATE_SAMPLER, GENERATE_STEPS
from tinyldm.jobs.ldm import generate_ldm, load_ldm
from tinyldm.pretrained import checkpoint_dir

PROMPT = "a large red circle at the top left"


def draw(ldm, num_images: int, steps: int) -> torch.Tensor:
    with torch.inference_mode():
        images, _, _ = generate_ldm(ldm, PROMPT, num_images, 0, 3.0, GENERATE_SAMPLER, steps, frames=0,
                                    progress=False)
    return images


def best_seconds(ldm, num_images: int, steps: int, repeats: int) -> float:
    draw(ldm, num_images, steps)  # warm-up: the first call allocates
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        draw(ldm, num_images, steps)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=4, help="images per call (default 4, the command's)")
    parser.add_argument("--steps", type=int, default=GENERATE_STEPS, help="sampler steps (default: the command's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting (default 5)")
    machine_options(parser)
    args = parser.parse_args()
    device = chosen_device(args)
    ldm = load_ldm(checkpoint_dir("ldm-shapes"), device)
    with FlopCounterMode(display=False) as counter:
        draw(ldm, args.num_images, args.steps)
    flops = counter.get_total_flops()
    figures: dict[str, object] = {"device": str(device), "sampler": GENERATE_SAMPLER, "steps": args.steps,
                                  "num_images": args.num_images, "GFLOP_per_call": flops / 1e9}
    threads = [torch.get_num_threads()] if args.threads or device.type != "cpu" else [1, 2]
    for n in threads:
        torch.set_num_threads(n)
        peak = matmul_flops(device, 2048, torch.float32)
        figures[f"threads={n}: fp32 matmul peak GFLOP/s"] = peak / 1e9
        for channels_last in (False, True):
            ldm.unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            seconds = best_seconds(ldm, args.num_images, args.steps, args.repeats)
            name = f"threads={n}, channels_last={'on' if channels_last else 'off'}"
            figures[f"{name}: seconds per call"] = seconds
            figures[f"{name}: GFLOP/s"] = flops / seconds / 1e9
            figures[f"{name}: % of matmul peak"] = 100 * flops / seconds / peak
    report(figures, args.json)


if __name__ == "__main__":
    main()
