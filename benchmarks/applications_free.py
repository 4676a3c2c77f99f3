"""What the training-free editing of lesson 8 costs and how exact it is, on the shipped ldm-shapes model.

DDIM inversion: ``--num-images`` images of Shapes' test split (seed 1) are inverted with their own captions at
guidance 1 and redrawn with deterministic DDIM from the inverted noise, at 50 and 200 steps
(``tinyldm.inversion.invert_images``). Reported: the latent MSE between z0 and its reconstruction (and z0's mean
square, for scale), the PSNR of the redrawn images against the input and against the autoencoder's own
reconstruction (which isolates the inversion's share).

Image to image: ``--edit-images`` test images (seed 0) get prompts that change one attribute (colour, shape or
place; ``tinyldm.data.shapes.changed_captions``), and SDEdit runs at each strength with 20 DDIM steps and seed 0.
Reported per kind and strength: how often the judge reads the prompt (all four attributes, judged valid), and the
mean absolute change per pixel value against the input.

Speed: the wall time of one ``img2img`` call (strength 0.6) and one ``inpaint`` call (a 16x16 box, with and
without RePaint's resampling) on 4 images with the commands' defaults (ancestral, 50 steps, guidance 3), the best of
``--repeats`` after a warm-up.

Usage: ``python benchmarks/applications_free.py [--num-images 16] [--edit-images 64] [--threads 1] [--json F]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from report import chosen_device, machine_options, report  # benchmarks/report.py, a sibling of this script

from tinyldm.cli.parser import EDIT_SAMPLER, EDIT_STEPS
from tinyldm.data.shapes import Shapes, changed_captions
from tinyldm.evaluation.judge import Judge
from tinyldm.evaluation.metrics import caption_errors
from tinyldm.img2img import img2img
from tinyldm.inpainting import box_mask, inpaint
from tinyldm.inversion import invert_images
from tinyldm.jobs.ldm import load_ldm
from tinyldm.pretrained import checkpoint_dir


def test_images(n: int) -> tuple[torch.Tensor, list[str]]:
    data = Shapes(n, size=32, seed=1, split="test")
    items = [data[i] for i in range(n)]
    return torch.stack([item["image"] for item in items]), [item["caption"] for item in items]


def best_seconds(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=16, help="test images to invert (default 16)")
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200], help="inversion steps (default 50 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per editing method (default 3)")
    parser.add_argument("--edit-images", type=int, default=64, help="test images per img2img edit (default 64)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    machine_options(parser)
    args = parser.parse_args()
    device = chosen_device(args)
    ldm = load_ldm(checkpoint_dir("ldm-shapes"), device)
    images, captions = test_images(args.num_images)
    images = images.to(device)
    figures: dict[str, float | int | str] = {"device": str(device), "threads": torch.get_num_threads(),
                                             "images": args.num_images}
    for steps in args.steps:
        result = invert_images(ldm, images, captions, steps, guidance_scale=1.0, progress=False)
        figures[f"inversion {steps} steps: latent MSE"] = result.latent_mse().mean().item()
        figures[f"inversion {steps} steps: z0 mean square"] = result.z0.pow(2).mean().item()
        figures[f"inversion {steps} steps: PSNR vs input (dB)"] = result.psnr().mean().item()
        figures[f"inversion {steps} steps: PSNR vs autoencoder (dB)"] = result.psnr("images_ae").mean().item()
    figures["autoencoder alone: PSNR vs input (dB)"] = (10 * torch.log10(
        4 / (result.images_ae - images).pow(2).flatten(1).mean(1))).mean().item()

    judge = Judge.from_pretrained(checkpoint_dir("judge-shapes")).to(device)
    edit_set = Shapes(args.edit_images, size=32, seed=0, split="test")
    originals = torch.stack([edit_set[i]["image"] for i in range(len(edit_set))]).to(device)
    attributes = [edit_set[i]["attributes"] for i in range(len(edit_set))]
    with torch.inference_mode():
        for key in ("color", "shape", "position"):
            prompts = changed_captions(attributes, key, seed=0)
            for strength in args.strengths:
                out = img2img(ldm, originals, prompts, strength, 20, "ddim",
                              generator=torch.Generator(device).manual_seed(0), progress=False)
                name = f"img2img new {key}, strength {strength}"
                figures[f"{name}: follows the prompt"] = 1 - caption_errors(judge, out, prompts).float().mean().item()
                figures[f"{name}: mean |change|"] = (out - originals).abs().mean().item()

    four, prompts = images[:4], captions[:4]
    with torch.inference_mode():
        figures["img2img, 4 images, strength 0.6 (s)"] = best_seconds(
            lambda: img2img(ldm, four, prompts, 0.6, EDIT_STEPS, EDIT_SAMPLER,
                            generator=torch.Generator(device).manual_seed(0), progress=False), args.repeats)
        mask = box_mask(32, 32, (8, 8, 24, 24))
        for resample in (1, 2):
            figures[f"inpaint, 4 images, 16x16 box, resample {resample} (s)"] = best_seconds(
                lambda: inpaint(ldm, four, mask, prompts, EDIT_STEPS, EDIT_SAMPLER,
                                generator=torch.Generator(device).manual_seed(0), progress=False, resample=resample),
                args.repeats)
    figures["editing sampler"] = f"{EDIT_SAMPLER}, {EDIT_STEPS} steps, guidance 3"
    report(figures, args.json)


if __name__ == "__main__":
    main()
