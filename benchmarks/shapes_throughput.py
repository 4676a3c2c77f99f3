"""How fast is captioned Shapes generated? Images per second at a few sizes, first pass (rendering) and cached.

    python benchmarks/shapes_throughput.py                  # 4096 images at 32 and 64, 3 repeats
    python benchmarks/shapes_throughput.py --json out.json  # also write the numbers as JSON
    python benchmarks/shapes_throughput.py --threads 1      # one core (also immune to a busy machine)

"first pass" builds a fresh Shapes (new seed every repeat) and reads every item, so it includes the rendering;
"cached" reads the same items again, which is what every epoch after the first costs.
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch

from tinyldm.data.shapes import Shapes

__all__ = ["measure", "main"]


def measure(n: int, size: int, repeats: int) -> dict:
    """Time reading all n items of fresh Shapes datasets, then reading them again from the cache.

    Args:
        n: images per dataset.
        size: image side in pixels.
        repeats: datasets to time, each with its own seed.

    Returns:
        dict with the median images/s of the first pass and of the cached pass, and every first-pass sample.
    """
    first, cached = [], []
    for seed in range(repeats):
        start = time.perf_counter()
        dataset = Shapes(n, size=size, seed=seed)
        for i in range(n):
            dataset[i]
        first.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        for i in range(n):
            dataset[i]
        cached.append(n / (time.perf_counter() - start))
    return {"size": size, "n": n, "first_pass_images_per_s": statistics.median(first),
            "cached_images_per_s": statistics.median(cached), "first_pass_samples": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="images per dataset")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sides to measure")
    parser.add_argument("--repeats", type=int, default=3, help="datasets per size; the median is reported")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--json", help="optional path to write the results to")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    machine = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "processor": platform.processor() or platform.machine(), "python": platform.python_version()}
    Shapes(64, size=args.sizes[0])[0]  # warm-up: the first call pays for torch's lazy initialisation
    results = [measure(args.n, size, args.repeats) for size in args.sizes]

    print(f"Shapes throughput, {args.n} images, median of {args.repeats}, torch {machine['torch']}, "
          f"{machine['threads']} threads on {machine['cpus']} CPUs")
    print(f"{'size':>6} {'first pass (img/s)':>20} {'cached (img/s)':>16}")
    for r in results:
        print(f"{r['size']:>6} {r['first_pass_images_per_s']:>20,.0f} {r['cached_images_per_s']:>16,.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "shapes_throughput", "machine": machine, "results": results}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
