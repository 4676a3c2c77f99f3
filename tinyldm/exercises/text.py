"""Checkers for lesson 6, text conditioning: masked cross-attention, the guided noise prediction and caption
dropout."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from tinyldm.attention import attention_weights
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.guidance import NULL_CAPTION, guided_eps

__all__ = ["check_cross_attention", "check_guided_eps", "check_caption_dropout"]


def _close(a: object, b: torch.Tensor) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a.to(b.dtype), b, atol=1e-4)


def check_cross_attention(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise: ``fn(q, k, v, mask) -> (B, heads, N, d_head)``, softmax(Q K^T / sqrt(d_head)) V with the padded
    keys left out (Vaswani et al. 2017, Eq. 1; Rombach et al. 2022, Sec. 3.3).

    q is (B, heads, N, d_head), k and v (B, heads, L, d_head), mask (B, L) bool with True for real tokens; every
    prompt has at least one real token.
    """
    name = "cross_attention"
    gen = torch.Generator().manual_seed(6)
    cases = [  # (B, heads, N, L, d_head) and which keys are real
        ((2, 2, 5, 4, 4), torch.tensor([[True, True, True, True], [True, True, False, False]])),
        ((3, 1, 6, 5, 9), torch.tensor([[True, False, True, True, False], [True] * 5, [True] + [False] * 4])),
    ]
    for (B, heads, N, L, d), mask in cases:
        q = torch.randn(B, heads, N, d, generator=gen)
        k, v = torch.randn(B, heads, L, d, generator=gen), torch.randn(B, heads, L, d, generator=gen)
        got = attempt(fn, q.clone(), k.clone(), v.clone(), mask.clone())
        if got is NOT_ATTEMPTED:
            not_attempted(name)
            return
        expected = attention_weights(q, k, mask) @ v  # (B, heads, N, d_head)
        hint = ("scores = q @ k.transpose(-2, -1) / sqrt(d_head) is (B, heads, N, L); set the scores of padded keys "
                "to -inf (scores.masked_fill(~mask[:, None, None, :], float('-inf'))), softmax over the last "
                "dimension (the keys), then multiply by v")
        if _close(got, attention_weights(q, k) @ v):
            hint = ("the padded tokens still get attention: their scores must be -inf before the softmax, so that "
                    "their weights are exactly 0; broadcast the (B, L) mask as mask[:, None, None, :]")
        elif _close(got, attention_weights(q * math.sqrt(d), k, mask) @ v):
            hint = ("divide the scores by sqrt(d_head) (q.shape[-1] ** 0.5) before the softmax, or large dot "
                    "products push it to one-hot weights")
        expect_close(name, got, expected, hint=hint, atol=1e-4)
    passed(name, "each query spreads its attention over the real tokens only, and padding gets weight 0")


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
