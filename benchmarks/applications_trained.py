"""The trained applications of lesson 8, measured: inpainting and 4x super-resolution by concat conditioning.

Inpainting (``--task inpaint``): held-out Shapes test images (split "test", never trained on); the object's box,
widened by 2 pixels, is the hole, and the prompt asks for a different colour and shape at the same size and place
(never a held-out colour-shape pair). Each method's output is pasted into the kept pixels; the shipped judge
(data/checkpoints/judge-shapes) then reads the picture and counts it right when colour, shape, size and position
all match the new prompt. Also: the raw output's error outside the hole (what the paste hides), the seam error in a
2-pixel band just inside the hole's edge (background there, in the original), network calls and seconds per image.
The trained model (data/checkpoints/ldm-shapes-inpaint) is compared with training-free blended inpainting
(``tinyldm.inpainting.inpaint``) on the text-to-image model it was fine-tuned from.

Super-resolution (``--task sr``): held-out test images downsampled 4x (bicubic, antialiased) to 8x8 and brought
back to 32x32 by bicubic interpolation, by the regression baseline and by the diffusion model; PSNR against the
32x32 original, the judge's agreement with the original's caption, and the high-frequency ratio (1 = as sharp as
the originals, below 1 = blurred; ``tinyldm.evaluation.spectrum``). The autoencoder's own reconstruction is the
ceiling of both latent models.

Super-resolution on photo crops (``--task sr --data photos``): crops of the test photographs (chelsea, gravel,
rocket; ``tinyldm.data.photos``, seed 1 as ``benchmarks/autoencoder.py --data photos`` makes them), which no photo
model trained on, through data/checkpoints/photos-sr and photos-sr-regression. No judge there: PSNR, LPIPS
(``tinyldm.perceptual``), the high-frequency ratio and the classifier two-sample test against the real crops
(``tinyldm.evaluation.two_sample``: 50% = a fresh classifier cannot tell the outputs from the originals).

Usage: ``python benchmarks/applications_trained.py --task inpaint|sr [--data shapes|photos] [--num-images 128]
[--threads 1] [--json F] [--save DIR]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from report import chosen_device, machine_options, report  # benchmarks/report.py, a sibling

from tinyldm.concat_conditioning import ConcatConditionedLDM, downsample_images
from tinyldm.data.masks import object_holes
from tinyldm.data.photos import TEST_PHOTOS, PhotoCrops
from tinyldm.data.shapes import COLORS, HELD_OUT, SHAPES, Shapes, caption
from tinyldm.evaluation.judge import Judge
from tinyldm.evaluation.metrics import caption_accuracy, psnr
from tinyldm.evaluation.spectrum import high_frequency_ratio
from tinyldm.evaluation.two_sample import classifier_two_sample_test
from tinyldm.jobs.ldm import load_ldm
from tinyldm.perceptual import LPIPS
from tinyldm.pretrained import checkpoint_dir

PHOTO_TEST_SEED = 1  # the photo test crops of benchmarks/autoencoder.py --data photos (evaluate_autoencoder's seed)
MARGIN = 2  # pixels of background around the object in the hole
BAND = 2  # width of the seam band inside the hole's edge


def test_images(n: int, seed: int = 0) -> tuple[torch.Tensor, list[dict[str, str]]]:
    dataset = Shapes(n, split="test", seed=seed)
    items = [dataset[i] for i in range(n)]
    return torch.stack([item["image"] for item in items]), [item["attributes"] for item in items]


def new_captions(attributes: list[dict[str, str]], seed: int = 0) -> list[str]:
    """A different colour and shape at the same size and place, drawn from a seed; no held-out pair."""
    g = torch.Generator().manual_seed(seed)
    captions = []
    for a in attributes:
        choices = [(c, s) for c in COLORS for s in SHAPES
                   if c != a["color"] and s != a["shape"] and (c, s) not in HELD_OUT]
        color, shape = choices[int(torch.randint(len(choices), (1,), generator=g))]
        captions.append(caption({**a, "color": color, "shape": shape}))
    return captions


def inner_band(mask: torch.Tensor) -> torch.Tensor:
    """The hole's pixels within BAND of its edge: mask minus the mask eroded by BAND."""
    eroded = -F.max_pool2d(-mask, 2 * BAND + 1, stride=1, padding=BAND)
    return mask - eroded


def measure_inpainting(args: argparse.Namespace, device: torch.device, judge: Judge) -> dict[str, float]:
    from tinyldm.inpainting import inpaint  # the training-free method of the same lesson

    images, attributes = test_images(args.num_images)
    mask, prompts = object_holes(images, MARGIN), new_captions(attributes)
    band, outside = inner_band(mask), 1 - mask
    trained = ConcatConditionedLDM.from_pretrained(args.inpaint_checkpoint).to(device)
    base = load_ldm(args.base_checkpoint, device)
    figures: dict[str, float] = {"num_images": len(prompts), "hole_fraction": mask.mean().item()}
    for method in ("trained", "blend"):
        generator = torch.Generator(device).manual_seed(args.seed)
        start = time.perf_counter()
        if method == "trained":  # sampled and pasted by hand, to measure what the paste hides
            c = trained.inpainting_conditioning(images, mask)
            raw = trained.sample(prompts, c, steps=args.steps, sampler=args.sampler, guidance_scale=args.guidance,
                                 generator=generator, progress=False).cpu()
            result = mask * raw + outside * images
            figures[f"{method}_outside_mae_before_paste"] = ((raw - images).abs() * outside).sum().item() / (
                3 * outside.sum().item())
        else:
            result = inpaint(base, images, mask, prompts, steps=args.steps, sampler=args.sampler,
                             guidance_scale=args.guidance, generator=generator, progress=False).cpu()
        seconds = time.perf_counter() - start
        accuracy = caption_accuracy(judge, result, prompts)
        figures[f"{method}_all_four_right"] = accuracy["all"]
        figures[f"{method}_color_right"] = accuracy["color"]
        figures[f"{method}_shape_right"] = accuracy["shape"]
        figures[f"{method}_valid"] = accuracy["valid"]
        figures[f"{method}_outside_max_after_paste"] = ((result - images).abs() * outside).max().item()
        figures[f"{method}_seam_mae"] = ((result - images).abs() * band).sum().item() / (3 * band.sum().item())
        figures[f"{method}_network_calls_per_image"] = args.steps * (2 if args.guidance not in (0, 1) else 1)
        figures[f"{method}_seconds_per_image"] = seconds / len(prompts)
        if args.save:
            from tinyldm.viz.images import save_grid
            save_grid(torch.cat([images[:8], masked(images[:8], mask[:8]), result[:8]]), args.save / f"{method}.png",
                      nrow=8, scale=3)
    return figures


def masked(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return images * (1 - mask)


def measure_sr(args: argparse.Namespace, device: torch.device, judge: Judge | None) -> dict[str, float]:
    """Shapes (with the judge) or photo crops (``judge`` None: LPIPS and the two-sample test instead)."""
    if judge is not None:
        images, attributes = test_images(args.num_images)
        captions = [caption(a) for a in attributes]
        lpips = None
    else:
        crops = PhotoCrops(args.num_images, 32, seed=PHOTO_TEST_SEED, split="test")  # photos_tensor's crops
        items = [crops[i] for i in range(args.num_images)]
        images, captions = torch.stack([item["image"] for item in items]), None
        photos = [item["attributes"]["photo"] for item in items]
        lpips = LPIPS().to(device)
    low = downsample_images(images)
    diffusion = ConcatConditionedLDM.from_pretrained(args.sr_checkpoint).to(device)
    regression = ConcatConditionedLDM.from_pretrained(args.regression_checkpoint).to(device)
    outputs: dict[str, tuple[torch.Tensor, float, int]] = {}
    start = time.perf_counter()
    outputs["bicubic"] = (F.interpolate(low, size=images.shape[-2:], mode="bicubic", align_corners=False)
                          .clamp(-1, 1), time.perf_counter() - start, 0)
    start = time.perf_counter()
    outputs["autoencoder"] = (diffusion.decode_latents(diffusion.encode_images(images)).cpu(),
                              time.perf_counter() - start, 0)
    start = time.perf_counter()
    outputs["regression"] = (regression.sample(None, regression.sr_conditioning(low)).cpu(),
                             time.perf_counter() - start, 1)
    for sampler, steps, eta in (("ddim", args.steps, 0.0), ("ddpm", args.steps, 1.0)):
        generator = torch.Generator(device).manual_seed(args.seed)
        start = time.perf_counter()
        out = diffusion.sample(None, diffusion.sr_conditioning(low), steps=steps, sampler=sampler, eta=eta,
                               generator=generator, progress=False).cpu()
        outputs[f"diffusion_{sampler}{steps}"] = (out, time.perf_counter() - start, steps)
    n = images.shape[0]
    figures: dict[str, float] = {"num_images": n}
    for name, (out, seconds, calls) in outputs.items():
        if judge is not None:
            figures[f"{name}_psnr"] = psnr(out, images).mean().item()
            figures[f"{name}_judge_agrees"] = caption_accuracy(judge, out, captions)["all"]
        else:  # photos: scored as saved pictures, in [-1, 1], like benchmarks/autoencoder.py's reconstructions
            out = out.clamp(-1, 1)
            values = psnr(out, images)  # (N,)
            distances = torch.cat([lpips(images[i:i + 256].to(device), out[i:i + 256].to(device)).cpu()
                                   for i in range(0, n, 256)])  # (N,)
            figures[f"{name}_psnr"], figures[f"{name}_lpips"] = values.mean().item(), distances.mean().item()
            with torch.inference_mode(False):  # the test trains a classifier: on normal copies of the images
                test = classifier_two_sample_test(images.clone(), out.clone(), seed=args.seed)
            figures[f"{name}_c2st_accuracy"] = test.accuracy
            for photo in TEST_PHOTOS:  # fur, a stochastic texture, a smooth sky: each its own row
                kept = torch.tensor([p == photo for p in photos])
                figures[f"{name}_{photo}_psnr"] = values[kept].mean().item()
                figures[f"{name}_{photo}_lpips"] = distances[kept].mean().item()
                figures[f"{name}_{photo}_hf_ratio"] = high_frequency_ratio(images[kept], out[kept])
        figures[f"{name}_hf_ratio"] = high_frequency_ratio(images, out)
        figures[f"{name}_network_calls"] = calls
        figures[f"{name}_seconds_per_image"] = seconds / n
    if args.save:
        from tinyldm.viz.images import save_grid
        up = F.interpolate(low[:8], size=images.shape[-2:], mode="nearest")
        if judge is not None:
            rows = [images[:8], up] + [outputs[k][0][:8] for k in outputs if k != "autoencoder"]
            save_grid(torch.cat(rows), args.save / "sr.png", nrow=8, scale=3)
        else:  # one crop a row: low | bicubic | regression | diffusion (ancestral) | original
            columns = [up, outputs["bicubic"][0][:8], outputs["regression"][0][:8],
                       outputs[f"diffusion_ddpm{args.steps}"][0][:8], images[:8]]
            save_grid(torch.stack(columns, 1).flatten(0, 1), args.save / "comparison.png", nrow=len(columns),
                      scale=4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("inpaint", "sr"), required=True)
    parser.add_argument("--data", choices=("shapes", "photos"), default="shapes",
                        help="super-resolution's test pictures: Shapes (default) or photo crops")
    parser.add_argument("--num-images", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="ddim", help="inpainting's sampler (default ddim)")
    parser.add_argument("--guidance", type=float, default=3.0, help="inpainting's guidance scale (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inpaint-checkpoint", type=Path, default=None)
    parser.add_argument("--base-checkpoint", type=Path, default=None)
    parser.add_argument("--sr-checkpoint", type=Path, default=None)
    parser.add_argument("--regression-checkpoint", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None, help="folder for example grids")
    machine_options(parser)
    args = parser.parse_args()
    if args.data == "photos" and args.task != "sr":
        parser.error("--data photos measures super-resolution only: use --task sr")
    prefix = "photos-sr" if args.data == "photos" else "ldm-shapes-sr"
    defaults = {"inpaint": {"inpaint_checkpoint": "ldm-shapes-inpaint", "base_checkpoint": "ldm-shapes"},
                "sr": {"sr_checkpoint": prefix, "regression_checkpoint": f"{prefix}-regression"}}
    for name, shipped in defaults[args.task].items():
        setattr(args, name, getattr(args, name) or checkpoint_dir(shipped))
    device = chosen_device(args)
    judge = None if args.data == "photos" else Judge.from_pretrained(checkpoint_dir("judge-shapes")).to(device)
    with torch.inference_mode():
        figures = measure_inpainting(args, device, judge) if args.task == "inpaint" else measure_sr(args, device,
                                                                                                   judge)
    report(figures, args.json)


if __name__ == "__main__":
    main()
