"""Checkers for lesson 8, applications: the hole at latent resolution, and an experiment: how much noise it takes
to move an object."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from tinyldm.data.shapes import Shapes, changed_captions
from tinyldm.evaluation.judge import Judge
from tinyldm.evaluation.metrics import caption_errors
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.img2img import img2img
from tinyldm.inpainting import downsample_mask
from tinyldm.ldm import LatentDiffusion

__all__ = ["check_latent_mask", "position_edits", "position_success", "check_moving_strength"]


def check_latent_mask(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Exercise: ``fn(mask, f) -> (B, 1, H/f, W/f)``, the latent cells to regenerate for a pixel hole (B, 1, H, W)."""
    name = "latent_mask"
    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(4, 1, 32, 32, generator=generator) > 0.97).float()  # scattered single pixels
    masks[3] = 0
    masks[3, 0, 5:9, 13:14] = 1  # a thin stroke across a cell border
    for factor in (4, 8):
        got = attempt(fn, masks.clone(), factor)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        expect_close(name, got, downsample_mask(masks, factor),
                     hint="a latent cell must be regenerated when any pixel of its f x f patch is in the hole: the "
                          "maximum over the patch (F.max_pool2d(mask, f)), not the mean")
    return passed(name, "every latent cell whose patch touches the hole is regenerated, at f = 4 and f = 8")


MOVE_STEPS = 20  # DDIM steps of a whole run from noise
MOVE_SUCCESS = 0.9  # the share of moves the judge must read right


def position_edits(n: int = 32, seed: int = 0) -> tuple[Tensor, list[str]]:
    """Held-out Shapes test images, and for each a prompt naming the same object at another place.

    Returns:
        ((n, 3, 32, 32) images in [-1, 1], n prompts).
    """
    dataset = Shapes(n, split="test", seed=seed)
    items = [dataset[i] for i in range(n)]
    prompts = changed_captions([item["attributes"] for item in items], "position", seed)
    return torch.stack([item["image"] for item in items]), prompts


def position_success(ldm: LatentDiffusion, judge: Judge, strength: float, images: Tensor, prompts: list[str],
                     seed: int = 0) -> float:
    """The share of SDEdit edits at ``strength`` that the judge reads as their prompt (all four attributes)."""
    edits = img2img(ldm, images, prompts, strength=strength, steps=MOVE_STEPS, sampler="ddim",
                    generator=torch.Generator(ldm.device).manual_seed(seed), progress=False)
    return 1 - caption_errors(judge, edits, prompts).float().mean().item()


def check_moving_strength(fn: Callable[[], Any], ldm: LatentDiffusion, judge: Judge) -> None:
    """Experiment: ``fn() -> s``, about the smallest strength at which SDEdit moves objects: at s, at least
    MOVE_SUCCESS of 32 held-out pictures come out as their prompt (the same object at another place); at s - 0.1
    fewer do."""
    name = "moving_strength"
    s = attempt(fn)
    if s is NOT_ATTEMPTED:
        return not_attempted(name)
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
        raise AssertionError(f"{name}: return a strength in (0, 1], e.g. 0.5, got {s!r}")
    images, prompts = position_edits()
    rate = position_success(ldm, judge, float(s), images, prompts)
    if rate < MOVE_SUCCESS:
        raise AssertionError(f"{name}: at strength {s:.2f}, {rate:.0%} of the moves came out right, fewer than "
                             f"{MOVE_SUCCESS:.0%}. Hint: more noise")
    lower = round(s - 0.1, 6)
    if lower > 0 and (lower_rate := position_success(ldm, judge, lower, images, prompts)) >= MOVE_SUCCESS:
        raise AssertionError(f"{name}: {lower:.2f} also moves {lower_rate:.0%} of them. Hint: less noise")
    below = "" if lower <= 0 else f", and at {lower:.2f} only {lower_rate:.0%}"
    return passed(name, f"at strength {s:.2f}, {rate:.0%} of 32 moves came out right{below}")
