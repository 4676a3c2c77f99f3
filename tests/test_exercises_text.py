"""Lesson 6's checkers accept answers written from the papers, reject typical mistakes with a matching hint, and
let unfinished exercises pass by so the notebook runs top to bottom."""

import math

import pytest
import torch

from tinyldm.exercises.text import check_caption_dropout, check_cross_attention, check_guided_eps


def _attention(q, k, v, mask, scale=True, use_mask=True):
    scores = q @ k.transpose(-2, -1)  # (B, heads, N, L)
    if scale:
        scores = scores / math.sqrt(q.shape[-1])
    if use_mask:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v


def _guided(eps_cond, eps_uncond, scale):
    return eps_uncond + scale * (eps_cond - eps_uncond)


def _drop(captions, p_uncond, generator):
    drop = torch.rand(len(captions), generator=generator) < p_uncond
    return ["" if d else c for c, d in zip(captions, drop.tolist())]


def test_right_answers_pass(capsys):
    check_cross_attention(_attention)
    check_guided_eps(_guided)
    check_caption_dropout(_drop)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[ok] cross_attention", "[ok] guided_eps",
                                                      "[ok] caption_dropout"]


def test_a_bernoulli_dropout_is_right_too(capsys):
    def bernoulli(captions, p_uncond, generator):
        keep = torch.bernoulli(torch.full((len(captions),), 1 - p_uncond), generator=generator).bool()
        return [c if k else "" for c, k in zip(captions, keep.tolist())]

    check_caption_dropout(bernoulli)
    assert capsys.readouterr().out.startswith("[ok] caption_dropout")


def test_unfinished_answers_print_todo(capsys):
    for check in (check_cross_attention, check_guided_eps, check_caption_dropout):
        check(lambda *args: None)

    def not_yet(*args):
        raise NotImplementedError

    check_guided_eps(not_yet)
    assert capsys.readouterr().out.count("[todo]") == 4


def test_attention_mistakes_are_caught():
    with pytest.raises(AssertionError, match="padded tokens still get attention"):
        check_cross_attention(lambda q, k, v, mask: _attention(q, k, v, mask, use_mask=False))
    with pytest.raises(AssertionError, match="divide the scores by sqrt"):
        check_cross_attention(lambda q, k, v, mask: _attention(q, k, v, mask, scale=False))
    with pytest.raises(AssertionError, match="softmax over the last"):  # normalised over the queries
        check_cross_attention(lambda q, k, v, mask: (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
                              .masked_fill(~mask[:, None, None, :], -1e9).softmax(dim=-2) @ v)


def test_guidance_mistakes_are_caught():
    with pytest.raises(AssertionError, match="tinyldm's scale is s = 1 \\+ w"):
        check_guided_eps(lambda c, u, s: (1 + s) * c - s * u)
    with pytest.raises(AssertionError, match="roles are swapped"):
        check_guided_eps(lambda c, u, s: c + s * (u - c))


def test_dropout_mistakes_are_caught():
    with pytest.raises(AssertionError, match="not of keeping it"):
        check_caption_dropout(lambda caps, p, g: _drop(caps, 1 - p, g))
    with pytest.raises(AssertionError, match="became '\\[PAD\\]'"):
        check_caption_dropout(lambda caps, p, g: ["[PAD]" if c == "" else c for c in _drop(caps, p, g)])
    with pytest.raises(AssertionError, match="global random generator moved"):
        check_caption_dropout(lambda caps, p, g: _drop(caps, p, None))
    with pytest.raises(AssertionError, match="expected a list of 4000"):
        check_caption_dropout(lambda caps, p, g: _drop(caps, p, g)[:-1])
