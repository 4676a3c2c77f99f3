"""How fast the pixel-space UNet trains and samples here, and how much of the processor's peak it uses.

Measures, on the device the command picks (or --device):

- the processor's fp32 peak, as the best of several large matrix products (through ``torch.matmul`` and through a
  1x1 convolution, which runs on a different library): the most a well-fed kernel gets out of it;
- the FLOPs of one training step (forward + backward, counted by ``torch.utils.flop_counter``) and of one
  network call at sampling time;
- training throughput (images/s) and the FLOP/s it implies, as a fraction of that peak (utilisation). FLOPs are
  counted for the direct algorithm (2 per multiply-add); a library that computes convolutions with fewer
  operations could exceed 100%;
- the time to sample one image with DDIM (50 calls) and with DDPM (T calls, extrapolated from the time per call).

Usage: ``python benchmarks/pixel_unet.py [--config small] [--batch-size 64] [--steps 10] [--json out.json]``.
Timings on a shared machine vary with its load; run it on an idle one for numbers you report.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from report import (  # benchmarks/report.py: scripts run from here, so it imports as a sibling
    chosen_device,
    machine_options,
    report,
)
from torch.utils.flop_counter import FlopCounterMode

from tinyldm.data.shapes import shapes_tensor
from tinyldm.diffusion import diffusion_loss
from tinyldm.jobs.pixel import PIXEL_PRESETS
from tinyldm.runtime import seeded
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.training.diffusion_loop import TrainConfig, train_diffusion
from tinyldm.unet import UNet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(fn, flops: float, device: torch.device, repeats: int) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def fp32_peak(device: torch.device, size: int = 2048, repeats: int = 8) -> dict[str, float]:
    """The best fp32 rates we can measure, in GFLOP/s: ``torch.matmul`` (the BLAS), and the same product as a
    1x1 convolution (oneDNN on a CPU, cuDNN on a GPU). On AMD processors MKL's matmul runs its AVX2 kernels while
    oneDNN uses AVX-512, so the second can be twice the first; the larger one stands in for the peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    conv = torch.nn.Conv2d(size, size, 1, bias=False).to(device)
    x = torch.randn(1, size, 32, size // 32, device=device)  # (1, C, H, W) with H * W = size
    flops = 2 * size**3
    rates = {"matmul_gflops": _best_rate(lambda: a @ b, flops, device, repeats),
             "conv1x1_gflops": _best_rate(lambda: conv(x), flops, device, repeats)}
    rates["peak_gflops"] = max(rates.values())
    return rates


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(PIXEL_PRESETS), default="small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (after one warm-up step)")
    parser.add_argument("--sample-batch", type=int, default=16)
    machine_options(parser)
    args = parser.parse_args()
    device = chosen_device(args)
    preset = PIXEL_PRESETS[args.config]
    size = preset.image_size
    with seeded(0):
        model = UNet(preset.unet).to(device)
    schedule = NoiseSchedule.cosine(preset.num_steps).to(device)
    data = shapes_tensor(256, size)
    x0 = data[: args.batch_size].to(device)
    generator = torch.Generator(device).manual_seed(0)

    def train_step() -> None:
        diffusion_loss(model, x0, schedule, generator=generator).backward()

    step_flops = count_flops(train_step)
    call_flops = count_flops(lambda: model(x0[:1], torch.zeros(1, dtype=torch.long, device=device)))
    rates = fp32_peak(device)
    peak = rates["peak_gflops"]

    config = TrainConfig(steps=args.steps + 1, batch_size=args.batch_size, checkpoint_every=0, sample_every=0)
    result = train_diffusion(model, data, schedule, config, progress=False)
    first = result.train_seconds  # includes the warm-up step; time the rest separately
    result = train_diffusion(model, data, schedule, TrainConfig(**{**config.__dict__, "steps": args.steps}),
                             progress=False)
    images_per_s = result.images_per_second
    achieved = step_flops / args.batch_size * images_per_s / 1e9

    model.eval()
    shape = (args.sample_batch, 3, size, size)
    ddim_sample(model, shape, schedule, steps=2, generator=generator, progress=False)  # warm-up
    _sync(device)
    start = time.perf_counter()
    ddim_sample(model, shape, schedule, steps=50, generator=generator, progress=False)
    _sync(device)
    ddim_per_image = (time.perf_counter() - start) / args.sample_batch
    ddpm_per_image = ddim_per_image / 50 * schedule.num_steps

    figures = {
        "config": args.config, "device": str(device), "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(), "image_size": size,
        "parameters": sum(p.numel() for p in model.parameters()), "batch_size": args.batch_size,
        "gflop_per_network_call_per_image": call_flops / 1e9,
        "gflop_per_train_step": step_flops / 1e9,
        "gflop_per_train_image": step_flops / args.batch_size / 1e9,
        **rates, "train_images_per_s": images_per_s, "train_gflops": achieved,
        "utilisation_of_peak": achieved / peak,
        "ddim50_seconds_per_image": ddim_per_image, "ddpm_seconds_per_image": ddpm_per_image,
        "warmup_step_seconds": first,
    }
    report(figures, args.json)


if __name__ == "__main__":
    main()
