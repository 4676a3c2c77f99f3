"""The KL autoencoder: the Gaussian posterior against torch.distributions, shapes at f = 2, 4, 8, clear errors,
the latent scale factor, a save/load round trip, and a reconstruction loss that falls."""

import json
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL, DiagonalGaussian, estimate_scale_factor
from tinyldm.runtime import seeded

SMALLEST = AutoencoderConfig(base_channels=8, channel_mults=(1, 2), groups=4, latent_channels=2)


def _model(config=SMALLEST, seed=0):
    with seeded(seed):
        return AutoencoderKL(config)


def test_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=generator), torch.randn(3, 4, 2, 2, generator=generator)
    posterior = DiagonalGaussian(mean, logvar)
    expected = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(posterior.kl(), expected)
    assert posterior.kl().shape == (3,)
    assert DiagonalGaussian(torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)).kl().abs().max() == 0


def test_gaussian_std_var_mode_sample_and_clamp():
    mean, logvar = torch.full((1, 1, 2, 2), 2.0), torch.tensor([-100.0, 0.0, math.log(4.0), 100.0]).view(1, 1, 2, 2)
    posterior = DiagonalGaussian(mean, logvar)
    torch.testing.assert_close(posterior.logvar.flatten(), torch.tensor([-30.0, 0.0, math.log(4.0), 20.0]))
    torch.testing.assert_close(posterior.std.flatten()[1:3], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(posterior.var, posterior.std.square())
    assert posterior.mode() is mean
    draws = DiagonalGaussian(torch.full((20000, 1, 1, 1), 2.0), torch.full((20000, 1, 1, 1), math.log(9.0)))
    z = draws.sample(torch.Generator().manual_seed(0))
    assert abs(z.mean() - 2.0) < 0.1 and abs(z.std() - 3.0) < 0.1
    a, b = (draws.sample(torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"same shape, got \(1, 2\) and \(1, 3\)"):
        DiagonalGaussian(torch.zeros(1, 2), torch.zeros(1, 3))


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_shapes_at_every_factor(factor):
    config = SMALLEST.with_factor(factor)
    assert config.downsampling_factor == factor and len(config.channel_mults) == int(math.log2(factor)) + 1
    model = _model(config)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    posterior = model.encode(x)
    assert posterior.mean.shape == (2, 2, 16 // factor, 24 // factor)
    reconstruction, _ = model(x, generator=torch.Generator().manual_seed(0))
    assert reconstruction.shape == x.shape
    assert model.decode(torch.randn(1, 2, 3, 2)).shape == (1, 3, 3 * factor, 2 * factor)


def test_with_factor_cuts_or_extends_the_levels():
    assert AutoencoderConfig().with_factor(2).channel_mults == (1, 2)
    assert AutoencoderConfig().with_factor(8).channel_mults == (1, 2, 2, 2)
    assert AutoencoderConfig.full().with_factor(4).channel_mults == (1, 2, 4)
    assert AutoencoderConfig.tiny().with_factor(4) == AutoencoderConfig.tiny()
    with pytest.raises(ValueError, match=r"factor must be one of \(2, 4, 8\), got 16"):
        AutoencoderConfig().with_factor(16)


def test_presets_and_their_sizes():
    counts = {name: AutoencoderKL(getattr(AutoencoderConfig, name)()).num_parameters() for name in ("tiny", "small")}
    assert counts == {"tiny": 242_235, "small": 954_475}
    assert AutoencoderConfig.tiny().downsampling_factor == AutoencoderConfig.small().downsampling_factor == 4
    assert AutoencoderConfig.full().downsampling_factor == 8


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 30, 30), "image size 30 is not a multiple of 4: the autoencoder downsamples 2 times; use 32"),
    ((1, 3, 32, 30), "image size 32x30 is not a multiple of 4: the autoencoder downsamples 2 times; use 32x32"),
    ((1, 1, 32, 32), r"images must have shape \(B, 3, H, W\), got \(1, 1, 32, 32\)"),
    ((3, 32, 32), r"images must have shape \(B, 3, H, W\), got \(3, 32, 32\)"),
])
def test_bad_images_are_named(shape, message):
    model = _model(SMALLEST.with_factor(4))
    with pytest.raises(ValueError, match=message):
        model.encode(torch.zeros(shape))


def test_bad_latents_are_named():
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 2, h, w\), got \(1, 4, 8, 8\)"):
        _model().decode(torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize("field, value, message", [
    ("channel_mults", (), "non-empty tuple of positive ints"),
    ("latent_channels", 0, "latent_channels must be a positive int, got 0"),
    ("num_heads", 3, "not divisible by num_heads=3"),
])
def test_bad_configs_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderKL(AutoencoderConfig(**{**SMALLEST.__dict__, field: value}))


def test_last_layer_is_the_decoders_output_weight():
    model = _model()
    assert model.last_layer is model.decoder.conv_out.weight and model.last_layer.shape[0] == 3


def test_forward_samples_or_takes_the_mean():
    model = _model()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        mean_rec, posterior = model(x, sample_posterior=False)
        torch.testing.assert_close(mean_rec, model.decode(posterior.mean))
        a, _ = model(x, generator=torch.Generator().manual_seed(0))
        b, _ = model(x, generator=torch.Generator().manual_seed(0))
        c, _ = model(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_scale_factor_makes_latents_unit_std_and_decode_latents_inverts_it():
    model = _model()
    images = torch.rand(40, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        model.encoder.conv_out.weight.mul_(7.0)  # make the raw latents far from unit variance
        value = estimate_scale_factor(model, images, batch_size=16, generator=torch.Generator().manual_seed(0))
        model.set_scale_factor(value)
        z = model.latents(images, sample=True, generator=torch.Generator().manual_seed(0))
        assert abs(z.std().item() - 1.0) < 1e-3
        assert abs(model.encode(images).mean.std().item() - 1.0) > 0.5  # the raw latents were not unit-std
        z_mean = model.latents(images)
        torch.testing.assert_close(z_mean, value * model.encode(images).mean)
        torch.testing.assert_close(model.decode_latents(z_mean), model.decode(model.encode(images).mean))


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_set_scale_factor_rejects_nonsense(value):
    with pytest.raises(ValueError, match="scale_factor must be a positive finite number"):
        _model().set_scale_factor(value)


def test_estimate_scale_factor_rejects_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        estimate_scale_factor(model, torch.zeros(2, 3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match=r"non-empty \(N, C, H, W\) tensor, got \(0, 3, 8, 8\)"):
        estimate_scale_factor(model, torch.zeros(0, 3, 8, 8))


def test_save_load_round_trip_keeps_weights_and_scale_factor(tmp_path):
    model = _model()
    model.set_scale_factor(0.25)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    loaded = AutoencoderKL.from_pretrained(tmp_path)
    assert loaded.config == SMALLEST and loaded.scale_factor.item() == 0.25
    assert loaded.scale_factor.dtype == torch.float32 and loaded.scale_factor.shape == ()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.latents(x), loaded.latents(x))


def test_reconstruction_loss_falls_on_the_tiny_config():
    from tinyldm.data.shapes import Shapes

    data = Shapes(4, size=16, seed=0)  # 16x16 keeps the test fast
    x = torch.stack([data[i]["image"] for i in range(4)])
    model = _model(AutoencoderConfig.tiny())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        reconstruction, posterior = model(x[:4], generator=generator)
        loss = (reconstruction - x[:4]).abs().mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
