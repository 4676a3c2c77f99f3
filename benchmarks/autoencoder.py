"""How faithful and how fast an autoencoder is: reconstruction metrics on fresh Shapes images, encode/decode speed.

Measures, for a checkpoint (by default the shipped ``data/checkpoints/autoencoder-shapes``):

- reconstruction quality on Shapes test-split images that training never saw (``tinyldm.jobs.autoencoder.
  evaluate_autoencoder``): PSNR (mean and worst image), LPIPS, how often the judge reads the same colour, shape,
  size and position on original and reconstruction, and the judge-feature FID between the two sets;
- the compression: latent shape, numbers per image before and after, parameters of encoder and decoder;
- throughput: images per second through the encoder (to the posterior mean) and through the decoder, in batches,
  the best of a few repeats after a warm-up.

Usage: ``python benchmarks/autoencoder.py [--checkpoint DIR] [--num-images 1024] [--batch-size 64] [--json out.json]``.
LPIPS needs torchvision's AlexNet weights (online once, or ``TINYLDM_LPIPS_WEIGHTS``; ``--no-lpips`` skips it).
Timings on a shared machine vary with its load; run it on an idle one for numbers you report.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from report import (  # benchmarks/report.py: scripts run from here, so it imports as a sibling
    chosen_device,
    machine_options,
    report,
)

from tinyldm.data.shapes import shapes_tensor
from tinyldm.evaluation.judge import Judge
from tinyldm.jobs.autoencoder import evaluate_autoencoder, load_autoencoder
from tinyldm.perceptual import LPIPS
from tinyldm.pretrained import checkpoint_dir


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def images_per_second(fn, inputs: torch.Tensor, device: torch.device, repeats: int) -> float:
    """The best rate of ``fn(inputs)`` over ``repeats`` timed calls, after one warm-up call."""
    fn(inputs)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn(inputs)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return inputs.shape[0] / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="autoencoder folder (default: the shipped one)")
    parser.add_argument("--judge", type=Path, default=None, help="judge folder (default: the shipped one)")
    parser.add_argument("--num-images", type=int, default=1024, help="test-split images to reconstruct")
    parser.add_argument("--seed", type=int, default=1, help="seed of the test-split images")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder / decoder call when timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the best one counts")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    machine_options(parser)
    args = parser.parse_args()
    device = chosen_device(args)
    folder = args.checkpoint or checkpoint_dir("autoencoder-shapes")
    model = load_autoencoder(folder, device)
    judge = Judge.from_pretrained(args.judge or checkpoint_dir("judge-shapes")).to(device)
    lpips = None if args.no_lpips else LPIPS().to(device)

    start = time.perf_counter()
    metrics, _, _ = evaluate_autoencoder(model, args.num_images, args.size, args.seed, judge=judge, lpips=lpips)
    evaluation_seconds = time.perf_counter() - start

    x = shapes_tensor(args.batch_size, args.size, seed=args.seed, split="test").to(device)
    z = model.encode(x).mode()  # (B, C, H/f, W/f)
    encode_rate = images_per_second(lambda b: model.encode(b).mode(), x, device, args.repeats)
    decode_rate = images_per_second(model.decode, z, device, args.repeats)

    figures = {
        "checkpoint": str(folder), "device": str(device), "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
        "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
        "image_shape": list(x.shape[1:]), "latent_shape": list(z.shape[1:]),
        "compression": x[0].numel() / z[0].numel(),
        **metrics,
        "encode_images_per_s": encode_rate, "decode_images_per_s": decode_rate,
        "timing_batch_size": args.batch_size, "evaluation_seconds": evaluation_seconds,
    }
    report(figures, args.json)


if __name__ == "__main__":
    main()
