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


def test_the_scale_run_trains_on_the_scaled_latents_and_decodes_its_samples_unscaled(monkeypatch):
    # A real run, shortened: the checker's experiment end to end, and the decoder sees z / s, not z.
    import torch

    from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL
    from tinyldm.exercises import latent
    from tinyldm.runtime import seeded

    raw = 1.4 * torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        autoencoder = AutoencoderKL(AutoencoderConfig.tiny()).eval()
    drawn, decoded = [], []
    draw, decode = latent._draw, autoencoder.decode
    monkeypatch.setattr(latent, "_draw", lambda *args: drawn.append(draw(*args)) or drawn[-1])
    monkeypatch.setattr(autoencoder, "decode", lambda z: decoded.append(z) or decode(z))
    images = latent.scale_run_images(0.7, raw, autoencoder, steps=2, num_samples=4)
    assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1
    assert drawn[0].shape == (4, 4, 8, 8) and torch.equal(decoded[0], drawn[0] / 0.7)
    assert torch.equal(images, latent.scale_run_images(0.7, raw, autoencoder, steps=2, num_samples=4))  # seeded


def test_the_scale_experiment_reports_a_recorded_run_of_the_same_s_and_latents_instead_of_training(monkeypatch,
                                                                                                   capsys):
    import torch

    from tinyldm.exercises import latent

    raw = torch.full((64, 4, 8, 8), 1.4) * torch.tensor([1.0, -1.0]).repeat(32)[:, None, None, None]  # std 1.4
    unit = 1 / raw.std().item()
    tried = []
    monkeypatch.setattr(latent, "scale_run", lambda s, *args: tried.append(s) or torch.arange(128) < 60)
    recorded = {"steps": latent.SCALE_RUN_STEPS, "samples": latent.SCALE_RUN_SAMPLES, "unit_scale": unit,
                "runs": [{"s": unit, "valid_fraction": 0.5, "samples": 128},
                         {"s": 3.0, "valid_fraction": 0.18, "samples": 128}]}
    latent.check_latent_scale(lambda: 1 / raw.std().item(), raw, None, None, recorded=recorded)
    assert "judged valid 50% of the time (95% interval 41% to 59%, 128 samples; recorded by" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"judged valid 18% .*recorded by .* below 35%"):
        latent.check_latent_scale(lambda: 3.0, raw, None, None, recorded=recorded)
    assert tried == []  # both answered from the record
    latent.check_latent_scale(lambda: 1.0, raw, None, None, recorded=recorded)  # not recorded: runs
    assert tried == [1.0] and "recorded" not in capsys.readouterr().out
    other_latents = {**recorded, "unit_scale": 2 * unit}
    latent.check_latent_scale(lambda: unit, raw, None, None, recorded=other_latents)
    assert tried == [1.0, unit] and "not of these latents" in capsys.readouterr().out
