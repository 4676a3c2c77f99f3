"""Does a text-to-image model draw what the caption says? Caption accuracy of a latent diffusion pipeline.

For every Shapes caption of a split (the training split's captions, and the held-out colour-shape pairs the model
never saw), the model draws images; the shipped judge reads colour, shape, size and position off each one, and an
image counts as right when all four match the caption (``tinyldm.evaluation.metrics.caption_accuracy``). Also
reported: the accuracy of each attribute, the judged-valid fraction and the seconds per image.

Usage: ``python benchmarks/caption_accuracy.py [--checkpoint DIR] [--guidance-scale 3] [--steps 50] [--json out.json]``.

``--sweep`` measures accuracy against the number of network calls for every sampler (ancestral DDPM, DDIM and
DPM-Solver++), the curve from which ``tinyldm generate`` takes its default sampler and steps, and with
``--plot FILE`` draws it.
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
from tinyldm.sampling import SAMPLERS
from tinyldm.text import shapes_captions


def split_captions(split: str) -> list[str]:
    """The distinct captions of a split: "train" (no held-out pair) or "heldout" (only held-out pairs)."""
    def held(caption: str) -> bool:
        attributes = parse_caption(caption)
        return (attributes["color"], attributes["shape"]) in HELD_OUT

    return [c for c in shapes_captions() if held(c) == (split == "heldout")]


def measure(ldm, judge: Judge, sampler: str, steps: int, guidance_scale: float = 3.0, seed: int = 0,
            images_per_prompt: int = 1, batch_size: int = 128) -> dict[str, float]:
    """Caption accuracy of one sampler setting on the training split's captions and the held-out pairs."""
    figures: dict[str, float] = {}
    generator = torch.Generator(ldm.device).manual_seed(seed)
    for split in ("train", "heldout"):
        captions = split_captions(split)
        start = time.perf_counter()
        images = torch.cat([
            ldm.sample(captions[i:i + batch_size], images_per_prompt, steps=steps, sampler=sampler,
                       guidance_scale=guidance_scale, generator=generator, progress=False).cpu()
            for i in range(0, len(captions), batch_size)])
        seconds = time.perf_counter() - start
        repeated = [c for c in captions for _ in range(images_per_prompt)]
        accuracy = caption_accuracy(judge, images, repeated)  # the judge moves the images to its device
        figures[f"{split}_captions"] = len(captions)
        figures.update({f"{split}_{name}": value for name, value in accuracy.items()})
        figures[f"{split}_seconds_per_image"] = seconds / images.shape[0]
    return figures


# The sweep's grid: network evaluations per image for each sampler (twice as many UNet calls with guidance).
SWEEP = {"dpm++": (2, 3, 4, 5, 6, 8, 10, 15, 20), "ddim": (2, 3, 4, 5, 6, 8, 10, 15, 20, 50),
         "ddpm": (10, 25, 50, 100)}
ODE_CAPTIONS = 64  # captions whose deterministic samples are compared with the ODE's converged solution
ODE_REFERENCE_STEPS = 200  # DPM-Solver++ steps taken as the converged solution


def ode_error(ldm, sampler: str, steps: int, reference: torch.Tensor, guidance_scale: float, seed: int) -> float:
    """Mean absolute pixel distance between a deterministic sampler's images and the converged solution of the
    same probability-flow ODE from the same x_T (NaN for the stochastic "ddpm")."""
    if sampler == "ddpm":
        return float("nan")
    return (_ode_images(ldm, sampler, steps, guidance_scale, seed) - reference).abs().mean().item()


def _ode_images(ldm, sampler: str, steps: int, guidance_scale: float, seed: int) -> torch.Tensor:
    captions = split_captions("train")[:ODE_CAPTIONS]
    xT = torch.randn((len(captions), *ldm.latent_shape), generator=torch.Generator().manual_seed(seed))
    return ldm.sample(captions, steps=steps, sampler=sampler, guidance_scale=guidance_scale,
                      xT=xT.to(ldm.device), progress=False).cpu()


def plot_sweep(rows: list[dict[str, float]], path: Path) -> None:
    """Left: all-four-right accuracy (seen and held-out captions together) against network evaluations per image.
    Right: the deterministic samplers' distance to the converged solution of the probability-flow ODE."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    names = {"dpm++": "DPM-Solver++(2M)", "ddim": "DDIM (eta = 0)", "ddpm": "ancestral (DDPM)"}
    for sampler, label in names.items():
        mine = [r for r in rows if r["sampler"] == sampler]
        left.plot([r["steps"] for r in mine], [r["all_right"] for r in mine], marker="o", label=label)
        if sampler != "ddpm":
            right.plot([r["steps"] for r in mine], [r["ode_error"] for r in mine], marker="o", label=label)
    left.set(xscale="log", xlabel="network evaluations per image (x2 UNet calls with guidance)",
             ylabel="captions drawn right (all four)", ylim=(0.9, 1.005), title="caption accuracy, 432 captions")
    right.set(xscale="log", yscale="log", xlabel="network evaluations per image",
              ylabel="mean |image - converged image|", title=f"distance to the ODE's solution, {ODE_CAPTIONS} captions")
    ticks = sorted({r["steps"] for r in rows})
    for ax in (left, right):
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    right.set_yticks([0.001, 0.002, 0.005, 0.01, 0.02, 0.05], ["0.001", "0.002", "0.005", "0.01", "0.02", "0.05"])
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="pipeline folder (default: ldm-shapes)")
    parser.add_argument("--judge", type=Path, default=None, help="judge folder (default: judge-shapes)")
    parser.add_argument("--images-per-prompt", type=int, default=1, help="images drawn per caption (default 1)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default 3)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="sampler (default ddim)")
    parser.add_argument("--steps", type=int, default=50, help="network calls per image (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--batch-size", type=int, default=128, help="captions per sampling call (default 128)")
    parser.add_argument("--sweep", action="store_true", help="every sampler at several step counts (SWEEP)")
    parser.add_argument("--plot", type=Path, default=None, help="with --sweep: draw the curve into this PNG")
    machine_options(parser)
    args = parser.parse_args()
    device = chosen_device(args)
    ldm = load_ldm(args.checkpoint or checkpoint_dir("ldm-shapes"), device)
    judge = Judge.from_pretrained(args.judge or checkpoint_dir("judge-shapes")).to(device)
    settings = {"device": str(device), "threads": torch.get_num_threads(), "guidance_scale": args.guidance_scale,
                "images_per_prompt": args.images_per_prompt}
    if not args.sweep:
        figures = measure(ldm, judge, args.sampler, args.steps, args.guidance_scale, args.seed,
                          args.images_per_prompt, args.batch_size)
        report({**settings, "sampler": args.sampler, "steps": args.steps, **figures}, args.json)
        return
    rows = []
    reference = _ode_images(ldm, "dpm++", ODE_REFERENCE_STEPS, args.guidance_scale, args.seed)
    for sampler, step_counts in SWEEP.items():
        for steps in step_counts:
            f = measure(ldm, judge, sampler, steps, args.guidance_scale, args.seed, args.images_per_prompt,
                        args.batch_size)
            seen, held = f["train_captions"], f["heldout_captions"]
            rows.append({"sampler": sampler, "steps": steps, "train_all": f["train_all"],
                         "heldout_all": f["heldout_all"],
                         "all_right": (f["train_all"] * seen + f["heldout_all"] * held) / (seen + held),
                         "valid": (f["train_valid"] * seen + f["heldout_valid"] * held) / (seen + held),
                         "seconds_per_image": f["train_seconds_per_image"],
                         "ode_error": ode_error(ldm, sampler, steps, reference, args.guidance_scale, args.seed)})
            print(f"{sampler:6s} {steps:4d} steps: seen {f['train_all']:.1%}, held-out {f['heldout_all']:.1%}, "
                  f"valid {rows[-1]['valid']:.1%}, distance to the ODE's solution {rows[-1]['ode_error']:.4f}, "
                  f"{f['train_seconds_per_image']:.3f} s per image", flush=True)
    if args.plot:
        plot_sweep(rows, args.plot)
    report({**settings, "sweep": rows}, args.json)


if __name__ == "__main__":
    main()
