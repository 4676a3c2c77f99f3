"""The 2-D denoiser: shapes, parameter count, a short training run that lowers the loss, determinism."""

from dataclasses import MISSING, fields

import pytest
import torch

from tinyldm.mlp import MLPConfig, MLPDenoiser, fit
from tinyldm.schedule import NoiseSchedule


def _param_count(c: MLPConfig) -> int:
    d, h = c.data_dim, c.hidden_dim
    time_mlp = c.time_dim * h + h + h * h + h
    block = 3 * (h * h + h)
    return time_mlp + (d * h + h) + c.num_blocks * block + (h * d + d)


@pytest.mark.parametrize("config", [MLPConfig(), MLPConfig.tiny(), MLPConfig(data_dim=3, hidden_dim=16)])
def test_output_shape_and_parameter_count(config):
    model = MLPDenoiser(config)
    xt = torch.randn(5, config.data_dim)
    assert model(xt, torch.tensor([0, 1, 2, 500, 999])).shape == (5, config.data_dim)
    assert sum(p.numel() for p in model.parameters()) == _param_count(config)


def test_config_fields_all_have_defaults_and_tiny_is_smaller():
    assert all(f.default is not MISSING for f in fields(MLPConfig))
    assert MLPConfig.tiny().hidden_dim < MLPConfig().hidden_dim


def test_rejects_inputs_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"xt must have shape \(B, 2\), got \(4, 3\)"):
        MLPDenoiser(MLPConfig.tiny())(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_fit_lowers_the_loss_and_is_deterministic():
    data = torch.randn(512, 2) * 0.3 + torch.tensor([1.0, -1.0])
    schedule = NoiseSchedule.linear(100)

    def run():
        torch.manual_seed(0)
        model = MLPDenoiser(MLPConfig.tiny())
        losses = fit(model, data, schedule, steps=300, batch_size=128, generator=torch.Generator().manual_seed(0),
                     progress=False)
        return model, losses

    model, losses = run()
    assert len(losses) == 300
    assert sum(losses[-50:]) / 50 < 0.8 * sum(losses[:50]) / 50
    assert not model.training
    _, again = run()
    assert losses == again


def test_fit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
        fit(MLPDenoiser(MLPConfig.tiny()), torch.randn(8, 2), NoiseSchedule.linear(10), steps=0, progress=False)


def test_fit_trains_with_the_loss_it_is_given():
    data = torch.randn(64, 2)
    schedule = NoiseSchedule.linear(10)
    seen = []

    def constant_target(model, x0, schedule, generator=None):
        seen.append(x0.shape)
        t = torch.zeros(x0.shape[0], dtype=torch.long)
        return ((model(x0, t) - 1.0) ** 2).mean()  # predict 1 everywhere

    torch.manual_seed(0)
    model = MLPDenoiser(MLPConfig.tiny())
    losses = fit(model, data, schedule, steps=200, batch_size=16, lr=1e-2, progress=False, loss=constant_target)
    assert seen == [(16, 2)] * 200
    assert losses[-1] < 0.01 < losses[0]
    torch.testing.assert_close(model(data, torch.zeros(64, dtype=torch.long)), torch.ones(64, 2), atol=0.1, rtol=0)
