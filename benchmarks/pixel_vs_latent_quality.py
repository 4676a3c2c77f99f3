"""Pixel space against latent space at equal training time: the same UNet, the same objective, the same CPU budget.

Rombach et al. 2022 (Fig. 6, Tab. 6) compare diffusion in pixel space (f = 1) with latent spaces of growing f, at
the same compute, and plot sample quality against training progress. This is that comparison in miniature, with
only the space differing:

- **network:** ``UNetConfig.small()``, the shipped pixel model's architecture, with 3 input and output channels on
  3x32x32 pixels or 4 on the 4x8x8 latents of the shipped Shapes autoencoder (``autoencoder-shapes``, f = 4);
- **objective and settings:** eps prediction with latent diffusion's scaled-linear schedule (T = 1000; with the
  pixel model's cosine schedule the latent model's samples diverged: the cosine's last steps leave almost no signal,
  and nothing clips a latent the way pixels are clipped to [-1, 1]) and the ``small`` pixel preset's
  loop settings (batch 64, AdamW at a constant 8e-4 after 200 warm-up steps, EMA 0.999, seed 0), through
  ``tinyldm.training.diffusion_loop.train_diffusion``, the loop every shipped model was trained with;
- **data:** the same 10,000 Shapes training images (train split, seed 0); the latent run encodes them once, and
  that encoding counts against its budget;
- **budget:** the same CPU seconds of training for each (``time.process_time`` of a one-thread process, so that
  two runs side by side on a shared machine are charged only for their own work), checked at four points of it.

At each point the EMA model draws ``--samples`` images with 100 ancestral steps (seed 1; the latent ones decoded),
and the shipped judge scores them against Shapes test images: the share judged valid, with its Wilson 95%
interval, the judge-feature FID, and the mean total-variation distance of the attribute frequencies. Sampling
time is not charged to the budget. The two runs go in two processes at once, one thread each.

Usage: ``python benchmarks/pixel_vs_latent_quality.py [--minutes 10] [--samples 256] [--out DIR] [--json F]``.
The course's figures (lesson 5) are ``data/measurements/pixel_vs_latent_quality.json`` and, beside it, 16 images
of each model at the end of its budget, written by ``--json data/measurements/pixel_vs_latent_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from queue import Empty

import torch

MARKS = (0.2, 0.4, 0.7, 1.0)  # the points of the budget where quality is measured
SAMPLE_STEPS = 100  # ancestral steps per sample: the pixel model's best setting (lesson 3)
PROBE_STEPS = 20  # steps that measure a run's speed before its first real chunk


def _run(space: str, budget: float, samples: int, out: Path, queue) -> None:
    """Train one space's model to each mark of ``budget`` CPU seconds and score it there; put the curve on the
    queue."""
    torch.set_num_threads(1)
    from tinyldm.data.shapes import shapes_tensor
    from tinyldm.evaluation.judge import Judge
    from tinyldm.evaluation.metrics import evaluate_samples
    from tinyldm.evaluation.proportion import wilson_interval
    from tinyldm.jobs.autoencoder import load_autoencoder
    from tinyldm.jobs.pixel import PIXEL_PRESETS
    from tinyldm.pretrained import checkpoint_dir
    from tinyldm.runtime import seeded
    from tinyldm.sampling import sample
    from tinyldm.schedule import NoiseSchedule
    from tinyldm.training.diffusion_loop import train_diffusion
    from tinyldm.unet import UNet, UNetConfig

    preset = PIXEL_PRESETS["small"]
    images = shapes_tensor(preset.num_images, 32, seed=0)
    real = shapes_tensor(2 * samples, 32, seed=1, split="test")
    judge = Judge.from_pretrained(checkpoint_dir("judge-shapes"))
    start = time.process_time()
    autoencoder = None
    if space == "latent":
        autoencoder = load_autoencoder(checkpoint_dir("autoencoder-shapes"))
        with torch.no_grad():
            data = torch.cat([autoencoder.latents(images[i:i + 500]) for i in range(0, len(images), 500)])
    else:
        data = images
    spent = time.process_time() - start  # the encoding is part of the latent run's bill
    encode_seconds = spent
    config = replace(UNetConfig.small(), in_channels=data.shape[1], out_channels=data.shape[1])
    with seeded(0):
        model = UNet(config)
    schedule = NoiseSchedule.scaled_linear(1000)  # latent diffusion's: the cosine's last steps derail latents
    train = replace(preset.train, steps=10 ** 7, checkpoint_every=0, sample_every=0)  # constant lr: no end needed
    folder = out / space
    shutil.rmtree(folder, ignore_errors=True)
    done, curve = 0, []
    for mark in MARKS:
        target = mark * budget
        while spent < target or not done:  # the latent run's encoding may already pass the first mark
            rate = done / max(spent - encode_seconds, 1e-9) if done else 0.0
            chunk = PROBE_STEPS if not done else max(1, round((target - spent) * rate))
            tick = time.process_time()
            result = train_diffusion(model, data, schedule, train, out=folder, resume=done > 0, progress=False,
                                     until=done + chunk)
            spent += time.process_time() - tick
            done += chunk
        with torch.no_grad():
            generator = torch.Generator().manual_seed(1)
            drawn = sample(result.ema_model.eval(), (samples, *data.shape[1:]), schedule, "ddpm", SAMPLE_STEPS,
                           generator=generator, progress=False)
            if autoencoder is not None:
                drawn = torch.cat([autoencoder.decode_latents(drawn[i:i + 256]) for i in range(0, samples, 256)])
        scores = evaluate_samples(judge, drawn.clamp(-1, 1), real)
        low, high = wilson_interval(scores["valid_fraction"], samples)
        curve.append({"cpu_seconds": spent, "steps": done, "images_seen": done * train.batch_size,
                      "valid_fraction": scores["valid_fraction"], "valid_ci95": [low, high], "fid": scores["fid"],
                      "fid_real_vs_real": scores["fid_real_vs_real"], "tv_mean": scores["tv_mean"]})
        print(f"{space:6s} {spent:7.0f} CPU s  {done:6d} steps  valid {scores['valid_fraction']:6.1%} "
              f"({low:.0%}-{high:.0%})  FID {scores['fid']:7.1f}", flush=True)
        torch.save(drawn[:16], out / f"{space}_samples.pt")  # the last point's first 16 images stay
    queue.put((space, {"encode_cpu_seconds": encode_seconds, "unet": asdict(config),
                       "parameters": sum(p.numel() for p in model.parameters()), "curve": curve}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="CPU minutes of training for each space")
    parser.add_argument("--samples", type=int, default=200, help="images drawn at each point of the budget")
    parser.add_argument("--out", type=Path, default=Path("runs/pixel-vs-latent"), help="run folders and samples")
    parser.add_argument("--json", type=Path, default=None, help="write the curves here")
    args = parser.parse_args()
    if args.minutes <= 0 or args.samples < 4:
        parser.error(f"need --minutes > 0 and --samples >= 4, got {args.minutes} and {args.samples}")
    args.out.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    started = time.time()
    workers = [context.Process(target=_run, args=(space, 60 * args.minutes, args.samples, args.out, queue))
               for space in ("pixel", "latent")]
    for worker in workers:
        worker.start()
    results = {}
    while len(results) < len(workers):
        try:
            space, figures = queue.get(timeout=5)
            results[space] = figures
        except Empty:
            if failed := [w for w in workers if w.exitcode]:
                for worker in workers:
                    worker.terminate()
                raise SystemExit(f"a run failed (exit code {failed[0].exitcode}); see its error above") from None
    for worker in workers:
        worker.join()
    figures = {"budget_cpu_minutes": args.minutes, "samples_per_point": args.samples, "sample_steps": SAMPLE_STEPS,
               "sampler": "ddpm (ancestral)", "schedule": "scaled_linear, T = 1000", "marks": list(MARKS),
               "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread per run",
               "wall_minutes": (time.time() - started) / 60, **results}
    print(f"\nboth runs took {figures['wall_minutes']:.1f} minutes of wall time")
    for space in ("pixel", "latent"):
        last = results[space]["curve"][-1]
        print(f"{space:6s} after {last['cpu_seconds'] / 60:.1f} CPU min ({last['steps']} steps): valid "
              f"{last['valid_fraction']:.1%} [{last['valid_ci95'][0]:.1%}, {last['valid_ci95'][1]:.1%}], "
              f"FID {last['fid']:.1f}")
    if args.json:
        from tinyldm.viz.images import save_grid

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        for space in ("pixel", "latent"):  # the first 16 images of the last point, beside the figures
            grid = args.json.with_name(f"{args.json.stem}_{space}_samples.png")
            save_grid(torch.load(args.out / f"{space}_samples.pt"), grid, nrow=8, scale=2)
            print(f"wrote {grid}")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
