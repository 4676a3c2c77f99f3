"""The judge's job behind ``tinyldm train judge``: train the Shapes judge classifier, save it and measure it on
fresh images, so that ``tinyldm evaluate`` and the benchmarks can trust what it reads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from tinyldm.data.shapes import Shapes
from tinyldm.evaluation.judge import train_judge
from tinyldm.evaluation.metrics import judge_accuracy
from tinyldm.training.run_folder import refuse_to_overwrite

__all__ = ["train_and_score_judge", "ACCURACY_NAME"]

ACCURACY_NAME = "accuracy.json"


def train_and_score_judge(out: str | Path, steps: int = 1000, num_images: int = 8192, seed: int = 0,
                          device: torch.device | None = None, progress: bool = True
                          ) -> tuple[dict[str, Any], dict[str, Path]]:
    """Train the judge, save it to ``out`` and measure it on fresh images (test split and held-out pairs,
    another seed). Writes ``accuracy.json`` next to the weights.

    Returns:
        the report written to ``accuracy.json``, and the files written, by name.
    """
    refuse_to_overwrite(out, extra=(ACCURACY_NAME,))  # before minutes of training, not after
    start = time.time()
    judge, losses = train_judge(num_images, steps, seed=seed, device=device, progress=progress)
    judge = judge.cpu()
    folder = judge.save_pretrained(out)
    fresh = [Shapes(2000, seed=seed + 7, split="test"), Shapes(400, seed=seed + 7, split="heldout")]
    items = [d[i] for d in fresh for i in range(len(d))]
    accuracy = judge_accuracy(judge, torch.stack([it["image"] for it in items]), [it["attributes"] for it in items])
    report = {"accuracy_on_fresh_images": accuracy, "fresh_images": len(items), "steps": steps,
              "num_images": num_images, "seed": seed, "wall_seconds": round(time.time() - start, 1),
              "final_loss_mean_50": sum(losses[-50:]) / len(losses[-50:])}
    (folder / ACCURACY_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report, {"judge": folder, "accuracy": folder / ACCURACY_NAME}
