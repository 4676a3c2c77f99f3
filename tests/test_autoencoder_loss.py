"""The autoencoder's losses: the adaptive weight against its formula, and AutoencoderLoss with the GAN and LPIPS
on and off. Tests that need LPIPS's AlexNet weights skip without TINYLDM_LPIPS_WEIGHTS."""

import os

import pytest
import torch
from torch import nn

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL, DiagonalGaussian
from tinyldm.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig, adaptive_weight
from tinyldm.discriminator import vanilla_d_loss
from tinyldm.perceptual import LPIPS_WEIGHTS_VAR
from tinyldm.pretrained import config_from_dict, config_to_dict
from tinyldm.runtime import seeded

needs_weights = pytest.mark.skipif(not os.environ.get(LPIPS_WEIGHTS_VAR), reason=f"set {LPIPS_WEIGHTS_VAR} to an "
                                   "alexnet-features.safetensors file to run LPIPS offline")
NO_LPIPS = AutoencoderLossConfig(perceptual_weight=0.0, disc_start=2, disc_channels=8, disc_layers=2, disc_groups=4)
MODEL = AutoencoderConfig(base_channels=8, channel_mults=(1, 2), groups=4)


class FakeLPIPS(nn.Module):
    """Stands in for LPIPS where only the plumbing is tested: mean squared difference per image."""

    def forward(self, x, y):
        return (x - y).square().mean(dim=(1, 2, 3))


@pytest.fixture
def batch():
    with seeded(0):
        model = AutoencoderKL(MODEL)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reconstruction, posterior = model(x, generator=torch.Generator().manual_seed(2))
    return model, x, reconstruction, posterior


def test_adaptive_weight_matches_its_formula_on_a_toy_decoder():
    generator = torch.Generator().manual_seed(0)
    decoder = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    last = decoder[2].weight
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    out = decoder(torch.randn(6, 3, generator=generator))
    rec = out.abs().mean()
    g = -(3.0 * out[:, 0]).mean()
    expected = torch.autograd.grad(rec, last, retain_graph=True)[0].norm() / (
        torch.autograd.grad(g, last, retain_graph=True)[0].norm() + 1e-4)
    weight = adaptive_weight(rec, g, last)
    torch.testing.assert_close(weight, expected)
    assert not weight.requires_grad and weight.shape == ()
    # doubling the GAN loss halves its weight; the clamp caps it
    torch.testing.assert_close(adaptive_weight(rec, 2 * g, last, eps=0.0), expected / 2, rtol=1e-4, atol=0)
    torch.testing.assert_close(adaptive_weight(rec, g, last, max_weight=1e-3), torch.tensor(1e-3))
    # data-parallel: the gradients pass through `average` before their norms are taken
    seen = []

    def halve_the_gan_gradient(grad):  # called for the reconstruction's gradient, then the GAN's
        seen.append(grad)
        return grad if len(seen) == 1 else grad / 2

    halved = adaptive_weight(rec, g, last, average=halve_the_gan_gradient)
    assert len(seen) == 2
    torch.testing.assert_close(halved, expected * 2, rtol=1e-3, atol=0)
    (rec + g).backward()  # the graph survives for the real backward pass


def test_config_round_trips_through_json_and_builds_its_discriminator():
    config = AutoencoderLossConfig.tiny()
    assert config_from_dict(AutoencoderLossConfig, config_to_dict(config)) == config
    disc = config.discriminator_config()
    assert (disc.base_channels, disc.num_layers, disc.groups) == (16, 2, 8)


@pytest.mark.parametrize("field, value, message", [
    ("pixel_loss", "l3", r"pixel_loss must be one of \('l1', 'l2'\), got 'l3'"),
    ("disc_loss", "wgan", r"disc_loss must be one of \('hinge', 'vanilla'\), got 'wgan'"),
    ("disc_norm", "layer", r"disc_norm must be one of \('group', 'batch', 'spectral'\), got 'layer'"),
    ("kl_weight", -1.0, "kl_weight must be a finite number >= 0, got -1.0"),
    ("disc_weight", float("nan"), "disc_weight must be a finite number >= 0, got nan"),
    ("disc_start", -5, "disc_start must be an int >= 0, got -5"),
    ("disc_warmup", -1, "disc_warmup must be an int >= 0, got -1"),
    ("disc_warmup", 2.5, "disc_warmup must be an int >= 0, got 2.5"),
    ("disc_layers", 0, "num_layers must be a positive int, got 0"),
])
def test_bad_configs_are_named(field, value, message):
    config = AutoencoderLossConfig(**{**config_to_dict(NO_LPIPS), field: value})
    with pytest.raises(ValueError, match=message):
        AutoencoderLoss(config)


def test_lpips_on_needs_rgb_or_grey():
    with pytest.raises(ValueError, match="image_channels=4; set perceptual_weight=0"):
        AutoencoderLoss(AutoencoderLossConfig(image_channels=4), lpips=FakeLPIPS())


def test_everything_off_is_l1_plus_kl(batch):
    model, x, reconstruction, posterior = batch
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, disc_weight=0.0, kl_weight=1e-3))
    assert loss_fn.lpips is None and loss_fn.discriminator is None and not loss_fn.discriminator_active(10 ** 6)
    loss, logs = loss_fn.generator_loss(x, reconstruction, posterior, 10 ** 6, model.last_layer)
    expected = (reconstruction - x).abs().mean() + 1e-3 * posterior.kl().mean()
    torch.testing.assert_close(loss, expected)
    assert set(logs) == {"l1", "lpips", "nll", "kl", "g_loss", "adaptive_weight", "total"}
    assert logs["lpips"] == logs["g_loss"] == logs["adaptive_weight"] == 0.0
    assert all(isinstance(v, float) for v in logs.values()) and logs["total"] == pytest.approx(expected.item())
    d_loss, d_logs = loss_fn.discriminator_loss(x, reconstruction, 10 ** 6)
    assert d_loss.item() == 0 and d_logs == {"d_loss": 0.0, "logits_real": 0.0, "logits_fake": 0.0}


def test_l2_pixel_loss(batch):
    model, x, reconstruction, posterior = batch
    config = AutoencoderLossConfig(pixel_loss="l2", pixel_weight=2.0, perceptual_weight=0, disc_weight=0, kl_weight=0)
    loss, logs = AutoencoderLoss(config).generator_loss(x, reconstruction, posterior, 0, model.last_layer)
    torch.testing.assert_close(loss, 2 * (reconstruction - x).square().mean())
    assert "l2" in logs and "l1" not in logs


def test_perceptual_term_uses_the_shared_network(batch):
    model, x, reconstruction, posterior = batch
    shared = FakeLPIPS()
    config = AutoencoderLossConfig(perceptual_weight=0.5, disc_weight=0.0, kl_weight=0.0)
    loss_fn = AutoencoderLoss(config, lpips=shared)
    assert loss_fn.lpips is shared and "lpips" not in dict(loss_fn.named_modules())
    loss, logs = loss_fn.generator_loss(x, reconstruction, posterior, 0, model.last_layer)
    torch.testing.assert_close(loss, (reconstruction - x).abs().mean() + 0.5 * shared(x, reconstruction).mean())
    assert logs["lpips"] == pytest.approx(shared(x, reconstruction).mean().item())


def test_grey_images_reach_lpips_as_rgb():
    seen = []

    class Recording(FakeLPIPS):
        def forward(self, x, y):
            seen.append(x.shape)
            return super().forward(x, y)

    x = torch.zeros(2, 1, 8, 8)
    posterior = DiagonalGaussian(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    config = AutoencoderLossConfig(image_channels=1, disc_weight=0.0)
    AutoencoderLoss(config, lpips=Recording()).generator_loss(x, x + 0.1, posterior, 0, torch.zeros(1))
    assert seen == [(2, 3, 8, 8)]


def test_gan_waits_for_disc_start_then_adds_the_adaptive_term(batch):
    model, x, reconstruction, posterior = batch
    loss_fn = AutoencoderLoss(NO_LPIPS, generator=torch.Generator().manual_seed(0))
    before, logs = loss_fn.generator_loss(x, reconstruction, posterior, 1, model.last_layer)
    assert logs["g_loss"] == 0 and logs["adaptive_weight"] == 0 and not loss_fn.discriminator_active(1)
    d_loss, d_logs = loss_fn.discriminator_loss(x, reconstruction, 1)
    assert d_loss.item() == 0 and not d_loss.requires_grad and d_logs["d_loss"] == 0

    after, logs = loss_fn.generator_loss(x, reconstruction, posterior, 2, model.last_layer)
    nll = (reconstruction - x).abs().mean()
    g_loss = -loss_fn.discriminator(reconstruction).mean()
    weight = adaptive_weight(nll, g_loss, model.last_layer)
    torch.testing.assert_close(after, nll + 1e-6 * posterior.kl().mean() + weight * 0.5 * g_loss)
    assert logs["adaptive_weight"] == pytest.approx(weight.item()) and logs["g_loss"] == pytest.approx(g_loss.item())
    after.backward()
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())  # the generator step leaves D alone
    assert all(p.requires_grad for p in loss_fn.discriminator.parameters())
    assert model.last_layer.grad is not None


def test_the_discriminator_warms_up_alone_before_its_term_joins(batch):
    model, x, reconstruction, posterior = batch
    config = AutoencoderLossConfig(**{**config_to_dict(NO_LPIPS), "disc_warmup": 3})  # D from step 2, GAN from 5
    loss_fn = AutoencoderLoss(config, generator=torch.Generator().manual_seed(0))
    assert [loss_fn.discriminator_active(s) for s in range(7)] == [False, False, True, True, True, True, True]
    assert [loss_fn.adversarial_active(s) for s in range(7)] == [False] * 5 + [True] * 2
    nll = (reconstruction - x).abs().mean()
    for step in (2, 4):  # warming up: the discriminator trains, the autoencoder's loss has no GAN term
        d_loss, d_logs = loss_fn.discriminator_loss(x, reconstruction, step)
        assert d_loss.requires_grad and d_logs["d_loss"] > 0
        loss, logs = loss_fn.generator_loss(x, reconstruction, posterior, step, model.last_layer)
        torch.testing.assert_close(loss, nll + 1e-6 * posterior.kl().mean())
        assert logs["g_loss"] == 0 and logs["adaptive_weight"] == 0
    loss, logs = loss_fn.generator_loss(x, reconstruction, posterior, 5, model.last_layer)
    assert logs["adaptive_weight"] > 0 and logs["g_loss"] != 0
    without = AutoencoderLoss(NO_LPIPS, generator=torch.Generator().manual_seed(0))
    assert without.adversarial_active(2) and AutoencoderLossConfig().disc_warmup == 0  # off unless asked for


def test_discriminator_loss_detaches_the_reconstruction(batch):
    model, x, reconstruction, posterior = batch
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(**{**config_to_dict(NO_LPIPS), "disc_loss": "vanilla"}),
                              generator=torch.Generator().manual_seed(0))
    d_loss, logs = loss_fn.discriminator_loss(x, reconstruction, 2)
    real, fake = loss_fn.discriminator(x), loss_fn.discriminator(reconstruction)
    torch.testing.assert_close(d_loss, vanilla_d_loss(real, fake))
    assert set(logs) == {"d_loss", "logits_real", "logits_fake"}
    assert logs["logits_fake"] == pytest.approx(fake.mean().item())
    d_loss.backward()
    assert model.last_layer.grad is None and all(p.grad is not None for p in loss_fn.discriminator.parameters())


def test_no_grad_validation_logs_without_the_adaptive_weight(batch):
    model, x, reconstruction, posterior = batch
    loss_fn = AutoencoderLoss(NO_LPIPS)
    with torch.no_grad():
        loss, logs = loss_fn.generator_loss(x, reconstruction.detach(), posterior, 5, model.last_layer)
    assert logs["adaptive_weight"] == 0 and logs["g_loss"] != 0


def test_state_dict_holds_the_discriminator_but_not_lpips():
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(disc_channels=8, disc_groups=4), lpips=FakeLPIPS())
    assert all(k.startswith("discriminator.") for k in loss_fn.state_dict())
    assert len(loss_fn.state_dict()) == len(loss_fn.discriminator.state_dict())


def test_discriminator_init_is_seeded():
    a, b = (AutoencoderLoss(NO_LPIPS, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@needs_weights
def test_both_on_with_the_real_lpips():
    with seeded(0):
        model = AutoencoderKL(MODEL)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reconstruction, posterior = model(x, generator=torch.Generator().manual_seed(2))
    config = AutoencoderLossConfig(disc_start=0, disc_channels=8, disc_groups=4)
    loss_fn = AutoencoderLoss(config, generator=torch.Generator().manual_seed(0))
    loss, logs = loss_fn.generator_loss(x, reconstruction, posterior, 0, model.last_layer)
    assert logs["lpips"] > 0 and logs["adaptive_weight"] > 0
    torch.testing.assert_close(torch.tensor(logs["nll"]), torch.tensor(logs["l1"] + logs["lpips"]))
    loss.backward()
    assert model.last_layer.grad.abs().sum() > 0
