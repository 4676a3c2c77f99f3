"""Classifier-free guidance: Eq. 6 at scales 0, 1 and beyond, one batched pass with padded contexts, caption
dropout, and the unchanged samplers driving a guided text-conditioned UNet."""

import pytest
import torch

from tinyldm.attention import SpatialTransformer
from tinyldm.guidance import NULL_CAPTION, ClassifierFreeGuidance, drop_captions, guided_eps, pad_context
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import TextEncoderConfig, TinyTextEncoder
from tinyldm.unet import UNet, UNetConfig

PROMPTS = ["a large red circle at the top left", "a small blue square in the center"]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    encoder = TinyTextEncoder(TextEncoderConfig.tiny())
    unet = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(1,),
                           groups=4, num_heads=2, context_dim=encoder.context_dim))
    for m in unet.modules():  # zero-initialised output layers would make every prediction 0
        if isinstance(m, SpatialTransformer):
            torch.nn.init.normal_(m.proj_out.weight, std=0.2)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.2)
    with torch.no_grad():
        context, mask = encoder.encode(PROMPTS)  # L = 10
        null, null_mask = encoder.encode_null(1)  # L0 = 2: the batched pass must pad it
    xt = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return unet.eval(), context, mask, null, null_mask, xt, torch.tensor([5, 800])


def _guided(setup, scale):
    unet, context, mask, null, null_mask, xt, t = setup
    with torch.no_grad():
        return ClassifierFreeGuidance(unet, context, null, scale, mask, null_mask)(xt, t)


def _cond_uncond(setup):
    unet, context, mask, null, null_mask, xt, t = setup
    with torch.no_grad():
        return unet(xt, t, context, mask), unet(xt, t, null.expand(2, -1, -1), null_mask.expand(2, -1))


def test_scale_one_is_the_conditional_prediction_and_zero_the_unconditional(setup):
    eps_cond, eps_uncond = _cond_uncond(setup)
    assert not torch.allclose(eps_cond, eps_uncond, atol=1e-3)  # otherwise the test could not tell them apart
    torch.testing.assert_close(_guided(setup, 1.0), eps_cond)
    torch.testing.assert_close(_guided(setup, 0), eps_uncond)


@pytest.mark.parametrize("scale", [0.5, 3.0, 7.5])
def test_the_batched_pass_follows_equation_6(setup, scale):
    eps_cond, eps_uncond = _cond_uncond(setup)
    expected = eps_uncond + scale * (eps_cond - eps_uncond)  # Ho & Salimans 2022, Eq. 6 with s = 1 + w
    torch.testing.assert_close(_guided(setup, scale), expected, atol=1e-5, rtol=1e-4)


def test_guided_eps_is_equation_6_with_w():
    eps_cond, eps_uncond, w = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), 2.0
    torch.testing.assert_close(guided_eps(eps_cond, eps_uncond, 1 + w), (1 + w) * eps_cond - w * eps_uncond)


def test_pad_context_adds_masked_zeros():
    context, mask = pad_context(torch.ones(2, 3, 4), None, 5)
    assert context.shape == (2, 5, 4) and context[:, 3:].abs().max() == 0
    assert mask.tolist() == [[True] * 3 + [False] * 2] * 2


def test_the_samplers_run_a_guided_model_unchanged_and_deterministically(setup):
    unet, context, mask, null, null_mask, xt, t = setup
    guided = ClassifierFreeGuidance(unet, context, null, 4.0, mask, null_mask)
    schedule = NoiseSchedule.linear(50)
    samples = [ddim_sample(guided, (2, 3, 8, 8), schedule, steps=3, generator=torch.Generator().manual_seed(2),
                           progress=False) for _ in range(2)]
    assert samples[0].shape == (2, 3, 8, 8) and torch.isfinite(samples[0]).all()
    assert torch.equal(samples[0], samples[1])


def test_drop_captions_drops_about_p_and_repeats_with_the_seed():
    captions = [f"caption {i}" for i in range(1000)]
    dropped = drop_captions(captions, 0.2, torch.Generator().manual_seed(0))
    assert 150 < dropped.count(NULL_CAPTION) < 250
    assert all(d in (c, NULL_CAPTION) for c, d in zip(captions, dropped))
    assert dropped == drop_captions(captions, 0.2, torch.Generator().manual_seed(0))
    assert drop_captions(captions[:5], 0.0) == captions[:5] and drop_captions(captions[:5], 1.0) == [""] * 5


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_a_bad_dropout_probability_is_refused(p):
    with pytest.raises(ValueError, match="p_uncond must lie in"):
        drop_captions(["a"], p)


@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf"), "3", True])
def test_bad_scales_are_refused(setup, scale):
    unet, context, mask, null, null_mask, *_ = setup
    with pytest.raises(ValueError, match="guidance scale must be a finite number >= 0"):
        ClassifierFreeGuidance(unet, context, null, scale)


def test_mismatched_contexts_and_batches_are_refused(setup):
    unet, context, mask, null, null_mask, xt, t = setup
    with pytest.raises(ValueError, match=r"null_context must have shape \(1 or 2, L0, 32\)"):
        ClassifierFreeGuidance(unet, context, torch.zeros(3, 2, 32), 2.0)
    with pytest.raises(ValueError, match=r"null_context must have shape"):
        ClassifierFreeGuidance(unet, context, torch.zeros(1, 2, 16), 2.0)
    with pytest.raises(ValueError, match=r"context must be a \(B, L, D\) tensor"):
        ClassifierFreeGuidance(unet, context[0], null, 2.0)
    with pytest.raises(ValueError, match="xt holds 1 samples but the guidance has 2 prompts"):
        ClassifierFreeGuidance(unet, context, null, 2.0)(xt[:1], t[:1])
