"""How much cheaper is diffusion in the autoencoder's latent space? Pixel space against latent space, one machine.

Two comparisons, each phase in a fresh process so that its peak memory is its own:

1. **The same UNet** (``UNetConfig.small()``, the shipped pixel model's architecture) on 3x32x32 pixels and on
   4x8x8 latents: training images/s (batch 64, AdamW) and seconds per sample (50 DDIM steps, plus decoding for
   the latent model). The latents are assumed cached (``tinyldm.training.latent_cache``), so training never runs the
   encoder; its one-off cost is reported separately.
2. **The shipped models** (``pixel-shapes`` and the text-to-image ``ldm-shapes``, whose UNet is 5x larger): the
   same speed figures, and quality read by the judge on 128 samples each (pixel: valid fraction with 100
   ancestral steps, as its model card; latent: valid fraction and all-four-attributes-right with 50 DDIM steps and
   guidance 3 on random training captions).

Peak memory is the growth of the process's resident set during the phase on a CPU, and
``torch.cuda.max_memory_allocated`` on a GPU.

Usage: ``python benchmarks/pixel_vs_latent.py [--threads 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch
from report import report  # benchmarks/report.py: scripts run from here, so it imports as a sibling

BATCH = 64


def _peak_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # Linux reports KiB


def _phase(kind: str, phase: str, steps: int, threads: int | None, device_name: str, queue) -> None:
    """Run one (model, phase) pair and put {"rate": ..., "memory": ..., extra figures} on the queue."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tinyldm.diffusion import diffusion_loss
    from tinyldm.evaluation.judge import Judge
    from tinyldm.evaluation.metrics import caption_accuracy, judge_images
    from tinyldm.jobs.ldm import load_ldm
    from tinyldm.jobs.pixel import load_pixel_model
    from tinyldm.pretrained import checkpoint_dir
    from tinyldm.sampling import sample
    from tinyldm.schedule import NoiseSchedule
    from tinyldm.text import shapes_captions
    from tinyldm.unet import UNet, UNetConfig

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    gen = torch.Generator(device).manual_seed(0)
    ldm = load_ldm(checkpoint_dir("ldm-shapes"), device) if kind.startswith("latent") else None
    if kind == "pixel":
        unet, schedule, _ = load_pixel_model(checkpoint_dir("pixel-shapes"), device)
        shape = (3, 32, 32)
    elif kind == "latent-same":
        unet = UNet(replace(UNetConfig.small(), in_channels=4, out_channels=4)).to(device)
        schedule, shape = NoiseSchedule.scaled_linear(1000).to(device), (4, 8, 8)
    else:  # the shipped text-to-image pipeline
        unet, schedule, shape = ldm.unet, ldm.schedule, tuple(ldm.latent_shape)
    captions = shapes_captions()
    prompts = [captions[int(i)] for i in torch.randint(0, len(captions), (128,), generator=torch.Generator())]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_bytes(device)
    result: dict[str, float] = {}
    start = time.perf_counter()
    if phase == "train":
        params = list(unet.parameters()) + (list(ldm.text_encoder.parameters()) if kind == "latent-shipped" else [])
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        x0 = torch.randn(BATCH, *shape, generator=gen, device=device)
        for k in range(steps + 1):
            if k == 1:  # the first step warms up allocators and kernels
                start = time.perf_counter()
            if kind == "latent-shipped":
                ldm.unet.train()
                loss = ldm.training_loss(x0, prompts[:BATCH], p_uncond=0.1, generator=gen)
            else:
                unet.train()
                loss = diffusion_loss(unet, x0, schedule, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        result["rate"] = steps * BATCH / (time.perf_counter() - start)
    elif phase == "encode":
        from tinyldm.data.shapes import shapes_tensor

        images = shapes_tensor(1024, 32, seed=0).to(device)
        with torch.no_grad():
            start = time.perf_counter()
            ldm.encode_images(images)
        result["rate"] = images.shape[0] / (time.perf_counter() - start)
    else:  # sample (and judge)
        unet.eval()
        judge = Judge.from_pretrained(checkpoint_dir("judge-shapes")).to(device)
        with torch.no_grad():
            if kind == "pixel":
                images = sample(unet, (128, *shape), schedule, "ddpm", steps=100, generator=gen, clip_x0=True,
                                     progress=False)
                result["valid"] = judge_images(judge, images).valid.float().mean().item()
                start = time.perf_counter()
                sample(unet, (BATCH, *shape), schedule, "ddim", steps=50, generator=gen, clip_x0=True, progress=False)
            elif kind == "latent-same":
                start = time.perf_counter()
                z = sample(unet, (BATCH, *shape), schedule, "ddim", steps=50, generator=gen, progress=False)
                ldm.decode_latents(z)
            else:
                images = ldm.sample(prompts, steps=50, guidance_scale=3.0, generator=gen, progress=False)
                accuracy = caption_accuracy(judge, images, prompts)
                result["valid"], result["all_right"] = accuracy["valid"], accuracy["all"]
                start = time.perf_counter()
                ldm.sample(prompts[:BATCH], steps=50, guidance_scale=3.0, generator=gen, progress=False)
        result["rate"] = (time.perf_counter() - start) / BATCH  # seconds per image
    result["memory"] = _peak_bytes(device) - base
    result["parameters"] = float(sum(p.numel() for p in unet.parameters()))
    queue.put(result)


def run(kind: str, phase: str, steps: int, threads: int | None, device: str) -> dict[str, float]:
    """One phase in a fresh process (spawned, so its memory peak starts from nothing)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_phase, args=(kind, phase, steps, threads, device, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    figures: dict[str, object] = {"device": args.device, "threads": args.threads or torch.get_num_threads(),
                                  "batch": BATCH}
    for kind in ("pixel", "latent-same", "latent-shipped"):
        train = run(kind, "train", args.steps, args.threads, args.device)
        sample = run(kind, "sample", args.steps, args.threads, args.device)
        figures[f"{kind}_unet_parameters"] = int(train["parameters"])
        figures[f"{kind}_train_images_per_s"] = train["rate"]
        figures[f"{kind}_train_peak_MB"] = train["memory"] / 2**20
        figures[f"{kind}_sample_s_per_image"] = sample["rate"]
        figures[f"{kind}_sample_peak_MB"] = sample["memory"] / 2**20
        for name in ("valid", "all_right"):
            if name in sample:
                figures[f"{kind}_{name}"] = sample[name]
    figures["encode_images_per_s"] = run("latent-same", "encode", args.steps, args.threads, args.device)["rate"]
    for kind in ("latent-same", "latent-shipped"):
        pixel_train, pixel_sample = figures["pixel_train_images_per_s"], figures["pixel_sample_s_per_image"]
        figures[f"{kind}_train_speedup"] = figures[f"{kind}_train_images_per_s"] / pixel_train
        figures[f"{kind}_sample_speedup"] = pixel_sample / figures[f"{kind}_sample_s_per_image"]
    report(figures, args.json)


if __name__ == "__main__":
    main()
