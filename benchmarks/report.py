"""What the benchmark scripts share: the machine options (device, threads, JSON output) and how they report their
figures (an aligned two-column table, optionally a JSON file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from tinyldm.runtime import default_device

__all__ = ["machine_options", "chosen_device", "report"]


def machine_options(parser: argparse.ArgumentParser) -> None:
    """Add --device, --threads and --json to a benchmark's parser."""
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the fastest there is)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: one per core)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")


def chosen_device(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the device --device names (or the fastest there is)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device) if args.device else default_device()


def report(figures: dict[str, Any], json_path: Path | None = None) -> None:
    """Print ``name  value`` lines (floats to 4 significant digits) and write the figures to ``json_path`` if given."""
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:>{width}}  {value:.4g}" if isinstance(value, float) else f"{key:>{width}}  {value}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {json_path}")
