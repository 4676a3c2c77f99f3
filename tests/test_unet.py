"""The UNet and its blocks: shapes for several configs and sizes, finite gradients, clear errors, the shipped
checkpoint's numbers, and text conditioning through cross-attention."""

import math

import pytest
import torch

from tinyldm.attention import SelfAttention, SpatialTransformer
from tinyldm.pretrained import checkpoint_dir
from tinyldm.time_embedding import timestep_embedding
from tinyldm.unet import UNet, UNetConfig
from tinyldm.unet_blocks import Downsample, ResBlock, Upsample

SMALLEST = dict(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(1,), groups=4,
                num_heads=2)


@pytest.mark.parametrize("time_conditioning", ["shift", "scale_shift"])
@pytest.mark.parametrize("c_in, c_out", [(8, 8), (8, 16)])
def test_resblock_keeps_space_and_changes_width(time_conditioning, c_in, c_out):
    block = ResBlock(c_in, c_out, temb_dim=12, groups=4, time_conditioning=time_conditioning)
    out = block(torch.randn(2, c_in, 8, 6), torch.randn(2, 12))
    assert out.shape == (2, c_out, 8, 6)


def test_resblock_uses_the_time_embedding():
    block = ResBlock(8, 8, temb_dim=12, groups=4)
    torch.nn.init.normal_(block.conv2.weight)  # conv2 starts at zero, which would hide the time path
    x = torch.randn(1, 8, 4, 4)
    assert not torch.allclose(block(x, torch.zeros(1, 12)), block(x, torch.ones(1, 12)))


@pytest.mark.parametrize("kind", ["conv", "avgpool"])
def test_downsample_halves(kind):
    assert Downsample(4, kind)(torch.randn(2, 4, 16, 8)).shape == (2, 4, 8, 4)


@pytest.mark.parametrize("kind", ["nearest", "transposed"])
def test_upsample_doubles(kind):
    assert Upsample(4, kind)(torch.randn(2, 4, 8, 4)).shape == (2, 4, 16, 8)


def test_attention_is_the_identity_at_initialisation_and_mixes_positions_after():
    attention = SelfAttention(8, num_heads=2, groups=4)
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(attention(x), x)  # zero output projection
    torch.nn.init.normal_(attention.proj.weight)
    y = x.clone()
    y[..., 0, 0] += 1  # change one position: every other position's output moves
    assert (attention(x) - attention(y))[..., 3, 3].abs().sum() > 0


@pytest.mark.parametrize("config", [
    UNetConfig(**SMALLEST),
    UNetConfig(**{**SMALLEST, "channel_mults": (1, 2, 2), "attention_levels": (), "blocks_per_level": 2}),
    UNetConfig(**{**SMALLEST, "downsample": "avgpool", "upsample": "transposed", "time_conditioning": "shift"}),
    UNetConfig(**{**SMALLEST, "skip_connections": False, "dropout": 0.1}),
    UNetConfig(**{**SMALLEST, "in_channels": 4, "out_channels": 4}),
])
@pytest.mark.parametrize("size", [(8, 8), (16, 8)])
def test_unet_output_matches_input_shape(config, size):
    model = UNet(config)
    x = torch.randn(2, config.in_channels, *size)
    assert model(x, torch.tensor([0, 999])).shape == (2, config.out_channels, *size)


def test_presets_build_and_their_sizes_are_as_documented():
    counts = {name: UNet(getattr(UNetConfig, name)()).num_parameters() for name in ("tiny", "small")}
    assert counts == {"tiny": 300_515, "small": 1_192_387}
    full = UNetConfig.full()
    assert full.num_downsamples == 3 and 64 % 2**full.num_downsamples == 0


def test_untrained_unet_predicts_zero_and_gradients_are_finite():
    model = UNet(UNetConfig(**SMALLEST))
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 500, 999])
    assert model(x, t).abs().max() == 0  # zero-initialised last layer
    loss = (model(x, t) - torch.randn(3, 3, 8, 8)).square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.conv_out.weight.grad.abs().sum() > 0


def test_time_embedding_follows_its_formula():
    # Vaswani et al. 2017, Sec. 3.5, in the cos-then-sin layout: [cos(t w_k)..., sin(t w_k)...], w_k = 10000^(-k/half)
    t = torch.tensor([0, 1, 17, 999])
    dim = 8
    emb = timestep_embedding(t, dim)
    for row, step in enumerate(t.tolist()):
        for k in range(dim // 2):
            w = 10000 ** (-k / (dim // 2))
            assert math.isclose(emb[row, k].item(), math.cos(step * w), abs_tol=1e-5)
            assert math.isclose(emb[row, dim // 2 + k].item(), math.sin(step * w), abs_tol=1e-5)


def test_the_unet_embeds_time_with_the_lesson_2_module():
    model = UNet(UNetConfig(**SMALLEST))
    t = torch.tensor([3, 400])
    expected = model.time_embed.mlp(timestep_embedding(t, 8))
    torch.testing.assert_close(model.time_embed(t), expected)


def test_a_size_that_does_not_divide_is_refused_with_the_fix():
    model = UNet(UNetConfig(**{**SMALLEST, "channel_mults": (1, 2, 2, 2)}))
    with pytest.raises(ValueError, match=r"image size 30x30 is not a multiple of 8.*halves the resolution 3 times.*"
                                         r"use 32x32"):
        model(torch.randn(1, 3, 30, 30), torch.tensor([0]))


@pytest.mark.parametrize("x, t, message", [
    (torch.randn(1, 1, 8, 8), torch.tensor([0]), r"xt must have shape \(B, 3, H, W\)"),
    (torch.randn(2, 3, 8, 8), torch.tensor([0]), r"t must have shape \(2,\)"),
])
def test_bad_inputs_are_refused(x, t, message):
    with pytest.raises(ValueError, match=message):
        UNet(UNetConfig(**SMALLEST))(x, t)


@pytest.mark.parametrize("change, message", [
    ({"channel_mults": ()}, "channel_mults must be a non-empty tuple"),
    ({"attention_levels": (5,)}, r"name levels \[5\] that do not exist"),
    ({"num_heads": 3}, "not divisible by num_heads=3"),
    ({"upsample": "bilinear"}, "upsample must be one of"),
    ({"base_channels": 0}, "base_channels must be a positive int"),
    ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
    ({"context_dim": 0}, "context_dim must be None .* a positive int, got 0"),
    ({"context_dim": 8.0}, "context_dim must be None"),
])
def test_bad_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        UNet(UNetConfig(**{**SMALLEST, **change}))


@pytest.mark.slow
def test_the_shipped_pixel_checkpoint_gives_the_numbers_it_gave_before_cross_attention():
    # Computed with the lesson-3 UNet, before attention moved to tinyldm.attention: an unconditional UNet must
    # keep its state-dict keys and its outputs, or every shipped checkpoint would break.
    model = UNet.from_pretrained(checkpoint_dir("pixel-shapes"))
    assert model.config.context_dim is None and len(model.state_dict()) == 166
    assert not any(isinstance(m, SpatialTransformer) for m in model.modules())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = model(x, torch.tensor([10, 700]))
    assert math.isclose(eps.mean().item(), -0.0491672, abs_tol=1e-4)
    assert math.isclose(eps.abs().mean().item(), 0.9428546, abs_tol=1e-4)
    torch.testing.assert_close(eps[0, 0, 0, :4], torch.tensor([-1.2472761, -1.5122023, -0.4227627, -0.6250668]),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps[1, 2, 16, 16:20], torch.tensor([0.1003646, 0.1352615, -1.3694514, 0.9431303]),
                               atol=1e-4, rtol=1e-4)


CONDITIONAL = {**SMALLEST, "channel_mults": (1, 2), "attention_levels": (0, 1), "context_dim": 6}


def _conditional(seed=0):
    torch.manual_seed(seed)
    model = UNet(UNetConfig(**CONDITIONAL))
    for m in model.modules():  # zero-initialised output layers would hide the context
        if isinstance(m, SpatialTransformer):
            torch.nn.init.normal_(m.proj_out.weight, std=0.1)
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
    return model


def test_context_dim_puts_spatial_transformers_at_the_attention_levels_and_the_middle():
    model = UNet(UNetConfig(**CONDITIONAL))
    names = sorted(n for n, m in model.named_modules() if isinstance(m, SpatialTransformer))
    assert names == ["down.0.attns.0", "down.1.attns.0", "mid_attn", "up.0.attns.0", "up.0.attns.1",
                     "up.1.attns.0", "up.1.attns.1"]
    unconditional = UNet(UNetConfig(**{**CONDITIONAL, "context_dim": None}))
    assert not any(isinstance(m, SpatialTransformer) for m in unconditional.modules())
    assert UNetConfig.tiny(context_dim=32).context_dim == 32 and UNetConfig.tiny().context_dim is None


def test_the_conditional_unet_reads_the_context_and_ignores_padding():
    model = _conditional()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 900])
    context = torch.randn(2, 3, 6)
    eps = model(x, t, context)
    assert eps.shape == (2, 3, 8, 8)
    assert not torch.allclose(eps, model(x, t, torch.randn(2, 3, 6)))
    padded = torch.cat([context, torch.randn(2, 4, 6)], dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 4] * 2)
    torch.testing.assert_close(model(x, t, padded, mask), eps, atol=1e-5, rtol=1e-4)
    loss = model(x, t, padded, mask).square().mean()
    loss.backward()
    assert model.mid_attn.attn2.to_k.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    ({}, r"text-conditioned \(UNetConfig.context_dim=6\): pass context \(2, L, 6\)"),
    ({"context": torch.randn(2, 3, 5)}, r"context must have shape \(2, L, 6\)"),
    ({"context": torch.randn(1, 3, 6)}, r"context must have shape \(2, L, 6\)"),
    ({"context": torch.randn(2, 3, 6), "context_mask": torch.ones(2, 3)}, "context_mask must be a bool tensor"),
    ({"context": torch.randn(2, 3, 6), "context_mask": torch.ones(2, 4, dtype=torch.bool)},
     r"context_mask must be a bool tensor of shape \(2, 3\)"),
])
def test_bad_contexts_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(UNetConfig(**CONDITIONAL))(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), **kwargs)


@pytest.mark.parametrize("kwargs", [{"context": torch.randn(1, 4, 8)}, {"context_mask": torch.ones(1, 4).bool()}])
def test_an_unconditional_unet_refuses_context(kwargs):
    with pytest.raises(ValueError, match="no cross-attention"):
        UNet(UNetConfig(**SMALLEST))(torch.randn(1, 3, 8, 8), torch.tensor([0]), **kwargs)
