"""Lesson 5's exercise 4 for several scale factors: which scales of the latents let the tiny run learn.

The exercise's checker (``tinyldm.exercises.latent.check_latent_scale``) trains lesson 5's tiny unconditional
UNet for ``SCALE_RUN_STEPS`` steps on ``s * raw``, the Shapes autoencoder's unscaled latents of the lesson's 2,048
training images multiplied by ``s``. It then draws ``SCALE_RUN_SAMPLES`` latents with 50 ancestral steps from
N(0, I), divides them by ``s``, decodes them, and passes when the judge calls at least ``SCALE_RUN_VALID`` of them
valid. This script runs that very experiment (``scale_run_images``, the checker's defaults, seed 0) for each ``s``
of ``--scales``, so only the scale differs between runs. It records the judged-valid share with its Wilson 95%
interval, whether the checker would pass, the training CPU seconds, and the first 16 samples of each run.

The runs go in ``--workers`` processes at once, one thread each (about a minute of CPU each).

Usage: ``python benchmarks/latent_scale.py [--scales 0.1 0.3 unit 1.5 3] [--workers 2] [--json F]``, where
``unit`` is the scale that gives the latents unit variance, 1 / std. The course's figures (lesson 5, exercise 4)
are ``data/measurements/latent_scale.json`` and the grid beside it, written by
``--json data/measurements/latent_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
from pathlib import Path

import torch

SEED = 0  # lesson 5's seed: its training images and the checker's run


def _lesson_raw_latents():
    """Lesson 5's autoencoder and its unscaled latents of the 2,048 training images."""
    from tinyldm.data.shapes import shapes_tensor
    from tinyldm.jobs.autoencoder import load_autoencoder
    from tinyldm.pretrained import checkpoint_dir
    from tinyldm.training.latent_cache import encode_dataset

    autoencoder = load_autoencoder(checkpoint_dir("autoencoder-shapes"), "cpu")
    z0 = encode_dataset(autoencoder, shapes_tensor(2048, 32, seed=SEED))
    return autoencoder, z0 / autoencoder.scale_factor.item()


def _run(scale: float) -> dict:
    torch.set_num_threads(1)
    from tinyldm.evaluation.judge import Judge
    from tinyldm.evaluation.metrics import judge_images
    from tinyldm.evaluation.proportion import wilson_interval
    from tinyldm.exercises.latent import SCALE_RUN_VALID, scale_run_images
    from tinyldm.pretrained import checkpoint_dir

    autoencoder, raw = _lesson_raw_latents()
    judge = Judge.from_pretrained(checkpoint_dir("judge-shapes"))
    start = time.process_time()
    images = scale_run_images(scale, raw, autoencoder, seed=SEED)
    seconds = time.process_time() - start
    valid = judge_images(judge, images).valid
    rate = valid.float().mean().item()
    low, high = wilson_interval(rate, valid.numel())
    print(f"s = {scale:.3g}: judged valid {rate:.1%} ({low:.0%}-{high:.0%}) after {seconds:.0f} CPU s", flush=True)
    return {"s": scale, "latent_std": scale * raw.std().item(), "valid_fraction": rate, "valid_ci95": [low, high],
            "samples": valid.numel(), "passes": rate >= SCALE_RUN_VALID, "cpu_seconds": seconds,
            "first_16": images[:16]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["0.1", "0.3", "unit", "1.5", "3"],
                        help="scale factors to try; 'unit' is 1 / std of the raw latents")
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here, and a grid beside them")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    from tinyldm.exercises.latent import SCALE_RUN_SAMPLES, SCALE_RUN_STEPS, SCALE_RUN_VALID

    torch.set_num_threads(1)
    _, raw = _lesson_raw_latents()  # for the unit scale
    unit = 1 / raw.std().item()
    try:
        scales = [unit if value == "unit" else float(value) for value in args.scales]
    except ValueError:
        parser.error(f"--scales takes numbers or 'unit', got {args.scales}")
    if not all(1e-3 <= s <= 1e3 for s in scales):
        parser.error(f"every scale must lie in [0.001, 1000], as the checker asks; got {scales}")
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(min(args.workers, len(scales))) as pool:
        runs = pool.map(_run, scales)
    figures = {"steps": SCALE_RUN_STEPS, "samples": SCALE_RUN_SAMPLES, "pass_at": SCALE_RUN_VALID, "seed": SEED,
               "unit_scale": unit, "sampler": "ddpm (ancestral), 50 steps",
               "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread per run",
               "wall_minutes": (time.time() - started) / 60,
               "runs": [{k: v for k, v in run.items() if k != "first_16"} for run in runs]}
    print(f"\n{len(runs)} runs took {figures['wall_minutes']:.1f} minutes of wall time")
    for run in figures["runs"]:
        low, high = run["valid_ci95"]
        print(f"s = {run['s']:5.3g} (latent std {run['latent_std']:5.2f}): valid {run['valid_fraction']:6.1%} "
              f"({low:.0%}-{high:.0%})  {'passes' if run['passes'] else 'fails'}")
    if args.json:
        from tinyldm.viz.images import save_grid

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        grid = args.json.with_name(f"{args.json.stem}_samples.png")  # one row of 16 samples per scale
        save_grid(torch.cat([run["first_16"] for run in runs]), grid, nrow=16, scale=2)
        print(f"wrote {args.json} and {grid}")


if __name__ == "__main__":
    main()
