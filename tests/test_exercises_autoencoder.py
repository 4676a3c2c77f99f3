"""Lesson 4's checkers accept answers written from the papers, reject typical mistakes with a matching hint, and
let unfinished exercises pass by so the notebook runs top to bottom."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyldm.exercises.autoencoder import check_adaptive_weight, check_hinge_d_loss, check_mse_blind_spot
from tinyldm.perceptual import LPIPS, LPIPS_WEIGHTS_VAR


class _EdgeDistance(nn.Module):
    """A stand-in for LPIPS that needs no weights: the squared difference of horizontal and vertical pixel
    differences, so it sees edges and ignores a uniform brightening, as LPIPS nearly does."""

    def forward(self, x, y):
        def grads(a):
            return torch.cat([a.diff(dim=-1).flatten(1), a.diff(dim=-2).flatten(1)], 1)

        return (grads(x) - grads(y)).square().mean(1)


def _brighter(x):
    return (x + 20 / 127.5).clamp(-1, 1)


def _hinge(real, fake):
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def _weight(rec_loss, g_loss, last_layer):
    rec_grad, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4).detach()


def test_right_answers_pass(capsys):
    check_mse_blind_spot(_brighter, _EdgeDistance())
    check_hinge_d_loss(_hinge)
    check_adaptive_weight(_weight)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[ok] mse_blind_spot", "[ok] hinge_d_loss",
                                                      "[ok] adaptive_weight"]


def test_unfinished_answers_print_todo(capsys):
    check_mse_blind_spot(lambda x: None, _EdgeDistance())
    for check in (check_hinge_d_loss, check_adaptive_weight):
        check(lambda *args: None)

    def not_yet(*args):
        raise NotImplementedError

    check_hinge_d_loss(not_yet)
    assert capsys.readouterr().out.count("[todo]") == 4


@pytest.mark.parametrize("distortion, message", [
    (lambda x: x, "the pixels must change more"),  # nothing changed
    (lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), "the pixels must change more"),  # a blur
    (lambda x: x.flip(-1), "must stay below"),  # the edges move: both measures see it
    (lambda x: (x + 2).clamp(-1, 1), "must stay below"),  # all white: the edges are gone
    (lambda x: x[:, :, :16], "shaped like the input"),
    (lambda x: x * 3, r"\[-1, 1\]"),
])
def test_blind_spot_answers_that_do_not_fool_the_pixels_alone_are_refused(distortion, message):
    with pytest.raises(AssertionError, match=message):
        check_mse_blind_spot(distortion, _EdgeDistance())


def test_blind_spot_with_lpips_accepts_a_brightening_and_refuses_a_colour_cast():
    if not os.environ.get(LPIPS_WEIGHTS_VAR):
        pytest.skip(f"set {LPIPS_WEIGHTS_VAR} to an AlexNet features safetensors file to run LPIPS offline")
    lpips = LPIPS()
    check_mse_blind_spot(_brighter, lpips)
    with pytest.raises(AssertionError, match="must stay below"):  # LPIPS does see a shift of hue
        check_mse_blind_spot(lambda x: (x + torch.tensor([0.2, 0, -0.2]).view(1, 3, 1, 1)).clamp(-1, 1), lpips)


def test_hinge_with_the_signs_swapped_is_caught():
    with pytest.raises(AssertionError, match="a real patch costs relu"):
        check_hinge_d_loss(lambda real, fake: 0.5 * (F.relu(1 + real).mean() + F.relu(1 - fake).mean()))


def test_adaptive_weight_mistakes_are_caught():
    with pytest.raises(AssertionError, match="still carries a gradient"):
        check_adaptive_weight(lambda rec, g, last: _weight(rec, g, last) * last.sum() / last.sum().detach())
    with pytest.raises(AssertionError, match="values differ"):
        check_adaptive_weight(lambda rec, g, last: 1 / _weight(rec, g, last))  # the ratio upside down
