"""Lesson 4's checkers accept answers written from the papers, reject typical mistakes with a matching hint, and
let unfinished exercises pass by so the notebook runs top to bottom."""

import pytest
import torch
import torch.nn.functional as F

from tinyldm.exercises.autoencoder import check_adaptive_weight, check_gaussian_kl, check_hinge_d_loss


def _kl(mean, logvar):
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def _hinge(real, fake):
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def _weight(rec_loss, g_loss, last_layer):
    rec_grad, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4).detach()


def test_right_answers_pass(capsys):
    check_gaussian_kl(_kl)
    check_hinge_d_loss(_hinge)
    check_adaptive_weight(_weight)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[ok] gaussian_kl", "[ok] hinge_d_loss", "[ok] adaptive_weight"]


def test_unfinished_answers_print_todo(capsys):
    for check in (check_gaussian_kl, check_hinge_d_loss, check_adaptive_weight):
        check(lambda *args: None)

    def not_yet(*args):
        raise NotImplementedError

    check_hinge_d_loss(not_yet)
    assert capsys.readouterr().out.count("[todo]") == 4


def test_kl_averaged_instead_of_summed_is_caught():
    with pytest.raises(AssertionError, match="sum over the channel and both spatial dimensions"):
        check_gaussian_kl(lambda m, lv: 0.5 * (m.square() + lv.exp() - 1 - lv).mean(dim=(1, 2, 3)))


def test_hinge_with_the_signs_swapped_is_caught():
    with pytest.raises(AssertionError, match="a real patch costs relu"):
        check_hinge_d_loss(lambda real, fake: 0.5 * (F.relu(1 + real).mean() + F.relu(1 - fake).mean()))


def test_adaptive_weight_mistakes_are_caught():
    with pytest.raises(AssertionError, match="still carries a gradient"):
        check_adaptive_weight(lambda rec, g, last: _weight(rec, g, last) * last.sum() / last.sum().detach())
    with pytest.raises(AssertionError, match="values differ"):
        check_adaptive_weight(lambda rec, g, last: 1 / _weight(rec, g, last))  # the ratio upside down
