"""DDPM versus DDIM on the 2-D toy data: wall time and sample quality for 1000, 100, 50, 20 and 10 steps.

Trains the lesson-2 MLP denoiser (seeded, 20-30 s on one CPU thread), then samples with every sampler from
the same starting noise and compares the samples with fresh draws of the true data:

    DDPM      ancestral sampling, Ho et al. 2020, Algorithm 2 (always all T steps)
    DDIM      deterministic, eta = 0 (Song et al. 2021, Eq. 12)
    DDIM e=1  the same strided schedule with eta = 1: ancestral sampling on a subsequence (DDPM-like)

Each sampler runs ``--repeats`` times, each time from new starting noise; the time is the best run. Quality
is measured on all runs pooled (repeats x samples points): the sliced 2-Wasserstein distance (in data units,
lower is better) to a reference draw of 100,000 points, and MMD^2 of the first run to a reference of its size.
Pooling matters: with 5000 points the distance of a single run wobbles by about 0.01, as much as the
differences being measured. The "data vs data" row is the floor: fresh draws of the true distribution, as many
points as a pooled sampler, are this far from the reference. Target: DDIM with 50 steps at least 15x faster than
DDPM with 1000, at a sliced Wasserstein distance within 1.5x of DDPM's.

    python benchmarks/ddim_vs_ddpm.py [--kind moons] [--samples 5000] [--json out.json] [--strict]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tinyldm.data.toy import toy_2d
from tinyldm.evaluation.distances import mmd2, sliced_wasserstein
from tinyldm.mlp import MLPConfig, MLPDenoiser, fit
from tinyldm.sampling import ddim_sample, ddpm_sample
from tinyldm.schedule import NoiseSchedule

STEPS = (1000, 100, 50, 20, 10)


def _runs(fn, repeats: int) -> tuple[list[torch.Tensor], float]:
    """Call ``fn(repeat)`` for each repeat; return the outputs and the best wall time."""
    best, outs = float("inf"), []
    for repeat in range(repeats):
        start = time.perf_counter()
        outs.append(fn(repeat))
        best = min(best, time.perf_counter() - start)
    return outs, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="moons", choices=["moons", "swiss_roll", "gaussians"])
    parser.add_argument("--samples", type=int, default=5000, help="points per sampler run and in the reference")
    parser.add_argument("--train-steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=4,
                        help="runs per sampler, each from new noise: best time, distance of all runs pooled")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this small MLP)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when the target is missed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    schedule = NoiseSchedule.linear(1000)
    model = MLPDenoiser(MLPConfig())
    start = time.perf_counter()
    losses = fit(model, toy_2d(8192, args.kind, seed=args.seed), schedule, steps=args.train_steps,
                 generator=torch.Generator().manual_seed(args.seed), progress=False)
    train_s = time.perf_counter() - start
    print(f"trained MLPDenoiser ({sum(p.numel() for p in model.parameters()):,} parameters) on {args.kind}: "
          f"{args.train_steps} steps in {train_s:.1f} s, loss {sum(losses[:100]) / 100:.3f} -> "
          f"{sum(losses[-500:]) / 500:.3f}")

    reference = toy_2d(100_000, args.kind, seed=args.seed + 1)
    shape = (args.samples, 2)

    def quality(outs: list[torch.Tensor]) -> tuple[float, float]:
        pooled = torch.cat(outs)  # (repeats * samples, 2)
        sw = sliced_wasserstein(pooled, reference, num_projections=256, generator=torch.Generator().manual_seed(0))
        # MMD needs N x M kernel matrices: the first run against a reference of its own size.
        return sw.item(), mmd2(outs[0], reference[: args.samples]).item()

    def gen(repeat: int) -> torch.Generator:
        return torch.Generator().manual_seed(args.seed + 2 + repeat)  # run r of every sampler starts from one x_T

    runs = [("DDPM", 1000, lambda r: ddpm_sample(model, shape, schedule, generator=gen(r), progress=False))]
    for steps in STEPS:
        runs.append(("DDIM", steps, lambda r, s=steps: ddim_sample(model, shape, schedule, steps=s, generator=gen(r),
                                                                   progress=False)))
    for steps in STEPS[1:]:
        runs.append(("DDIM e=1", steps, lambda r, s=steps: ddim_sample(model, shape, schedule, steps=s, eta=1.0,
                                                                       generator=gen(r), progress=False)))
    rows = []
    for name, steps, run in runs:
        outs, seconds = _runs(run, args.repeats)
        sw, mmd = quality(outs)
        rows.append({"sampler": name, "steps": steps, "seconds": seconds, "sliced_w2": sw, "mmd2": mmd})
    floor_sw, floor_mmd = quality([toy_2d(args.samples, args.kind, seed=args.seed + 100 + r)
                                   for r in range(args.repeats)])

    ddpm = rows[0]
    print(f"\n{args.samples} samples per run, {args.repeats} runs "
          f"(quality on all {args.repeats * args.samples} pooled), "
          f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or 'cpu'}")
    # steps = network evaluations per sample
    print(f"{'sampler':<10}{'steps':>6}{'time (s)':>10}{'speedup':>9}{'sliced W2':>11}{'vs DDPM':>9}{'MMD^2':>10}")
    for row in rows:
        print(f"{row['sampler']:<10}{row['steps']:>6}{row['seconds']:>10.3f}"
              f"{ddpm['seconds'] / row['seconds']:>8.1f}x{row['sliced_w2']:>11.4f}"
              f"{row['sliced_w2'] / ddpm['sliced_w2']:>8.2f}x{row['mmd2']:>10.5f}")
    print(f"{'data vs data (floor)':<35}{floor_sw:>11.4f}{floor_sw / ddpm['sliced_w2']:>8.2f}x{floor_mmd:>10.5f}")

    ddim50 = next(r for r in rows if r["sampler"] == "DDIM" and r["steps"] == 50)
    speedup = ddpm["seconds"] / ddim50["seconds"]
    ratio = ddim50["sliced_w2"] / ddpm["sliced_w2"]
    met = speedup >= 15 and ratio <= 1.5
    print(f"\ntarget: DDIM-50 >= 15x faster than DDPM-1000 at <= 1.5x its distance -> "
          f"{speedup:.1f}x faster at {ratio:.2f}x the distance: {'met' if met else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"kind": args.kind, "samples": args.samples, "train_seconds": train_s,
                                         "threads": args.threads, "rows": rows, "floor_sliced_w2": floor_sw,
                                         "floor_mmd2": floor_mmd, "target_met": met}, indent=2))
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
