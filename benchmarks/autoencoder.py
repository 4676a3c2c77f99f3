"""How faithful and how fast an autoencoder is: reconstruction metrics on fresh test images, encode/decode speed.

Measures, for a checkpoint (by default the shipped ``data/checkpoints/autoencoder-shapes``):

- reconstruction quality on test images that training never saw (``tinyldm.jobs.autoencoder.evaluate_autoencoder``):
  Shapes' test split, or with ``--data photos`` crops of the test photographs (chelsea, gravel, rocket); PSNR (mean
  and worst image), LPIPS, the high-frequency ratio (``tinyldm.evaluation.spectrum``: about 1 keeps the texture,
  well below 1 is blur), the classifier two-sample test (``tinyldm.evaluation.two_sample``: 50% means a fresh
  classifier cannot tell reconstructions from originals) and, on Shapes, how often the judge reads the same colour,
  shape, size and position on original and reconstruction, and the judge-feature FID between the two sets;
- the compression: latent shape, numbers per image before and after, parameters of encoder and decoder;
- throughput: images per second through the encoder (to the posterior mean), through the decoder, and through
  both with the batch in the default and in the channels-last memory layout (``reconstruct`` uses channels-last on
  a CPU), in batches, the best of a few repeats after a warm-up.

With ``--checkpoints A B C`` it scores several autoencoders on the same test images and prints one table row each
(the scores only, no timing). ``--data photos`` alone does that for the three shipped photo autoencoders
(``data/checkpoints/photos-ae-mse``, ``-lpips``, ``-gan``): the trade-off table of lesson 4 and of their model cards.

Usage: ``python benchmarks/autoencoder.py [--checkpoint DIR] [--num-images 1024] [--batch-size 64] [--json out.json]``
or ``python benchmarks/autoencoder.py --data photos [--checkpoints A B C]``.
LPIPS needs torchvision's AlexNet weights (online once, or ``TINYLDM_LPIPS_WEIGHTS``; ``--no-lpips`` skips it).
Timings on a shared machine vary with its load; run it on an idle one for numbers you report.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from report import (  # benchmarks/report.py: scripts run from here, so it imports as a sibling
    chosen_device,
    machine_options,
    report,
)

from tinyldm.evaluation.judge import Judge
from tinyldm.jobs.autoencoder import EVALUATION_DATA, evaluate_autoencoder, load_autoencoder
from tinyldm.perceptual import LPIPS
from tinyldm.pretrained import checkpoint_dir

SHIPPED_PHOTO_AUTOENCODERS = ("photos-ae-mse", "photos-ae-lpips", "photos-ae-gan")  # one per loss recipe


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


def compare(folders: list[Path], data: str, num_images: int, size: int, seed: int, judge: Judge | None,
            lpips: LPIPS | None, device: torch.device, json_path: Path | None) -> None:
    """Score each autoencoder on the same test images and print one row each: PSNR, LPIPS, high-frequency ratio,
    two-sample accuracy with its standard error."""
    rows = {}
    for folder in folders:
        model = load_autoencoder(folder, device)
        rows[str(folder)] = evaluate_autoencoder(model, num_images, size, seed, judge=judge, lpips=lpips,
                                                 data=data)[0]
    width = max(len("checkpoint"), *map(len, rows))
    print(f"{data} test images: {num_images} at {size}x{size}, seed {seed}")
    print(f"{'checkpoint':<{width}}  {'PSNR dB':>8}  {'LPIPS':>7}  {'HF ratio':>8}  {'2-sample acc':>12}  "
          f"{'95% CI':>11}")
    for name, m in rows.items():
        lpips_text = f"{m['lpips']:.4f}" if "lpips" in m else "-"
        low, high = m["c2st_ci95"]
        print(f"{name:<{width}}  {m['psnr']:>8.2f}  {lpips_text:>7}  {m['hf_ratio']:>8.3f}  "
              f"{m['c2st_accuracy']:>12.3f}  {low:.3f}-{high:.3f}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"data": data, "num_images": num_images, "size": size, "seed": seed,
                                         "rows": rows}, indent=2) + "\n")
        print(f"wrote {json_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="autoencoder folder (default: the shipped one)")
    parser.add_argument("--checkpoints", type=Path, nargs="+", default=None, metavar="DIR",
                        help="several autoencoder folders: one table row each, the scores only")
    parser.add_argument("--data", choices=EVALUATION_DATA, default="shapes",
                        help="test images: Shapes' test split, or crops of the test photographs (default shapes)")
    parser.add_argument("--judge", type=Path, default=None, help="judge folder, for Shapes (default: the shipped one)")
    parser.add_argument("--num-images", type=int, default=1024, help="test-split images to reconstruct")
    parser.add_argument("--seed", type=int, default=1, help="seed of the test-split images")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder / decoder call when timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the best one counts")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    machine_options(parser)
    args = parser.parse_args()
    device = chosen_device(args)
    judge = None
    if args.data == "shapes":
        judge = Judge.from_pretrained(args.judge or checkpoint_dir("judge-shapes")).to(device)
    lpips = None if args.no_lpips else LPIPS().to(device)
    if args.data == "photos" and not (args.checkpoints or args.checkpoint):
        args.checkpoints = [checkpoint_dir(name) for name in SHIPPED_PHOTO_AUTOENCODERS]
    if args.checkpoints:
        compare(args.checkpoints, args.data, args.num_images, args.size, args.seed, judge, lpips, device, args.json)
        return
    folder = args.checkpoint or checkpoint_dir("autoencoder-shapes")
    model = load_autoencoder(folder, device)

    start = time.perf_counter()
    metrics, originals, _ = evaluate_autoencoder(model, args.num_images, args.size, args.seed, judge=judge,
                                                 lpips=lpips, data=args.data)
    evaluation_seconds = time.perf_counter() - start

    x = originals[:args.batch_size].to(device)
    z = model.encode(x).mode()  # (B, C, H/f, W/f)
    encode_rate = images_per_second(lambda b: model.encode(b).mode(), x, device, args.repeats)
    decode_rate = images_per_second(model.decode, z, device, args.repeats)
    # Encoder and decoder together in either memory layout: ``reconstruct`` feeds a CPU channels-last batches.
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    reconstruct_rates = {
        f"reconstruct_images_per_s_{name}": images_per_second(
            lambda b, layout=layout: model(b.contiguous(memory_format=layout), sample_posterior=False)[0], x,
            device, args.repeats)
        for name, layout in layouts.items()}

    figures = {
        "checkpoint": str(folder), "device": str(device), "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
        "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
        "image_shape": list(x.shape[1:]), "latent_shape": list(z.shape[1:]),
        "compression": x[0].numel() / z[0].numel(),
        **metrics,
        "encode_images_per_s": encode_rate, "decode_images_per_s": decode_rate, **reconstruct_rates,
        "timing_batch_size": args.batch_size, "evaluation_seconds": evaluation_seconds,
    }
    report(figures, args.json)


if __name__ == "__main__":
    main()
