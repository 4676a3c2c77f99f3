"""Lesson 5's checkers accept answers written from the formulas, reject typical mistakes with a matching hint, and
let unfinished exercises pass by so the notebook runs top to bottom."""

import pytest

from tinyldm.exercises.latent import check_effective_snr, check_latent_numbers, check_scale_factor


def _scale_factor(z):
    return 1 / z.std()


def _effective_snr(schedule, t, data_std):
    alpha_bar = schedule.alpha_bars[t]
    return alpha_bar * data_std**2 / (1 - alpha_bar)


def _latent_numbers(image_size, factor, channels):
    return channels * (image_size // factor) ** 2


def test_right_answers_pass(capsys):
    check_scale_factor(_scale_factor)
    check_scale_factor(lambda z: 1 / z.std().item())  # a plain float is fine too
    check_effective_snr(_effective_snr)
    check_latent_numbers(_latent_numbers)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[ok] scale_factor", "[ok] scale_factor",
                                                      "[ok] effective_snr", "[ok] latent_numbers"]


def test_unfinished_answers_print_todo(capsys):
    for check in (check_scale_factor, check_effective_snr, check_latent_numbers):
        check(lambda *args: None)

    def not_yet(*args):
        raise NotImplementedError

    check_latent_numbers(not_yet)
    assert capsys.readouterr().out.count("[todo]") == 4


def test_scale_factor_mistakes_are_caught():
    with pytest.raises(AssertionError, match="expected one number"):
        check_scale_factor(lambda z: 1 / z.std(dim=(0, 2, 3)))  # one factor per channel
    with pytest.raises(AssertionError, match="s is its inverse"):
        check_scale_factor(lambda z: z.std())  # the std itself, not its inverse
    with pytest.raises(AssertionError, match="expected a number"):
        check_scale_factor(lambda z: "0.7")


def test_effective_snr_without_the_square_is_caught():
    with pytest.raises(AssertionError, match="data_std enters squared"):
        check_effective_snr(lambda s, t, std: s.alpha_bars[t] * std / (1 - s.alpha_bars[t]))
    with pytest.raises(AssertionError, match="data_std enters squared"):
        check_effective_snr(lambda s, t, std: s.alpha_bars[t].sqrt() * std**2 / (1 - s.alpha_bars[t]).sqrt())


def test_latent_numbers_mistakes_are_caught():
    with pytest.raises(AssertionError, match="f divides each side"):
        check_latent_numbers(lambda size, f, c: c * size * size // f)  # divides the area by f, not f^2
    with pytest.raises(AssertionError, match="f divides each side"):
        check_latent_numbers(lambda size, f, c: 3 * (size // f) ** 2)  # RGB channels instead of the latent's


def test_the_scale_experiment_passes_on_the_measured_rate_and_explains_a_failure(monkeypatch, capsys):
    import torch

    from tinyldm.exercises import latent

    raw = torch.full((64, 4, 8, 8), 1.4) * torch.tensor([1.0, -1.0]).repeat(32)[:, None, None, None]  # std 1.4
    tried = []

    def fake_run(s, raw, autoencoder, judge):  # the judged-valid flags of 128 samples, without training
        tried.append(s)
        return torch.arange(128) < (60 if s < 1.5 else 30)

    monkeypatch.setattr(latent, "scale_run", fake_run)
    latent.check_latent_scale(lambda: 0.7, raw, None, None)
    out = capsys.readouterr().out
    assert "[ok] latent_scale: with s = 0.7 (latent std 0.98) the run's samples were judged valid 47%" in out
    with pytest.raises(AssertionError, match=r"judged valid 23% .* below 35%"):
        latent.check_latent_scale(lambda: torch.tensor(3.0), raw, None, None)
    with pytest.raises(AssertionError, match="outside"):
        latent.check_latent_scale(lambda: 0.0, raw, None, None)
    latent.check_latent_scale(lambda: None, raw, None, None)
    assert capsys.readouterr().out.startswith("[todo] latent_scale") and tried == [0.7, 3.0]
