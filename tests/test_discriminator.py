"""The PatchGAN discriminator (grid sizes, receptive field, seeded init) and the GAN losses on hand-set logits."""

import math

import pytest
import torch

from tinyldm.discriminator import (
    DiscriminatorConfig,
    PatchDiscriminator,
    generator_adversarial_loss,
    hinge_d_loss,
    vanilla_d_loss,
)

LOGITS_REAL = torch.tensor([2.0, 0.5, -1.0, 0.0]).view(1, 1, 2, 2)
LOGITS_FAKE = torch.tensor([-2.0, 0.5, 2.5, 0.0]).view(1, 1, 2, 2)


@pytest.mark.parametrize("num_layers, size, grid", [(3, 32, 2), (3, 64, 6), (2, 32, 6), (2, 64, 14)])
def test_output_grid(num_layers, size, grid):
    model = PatchDiscriminator(DiscriminatorConfig(base_channels=8, num_layers=num_layers, groups=4))
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 1, grid, grid)


@pytest.mark.parametrize("num_layers, field", [(1, 16), (2, 34), (3, 70), (4, 142)])
def test_receptive_field(num_layers, field):
    assert PatchDiscriminator(DiscriminatorConfig(base_channels=4, num_layers=num_layers, groups=4)) \
        .receptive_field() == field


def test_receptive_field_is_where_the_output_looks():
    """The input pixels that one logit depends on span exactly the receptive field (checks the formula).

    BatchNorm in eval mode is a per-channel affine map; GroupNorm would mix the whole image through its statistics.
    """
    model = PatchDiscriminator(DiscriminatorConfig(base_channels=4, num_layers=2, norm="batch"),
                               generator=torch.Generator().manual_seed(0)).double().eval()
    x = torch.randn(1, 3, 80, 80, dtype=torch.float64, requires_grad=True)
    out = model(x)  # (1, 1, 18, 18)
    grad, = torch.autograd.grad(out[0, 0, 9, 9], x)
    rows = grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    cols = grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == cols.max() - cols.min() + 1 == model.receptive_field() == 34


def test_too_small_images_and_wrong_channels_are_named():
    model = PatchDiscriminator(DiscriminatorConfig(base_channels=4, groups=4))
    assert model.min_input_size() == 24
    assert model(torch.zeros(1, 3, 24, 24)).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="image size 23 is too small .* num_layers=3; use images of at least 24"):
        model(torch.zeros(1, 3, 23, 23))
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\), got \(1, 1, 32, 32\)"):
        model(torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize("field, value, message", [
    ("norm", "layer", r"norm must be one of \('group', 'batch', 'spectral'\), got 'layer'"),
    ("num_layers", 0, "num_layers must be a positive int, got 0"),
])
def test_bad_configs_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        PatchDiscriminator(DiscriminatorConfig(**{field: value}))


@pytest.mark.parametrize("norm, layer", [("group", torch.nn.GroupNorm), ("batch", torch.nn.BatchNorm2d)])
def test_init_is_dcgan_and_seedable(norm, layer):
    config = DiscriminatorConfig(base_channels=16, num_layers=2, norm=norm, groups=4)
    a, b, c = (PatchDiscriminator(config, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    convs = [m for m in a.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    assert all(m.bias is None or m.bias.abs().max() == 0 for m in convs)
    norms = [m for m in a.modules() if isinstance(m, layer)]
    assert len(norms) == 2 and all(abs(m.weight.mean().item() - 1) < 0.02 for m in norms)


def test_spectral_norm_bounds_every_layer_and_is_seedable():
    config = DiscriminatorConfig(base_channels=8, num_layers=2, norm="spectral")
    a, b, c = (PatchDiscriminator(config, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name  # weights and the power iteration's vectors
    assert not torch.equal(a.state_dict()["layers.0.parametrizations.weight.0._u"],
                           c.state_dict()["layers.0.parametrizations.weight.0._u"])
    assert not [m for m in a.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d))]
    a.train()
    for _ in range(20):  # one power iteration per training forward pass
        a(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    convs = [m for m in a.layers if isinstance(m, torch.nn.Conv2d)]
    sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in convs]
    assert len(sigmas) == 4 and all(abs(s - 1) < 0.05 for s in sigmas)
    assert a.receptive_field() == 34 and a(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 6, 6)


def test_hinge_losses_by_hand():
    # real: relu(1 - [2, .5, -1, 0]) = [0, .5, 2, 1] -> mean 0.875; fake: relu(1 + [-2, .5, 2.5, 0]) = [0, 1.5, 3.5, 1]
    # -> mean 1.5; the discriminator's loss is their average.
    torch.testing.assert_close(hinge_d_loss(LOGITS_REAL, LOGITS_FAKE), torch.tensor(0.5 * (0.875 + 1.5)))
    torch.testing.assert_close(generator_adversarial_loss(LOGITS_FAKE, "hinge"), torch.tensor(-0.25))
    torch.testing.assert_close(generator_adversarial_loss(torch.tensor([1.0, 3.0])), torch.tensor(-2.0))


def test_vanilla_losses_by_hand():
    def softplus(a):
        return math.log1p(math.exp(a))

    real = sum(softplus(-a) for a in (2.0, 0.5, -1.0, 0.0)) / 4
    fake = sum(softplus(a) for a in (-2.0, 0.5, 2.5, 0.0)) / 4
    torch.testing.assert_close(vanilla_d_loss(LOGITS_REAL, LOGITS_FAKE), torch.tensor(0.5 * (real + fake)))
    generator = sum(softplus(-a) for a in (-2.0, 0.5, 2.5, 0.0)) / 4
    torch.testing.assert_close(generator_adversarial_loss(LOGITS_FAKE, "vanilla"), torch.tensor(generator))
    # at logit 0 the discriminator is unsure: -log(1/2) on both sides
    torch.testing.assert_close(vanilla_d_loss(torch.zeros(3), torch.zeros(3)), torch.tensor(math.log(2.0)))


def test_unknown_generator_loss_kind_is_named():
    with pytest.raises(ValueError, match=r"kind must be one of \('hinge', 'vanilla'\), got 'wasserstein'"):
        generator_adversarial_loss(LOGITS_FAKE, "wasserstein")
