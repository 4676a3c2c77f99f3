"""Checkers for lesson 6, text conditioning: a guidance scale that fixes captions without breaking others (an
experiment), the guided noise prediction and caption dropout."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from tinyldm.evaluation.metrics import caption_errors
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.guidance import NULL_CAPTION, guided_eps
from tinyldm.text import shapes_captions

__all__ = ["wrong_captions", "check_guidance_scale", "check_guided_eps", "check_caption_dropout",
           "GUIDANCE_STEPS", "GUIDANCE_MAX_WRONG", "WRONG_AT_SCALE_1"]

GUIDANCE_STEPS = 20  # DDIM steps of the guidance experiment: few, so that scale 1 leaves mistakes to fix
GUIDANCE_MAX_WRONG = 3  # a scale passes when at most this many of the 216 small captions come out wrong
# The small captions the shipped ldm-shapes draws wrong at guidance scale 1 in that experiment (seed 0).
WRONG_AT_SCALE_1 = (
    "a small red circle at the top", "a small red square in the center", "a small red triangle at the top right",
    "a small red diamond at the top right", "a small orange triangle at the top",
    "a small orange diamond in the center", "a small yellow triangle in the center", "a small green circle at the top",
    "a small green triangle at the bottom left", "a small green diamond on the right",
    "a small blue circle at the bottom", "a small blue square in the center", "a small blue square at the bottom right",
    "a small purple triangle at the top right",
)


def _close(a: object, b: torch.Tensor) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a.to(b.dtype), b, atol=1e-4)


def wrong_captions(ldm, judge, scale: float) -> list[str]:
    """The experiment of lesson 6's first exercise: draw one image for each of the 216 captions of small objects
    with the pipeline ``ldm`` at guidance ``scale`` (GUIDANCE_STEPS DDIM steps, one batch, seed 0) and return the
    captions whose image ``judge`` reads wrong (not valid, or any of the four attributes different)."""
    captions = [c for c in shapes_captions() if c.startswith("a small")]
    device = next(ldm.unet.parameters()).device
    with torch.no_grad():
        images = ldm.sample(captions, steps=GUIDANCE_STEPS, guidance_scale=scale,
                            generator=torch.Generator(device).manual_seed(0), progress=False)
    return [c for c, wrong in zip(captions, caption_errors(judge, images, captions).tolist()) if wrong]


def check_guidance_scale(fn: Callable[[], float], ldm, judge) -> None:
    """Experiment: ``fn() -> scale``, a guidance scale at which the shipped model draws at most GUIDANCE_MAX_WRONG of
    the 216 small captions wrong (``wrong_captions``), where scale 1 leaves WRONG_AT_SCALE_1 and more wrong."""
    name = "guidance_scale"
    scale = attempt(fn)
    if scale is NOT_ATTEMPTED:
        return not_attempted(name)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= 100:
        raise AssertionError(f"{name}: return a guidance scale, a number from 0 to 100, got {scale!r}")
    wrong = wrong_captions(ldm, judge, float(scale))
    fixed = sum(c not in wrong for c in WRONG_AT_SCALE_1)
    broken = sum(c not in WRONG_AT_SCALE_1 for c in wrong)
    summary = (f"at scale {scale:g}, {len(wrong)} of 216 captions wrong: {fixed} of the {len(WRONG_AT_SCALE_1)} "
               f"listed wrong at scale 1 now right, {broken} others wrong")
    if len(wrong) > GUIDANCE_MAX_WRONG:
        hint = ("too little guidance leaves the caption's pull weak" if scale < 3 else
                "too much pushes the images past the data, where the judge stops reading them")
        raise AssertionError(f"{name}: {summary}; at most {GUIDANCE_MAX_WRONG} may be wrong. Hint: {hint}; try "
                             f"wrong_captions(ldm, judge, s) for a few s")
    return passed(name, summary)


def check_guided_eps(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(eps_cond, eps_uncond, scale) -> eps``, classifier-free guidance (Ho & Salimans 2022, Eq. 6,
    written with the guidance scale s = 1 + w)."""
    name = "guided_eps"
    gen = torch.Generator().manual_seed(7)
    eps_cond, eps_uncond = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    for scale in (3.0, 0.0, 1.0, 7.5):  # s = 3 first: at s = 0 two typical mistakes agree
        got = attempt(fn, eps_cond.clone(), eps_uncond.clone(), scale)
        if got is NOT_ATTEMPTED:
            not_attempted(name)
            return
        hint = (f"eps_uncond + s * (eps_cond - eps_uncond): s = 0 gives the unconditional prediction, s = 1 the "
                f"conditional one, s > 1 goes past it (here s = {scale})")
        if _close(got, guided_eps(eps_cond, eps_uncond, 1 + scale)):
            hint = ("this is the paper's (1 + w) eps_cond - w eps_uncond with w = s; tinyldm's scale is s = 1 + w, so "
                    "that s = 1 returns eps_cond unchanged: eps_uncond + s * (eps_cond - eps_uncond)")
        elif _close(got, guided_eps(eps_uncond, eps_cond, scale)):
            hint = ("the roles are swapped: start from the unconditional prediction and move towards (and past) "
                    "the conditional one, eps_uncond + s * (eps_cond - eps_uncond)")
        expect_close(name, got, guided_eps(eps_cond, eps_uncond, scale), hint=hint)
    passed(name, "s = 0 is unconditional, s = 1 conditional, and larger s pushes away from the unconditional "
                 "prediction")


def _dropped_fraction(name: str, got: object, captions: Sequence[str], hint: str) -> float:
    """Check that ``got`` is ``captions`` with some entries replaced by the null caption; the fraction replaced."""
    if not isinstance(got, (list, tuple)) or len(got) != len(captions):
        shown = f"a {type(got).__name__} of length {len(got)}" if isinstance(got, (list, tuple)) else repr(got)[:80]
        raise AssertionError(f"{name}: expected a list of {len(captions)} captions, got {shown}. Hint: {hint}")
    for i, (new, old) in enumerate(zip(got, captions)):
        if new not in (old, NULL_CAPTION):
            raise AssertionError(f"{name}: caption {i} became {new!r}; each caption must stay as it is or become the "
                                 f"null caption {NULL_CAPTION!r} (the empty string). Hint: {hint}")
    return sum(new == NULL_CAPTION for new in got) / len(captions)


def check_caption_dropout(fn: Callable[..., list[str]]) -> None:
    """Exercise: ``fn(captions, p_uncond, generator) -> captions``, each replaced by the empty caption with
    probability ``p_uncond``, the coin flips drawn from ``generator`` (Ho & Salimans 2022, Algorithm 1, line 3)."""
    name = "caption_dropout"
    hint = ("flip one coin per caption from the generator, torch.rand(len(captions), generator=generator) < p_uncond, "
            "and put NULL_CAPTION (\"\") where it comes up True; keep the other captions as they are")
    captions = [f"caption {i}" for i in range(4000)]
    state = torch.random.get_rng_state()
    got = attempt(fn, list(captions), 0.25, torch.Generator().manual_seed(0))
    if got is NOT_ATTEMPTED:
        not_attempted(name)
        return
    if not torch.equal(state, torch.random.get_rng_state()):
        raise AssertionError(f"{name}: the global random generator moved; draw every coin flip from the generator "
                             "argument, so that a seed gives the same captions on every run. Hint: " + hint)
    fraction = _dropped_fraction(name, got, captions, hint)
    if abs(fraction - 0.75) < 0.03:
        raise AssertionError(f"{name}: {fraction:.0%} of the captions were dropped with p_uncond = 0.25; p_uncond is "
                             "the chance of dropping a caption, not of keeping it. Hint: " + hint)
    if abs(fraction - 0.25) > 0.03:
        raise AssertionError(f"{name}: {fraction:.1%} of the captions were dropped with p_uncond = 0.25 (expected "
                             f"about 25%). Hint: {hint}")
    again = fn(list(captions), 0.25, torch.Generator().manual_seed(0))
    other = fn(list(captions), 0.25, torch.Generator().manual_seed(1))
    if list(again) != list(got) or list(other) == list(got):
        raise AssertionError(f"{name}: the same seed must drop the same captions and another seed other ones. "
                             f"Hint: {hint}")
    for p_uncond, expected in ((0.0, 0.0), (1.0, 1.0)):
        fraction = _dropped_fraction(name, fn(list(captions[:50]), p_uncond, torch.Generator().manual_seed(2)),
                                     captions[:50], hint)
        if fraction != expected:
            raise AssertionError(f"{name}: p_uncond = {p_uncond} dropped {fraction:.0%} of the captions, expected "
                                 f"{expected:.0%}. Hint: {hint}")
    passed(name, "drops about p_uncond of the captions, the same ones for the same seed")
