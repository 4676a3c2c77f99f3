"""Concat conditioning: zero-initialised extra channels, the loss on the latent channels only, guidance that keeps
the image, save/load, and the errors a wrong model or a wrong input gets."""


import pytest
import torch
import torch.nn.functional as F

from tinyldm.concat_conditioning import (
    ConcatConditionedLDM,
    downsample_images,
    extra_channels,
    masked_images,
)
from tinyldm.inpainting import downsample_mask

PROMPT = "a large red circle at the top left"


@pytest.fixture(scope="module")
def base(tiny_ldm):
    return tiny_ldm  # conftest's tiny text-to-image pipeline; from_base copies what it changes


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def box_mask(n: int = 3) -> torch.Tensor:
    mask = torch.zeros(n, 1, 32, 32)
    mask[:, :, 8:20, 6:18] = 1
    return mask


def test_zero_init_predicts_what_the_base_model_predicts(base):
    model = ConcatConditionedLDM.from_base(base, "inpaint")
    assert model.unet.config.in_channels == 9 and model.extra_channels == 5
    assert not model.unet.conv_in.weight[:, 4:].any()
    c = model.inpainting_conditioning(images(), box_mask())
    g = torch.Generator().manual_seed(1)
    zt, t = torch.randn(3, 4, 8, 8, generator=g), torch.tensor([0, 20, 49])
    context, mask = base.encode_prompts([PROMPT] * 3)
    with torch.no_grad():
        torch.testing.assert_close(model.concat_model(c)(zt, t, context, mask), base.unet(zt, t, context, mask))


def test_from_base_copies_and_leaves_the_base_and_the_global_rng_alone(base):
    before = torch.get_rng_state()
    model = ConcatConditionedLDM.from_base(base, "sr")
    assert torch.equal(torch.get_rng_state(), before)
    assert model.text_encoder is not base.text_encoder and base.unet.config.in_channels == 4
    assert extra_channels("sr", 4) == 3 and model.unet.config.in_channels == 7


def test_the_loss_is_the_noise_prediction_on_the_latent_channels_only(base):
    model = ConcatConditionedLDM.from_base(base, "inpaint")
    with torch.no_grad():
        model.unet.conv_in.weight.normal_(std=0.1)  # make c matter
    g = torch.Generator().manual_seed(2)
    data, eps = torch.randn(4, 9, 8, 8, generator=g), torch.randn(4, 9, 8, 8, generator=g)
    t = torch.tensor([1, 10, 30, 49])
    loss = model.training_loss(data, [PROMPT] * 4, t=t, eps=eps)
    other = eps.clone()
    other[:, 4:] = 7.0  # the noise the loop draws for c's channels is never used
    assert torch.equal(model.training_loss(data, [PROMPT] * 4, t=t, eps=other), loss)
    ab = model.schedule.alpha_bars[t].view(4, 1, 1, 1)
    zt = ab.sqrt() * data[:, :4] + (1 - ab).sqrt() * eps[:, :4]
    context, mask = model.encode_prompts([PROMPT] * 4)
    expected = F.mse_loss(model.unet(torch.cat([zt, data[:, 4:]], 1), t, context, mask), eps[:, :4])
    torch.testing.assert_close(loss, expected)
    changed = data.clone()
    changed[:, 4:] += 1  # c reaches the network
    assert not torch.equal(model.training_loss(changed, [PROMPT] * 4, t=t, eps=eps), loss)


def test_regression_predicts_z0_in_one_call(base):
    model = ConcatConditionedLDM.from_base(base, "sr", "regression")
    data = torch.randn(2, 7, 8, 8, generator=torch.Generator().manual_seed(3))
    context, mask = model.encode_prompts(["", ""], allow_empty=True)
    t = torch.full((2,), 49)
    expected = F.mse_loss(model.unet(torch.cat([torch.zeros(2, 4, 8, 8), data[:, 4:]], 1), t, context, mask),
                          data[:, :4])
    torch.testing.assert_close(model.training_loss(data, None), expected)
    out = model.sample(None, data[:, 4:])
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1


def test_guidance_keeps_the_image_in_both_branches(base):
    model = ConcatConditionedLDM.from_base(base, "inpaint")
    with torch.no_grad():
        model.unet.conv_in.weight.normal_(std=0.1)
    c = model.inpainting_conditioning(images(2), box_mask(2))
    g = torch.Generator().manual_seed(4)
    zt, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([5, 5])
    null, null_mask = model.text_encoder.encode([""] * 2, allow_empty=True)
    with torch.no_grad():
        both = model.concat_model(c)(torch.cat([zt, zt]), torch.cat([t, t]), torch.cat([null, null]),
                                     torch.cat([null_mask, null_mask]))
        one = model.unet(torch.cat([zt, c], 1), t, null, null_mask)
    torch.testing.assert_close(both[2:], one)
    out = model.sample([PROMPT, PROMPT], c, steps=3, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.shape == (2, 3, 32, 32)


def test_save_and_load_round_trip(base, tmp_path):
    model = ConcatConditionedLDM.from_base(base, "sr", "regression")
    with torch.no_grad():
        model.unet.conv_in.weight.normal_(std=0.1)
    model.save_pretrained(tmp_path / "sr")
    loaded = ConcatConditionedLDM.from_pretrained(tmp_path / "sr")
    assert (loaded.kind, loaded.objective, loaded.extra_channels) == ("sr", "regression", 3)
    for part in ("unet", "text_encoder", "autoencoder"):
        for (name, x), y in zip(getattr(model, part).state_dict().items(),
                                getattr(loaded, part).state_dict().values()):
            assert torch.equal(x, y), f"{part}.{name}"
    low = downsample_images(images(2))
    assert torch.equal(loaded.sample(None, loaded.sr_conditioning(low)), model.sample(None, model.sr_conditioning(low)))


def test_a_text_to_image_folder_is_refused_as_an_image_conditioned_model(base, tmp_path):
    base.save_pretrained(tmp_path / "t2i")
    with pytest.raises(ValueError, match="no image-conditioning input channels.*tinyldm train inpaint"):
        ConcatConditionedLDM.from_pretrained(tmp_path / "t2i")
    with pytest.raises(ValueError, match="in_channels=4.*from_base"):
        ConcatConditionedLDM(base.autoencoder, base.unet, base.schedule, base.text_encoder, 32, "inpaint")


def test_a_model_without_inpainting_channels_is_refused_for_inpainting(base):
    sr = ConcatConditionedLDM.from_base(base, "sr")
    with pytest.raises(ValueError, match="no inpainting channels.*tinyldm train inpaint"):
        sr.inpainting_conditioning(images(), box_mask())
    with pytest.raises(ValueError, match=r"conditioning must be \(1, 3, 8, 8\)"):
        sr.sample(None, torch.zeros(1, 5, 8, 8))
    with pytest.raises(TypeError, match="concat_model"):
        sr.denoiser([PROMPT])


@pytest.mark.parametrize("size", [16, 32])
def test_a_low_resolution_input_of_the_wrong_size_is_named(base, size):
    sr = ConcatConditionedLDM.from_base(base, "sr")
    with pytest.raises(ValueError, match=rf"must be \(B, 3, 8, 8\).*upscales 8x8 to 32x32.*got \(1, 3, {size}, "
                                         rf"{size}\).*downsample_images\(images, 4\)"):
        sr.sr_conditioning(torch.zeros(1, 3, size, size))


def test_masks_at_latent_resolution_and_the_masked_image():
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, 5, 30] = 1  # one pixel makes its whole 4x4 cell part of the hole
    small = downsample_mask(mask, 4)
    assert small.shape == (1, 1, 8, 8) and small.sum() == 1 and small[0, 0, 1, 7] == 1
    x = images(1)
    assert torch.equal(masked_images(x, mask)[mask.expand_as(x) > 0], torch.zeros(3))
    assert downsample_images(x).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("name, kind, objective", [("ldm-shapes-inpaint", "inpaint", "diffusion"),
                                                   ("ldm-shapes-sr", "sr", "diffusion"),
                                                   ("ldm-shapes-sr-regression", "sr", "regression"),
                                                   ("photos-sr", "sr", "diffusion"),
                                                   ("photos-sr-regression", "sr", "regression")])
def test_the_shipped_models_load_with_their_kind_and_a_card(name, kind, objective):
    from tinyldm.pretrained import checkpoint_dir

    folder = checkpoint_dir(name)
    model = ConcatConditionedLDM.from_pretrained(folder)
    assert (model.kind, model.objective, model.latent_shape) == (kind, objective, (4, 8, 8))
    for file in ("README.md", "provenance.json", "loss.png"):
        assert (folder / file).is_file(), file
    assert not (folder / "train_state.pt").exists()  # the optimiser's state stays in the run folder


@torch.no_grad()
def test_inpaint_pastes_the_fill_and_upscale_returns_full_size_pictures(base):
    inpainter = ConcatConditionedLDM.from_base(base, "inpaint")
    x = images(2)
    mask = torch.zeros(32, 32)
    mask[8:20, 4:16] = 1
    out = inpainter.inpaint(x, mask, [PROMPT] * 2, steps=2, generator=torch.Generator().manual_seed(0),
                            progress=False)
    assert torch.equal(out[:, :, mask == 0], x[:, :, mask == 0]) and not torch.equal(out, x)
    with pytest.raises(ValueError, match="mask must be black and white"):
        inpainter.inpaint(x, mask * 0.5 + 0.25, [PROMPT] * 2, steps=2, progress=False)
    sr = ConcatConditionedLDM.from_base(base, "sr")
    assert sr.upscale(downsample_images(x), steps=2, progress=False).shape == (2, 3, 32, 32)
