"""LatentDiffusion: parts that must fit, sampling with guidance, the training loss, save/load, the latent cache."""

import dataclasses
import json
import os
import re
import shutil

import pytest
import torch
from transformers import PreTrainedTokenizerFast  # the saved folder must load in transformers too

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL
from tinyldm.diffusion import diffusion_loss
from tinyldm.ldm import LatentDiffusion, check_parts
from tinyldm.runtime import seeded
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import TEXT_ENCODER_VAR, PretrainedTextEncoder, TextEncoderConfig, TinyTextEncoder
from tinyldm.training import latent_cache
from tinyldm.unet import UNet, UNetConfig

PROMPT = "a large red circle at the top left"
SCHEDULE = NoiseSchedule.scaled_linear(50)


def _unet(context_dim=32, **changes):
    config = dataclasses.replace(UNetConfig.tiny(context_dim), in_channels=4, out_channels=4, base_channels=8,
                                 num_heads=2, **changes)
    with seeded(1):
        unet = UNet(config)
        # The zero-initialised output layers (of the UNet and of each cross-attention) would hide the context.
        for p in unet.parameters():
            if p.ndim > 1 and not p.any():
                torch.nn.init.normal_(p, std=0.05)
    return unet


def _autoencoder():
    with seeded(0):
        return AutoencoderKL(AutoencoderConfig.tiny())


def _text_encoder():
    with seeded(2):
        return TinyTextEncoder(TextEncoderConfig.tiny())


def _ldm(conditional=True):
    text = _text_encoder() if conditional else None
    return LatentDiffusion(_autoencoder(), _unet(32 if conditional else None), SCHEDULE, text, 32)


def _sample(ldm, prompts, **kw):
    kw = {"steps": 4, "guidance_scale": 3.0, "progress": False, **kw}
    return ldm.sample(prompts, generator=torch.Generator().manual_seed(0), **kw)


def test_a_saved_pipeline_loads_and_samples_the_same_images(tmp_path):
    ldm = _ldm()
    images = _sample(ldm, [PROMPT, "a small blue square on the left"], num_images_per_prompt=2)
    assert images.shape == (4, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    ldm.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "config.json").read_text())
    assert index["_class_name"] == "LatentDiffusion" and index["latent_shape"] == [4, 8, 8]
    assert index["text_encoder"] == {"class": "TinyTextEncoder", "path": "text_encoder"}
    for part in ("autoencoder", "unet", "text_encoder"):
        assert (tmp_path / part / "model.safetensors").is_file()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "text_encoder" / "tokenizer")
    assert tokenizer(PROMPT)["input_ids"] == ldm.text_encoder.tokenizer(PROMPT)["input_ids"]
    loaded = LatentDiffusion.from_pretrained(tmp_path)
    assert torch.equal(loaded.autoencoder.scale_factor, ldm.autoencoder.scale_factor)
    assert torch.equal(_sample(loaded, [PROMPT, "a small blue square on the left"], num_images_per_prompt=2), images)


def test_unconditional_latent_diffusion_round_trips(tmp_path):
    ldm = _ldm(conditional=False)
    images = _sample(ldm, None, num_images_per_prompt=3, sampler="ddpm")
    assert images.shape == (3, 3, 32, 32)
    ldm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["text_encoder"] is None
    assert not (tmp_path / "text_encoder").exists()
    loaded = LatentDiffusion.from_pretrained(tmp_path)
    assert loaded.text_encoder is None
    assert torch.equal(_sample(loaded, None, num_images_per_prompt=3, sampler="ddpm"), images)
    with pytest.raises(ValueError, match="unconditional"):
        _sample(ldm, [PROMPT])


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    ldm = _ldm()
    context, mask = ldm.text_encoder.encode([PROMPT, PROMPT])
    null, null_mask = ldm.text_encoder.encode(["", ""], allow_empty=True)
    for scale, (c, m) in ((1.0, (context, mask)), (0.0, (null, null_mask))):
        z0 = ddim_sample(ldm.unet, (2, 4, 8, 8), SCHEDULE, steps=4, generator=torch.Generator().manual_seed(0),
                         conditioning={"context": c, "context_mask": m}, progress=False)
        expected = ldm.autoencoder.decode(z0 / ldm.autoencoder.scale_factor).clamp(-1, 1)
        torch.testing.assert_close(_sample(ldm, [PROMPT], num_images_per_prompt=2, guidance_scale=scale), expected)
    assert not torch.allclose(_sample(ldm, [PROMPT], guidance_scale=3.0), _sample(ldm, [PROMPT], guidance_scale=1.0))


@pytest.mark.parametrize("prompts, message", [
    ([""], "prompt 0 is empty"),
    (["a large red dragon"], "never saw"),
    (None, "text-conditioned: pass prompts"),
    (PROMPT, "must be a list of str"),
])
def test_bad_prompts_are_refused_with_the_reason(prompts, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _sample(_ldm(), prompts)


def test_bad_sampler_settings_are_refused():
    with pytest.raises(ValueError, match="sampler must be one of"):
        _sample(_ldm(), [PROMPT], sampler="euler")
    with pytest.raises(ValueError, match="num_images_per_prompt must be a positive int"):
        _sample(_ldm(), [PROMPT], num_images_per_prompt=0)


@pytest.mark.parametrize("unet, text, size, message", [
    (dict(in_channels=3), True, 32, "in_channels=3 but the autoencoder's latents have 4 channels"),
    (dict(context_dim=16), True, 32, "context_dim is 16 but the text encoder's tokens are 32 wide"),
    (dict(context_dim=None), True, 32, "the UNet has no cross-attention"),
    (dict(), False, 32, "there is no text encoder"),
    (dict(), True, 30, "image size 30 is not a multiple of 4: the autoencoder downsamples 2 times; use 32"),
    (dict(), True, 24, "the latents are 6x6 .* not a multiple of 4"),
])
def test_parts_that_do_not_fit_are_named(unet, text, size, message):
    changes = {"in_channels": 4, "out_channels": 4, "context_dim": 32, **unet}
    model = UNet(dataclasses.replace(UNetConfig.tiny(), base_channels=8, num_heads=2, **changes))
    with pytest.raises(ValueError, match=message):
        check_parts(_autoencoder(), model, _text_encoder() if text else None, size)


def test_a_saved_folder_whose_parts_do_not_fit_is_refused(tmp_path):
    _ldm().save_pretrained(tmp_path)
    _unet(context_dim=16).save_pretrained(tmp_path / "unet")  # another model's UNet
    with pytest.raises(ValueError, match="do not fit together: the UNet's context_dim is 16"):
        LatentDiffusion.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no latent diffusion folder"):
        LatentDiffusion.from_pretrained(tmp_path)


@pytest.mark.parametrize("key, value", [
    ("autoencoder", "../elsewhere"), ("unet", "unet/../../elsewhere"), ("unet", "ABSOLUTE"),
    ("text_encoder.path", "..\\elsewhere"),
])
def test_a_part_outside_the_pipeline_folder_is_refused_naming_the_key_and_the_path(tmp_path, key, value):
    pipeline = tmp_path / "pipeline"
    _ldm().save_pretrained(pipeline)
    part = key.split(".")[0]
    shutil.copytree(pipeline / part, tmp_path / "elsewhere")  # a loadable part, there to be read if allowed
    value = str(tmp_path / "elsewhere") if value == "ABSOLUTE" else value
    index = json.loads((pipeline / "config.json").read_text())
    if key == "text_encoder.path":
        index["text_encoder"]["path"] = value
    else:
        index[key] = value
    (pipeline / "config.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"config.json: {key} points at {re.escape(repr(value))}, outside the "
                                         rf"pipeline folder .*copy the part into .*pipeline/{part}"):
        LatentDiffusion.from_pretrained(pipeline)


def test_a_pipeline_config_that_is_damaged_or_of_another_model_names_the_file(tmp_path):
    _ldm().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"describes a UNet, not a LatentDiffusion: give the folder of a pipeline "
                                         r"\(what tinyldm train ldm writes; in Python, load this one with "
                                         r"UNet.from_pretrained\)"):
        LatentDiffusion.from_pretrained(tmp_path / "unet")
    index = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**index, "unet": None}))
    with pytest.raises(ValueError, match=r'config.json: unet must name a sub-folder of .*, got None; write "unet" '):
        LatentDiffusion.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**index, "text_encoder": "text_encoder"}))
    with pytest.raises(ValueError, match=r"config.json: text_encoder must be null or an object such as"):
        LatentDiffusion.from_pretrained(tmp_path)
    text = json.dumps(index)
    (tmp_path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"config.json is damaged: it is not valid JSON \(.*line \d+"):
        LatentDiffusion.from_pretrained(tmp_path)


def test_the_training_loss_trains_unet_and_text_encoder_and_drops_captions():
    ldm = _ldm()
    z0 = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    prompts = [PROMPT] * 4
    loss = ldm.training_loss(z0, prompts, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert ldm.text_encoder.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # trained jointly
    assert all(p.grad is None for p in ldm.autoencoder.parameters())  # frozen
    dropped = ldm.training_loss(z0, prompts, p_uncond=1.0, generator=torch.Generator().manual_seed(0),
                                caption_generator=torch.Generator().manual_seed(0))
    context, mask = ldm.text_encoder.encode_null(4)
    null = diffusion_loss(ldm.unet, z0, SCHEDULE, generator=torch.Generator().manual_seed(0),
                          conditioning={"context": context, "context_mask": mask})
    torch.testing.assert_close(dropped, null)
    assert not torch.allclose(dropped, loss)
    with pytest.raises(ValueError, match="got 3 prompts for 4 latents"):
        ldm.training_loss(z0, prompts[:3])


def test_the_training_loss_takes_the_loops_draws_of_t_and_eps():
    ldm = _ldm()
    z0 = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 10, 25, 49])
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(4))
    context, mask = ldm.text_encoder.encode([PROMPT] * 4)
    expected = diffusion_loss(ldm.unet, z0, SCHEDULE, t=t, eps=eps,
                              conditioning={"context": context, "context_mask": mask})
    torch.testing.assert_close(ldm.training_loss(z0, [PROMPT] * 4, t=t, eps=eps), expected)


def test_an_image_size_that_is_not_a_whole_number_says_so():
    unet = UNet(dataclasses.replace(UNetConfig.tiny(), base_channels=8, num_heads=2, in_channels=4, out_channels=4,
                                    context_dim=32))
    with pytest.raises(TypeError, match="image size 32.5 is a float, not a whole number of pixels"):
        check_parts(_autoencoder(), unet, _text_encoder(), 32.5)


def test_the_latent_cache_reuses_its_file_and_keys_it_by_the_weights(tmp_path, monkeypatch):
    ae = _autoencoder()
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ae.set_scale_factor(0.5)
    latents = latent_cache.cached_latents(ae, images, tmp_path, {"images": "test"}, batch_size=2)
    torch.testing.assert_close(latents, 0.5 * ae.encode(images).mode())
    assert len(list(tmp_path.iterdir())) == 1

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again instead of reading the cache")

    monkeypatch.setattr(latent_cache, "encode_dataset", no_encoding)
    assert torch.equal(latent_cache.cached_latents(ae, images, tmp_path, {"images": "test"}), latents)
    monkeypatch.undo()
    ae.set_scale_factor(0.25)  # other weights: another file
    other = latent_cache.cached_latents(ae, images, tmp_path, {"images": "test"})
    torch.testing.assert_close(other, latents / 2)
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],  # cut short
    lambda data: b"",  # left empty by a full disk
    lambda data: data.replace(b'"latents"', b'"latentz"'),  # readable, but not a cache of latents
], ids=["cut-short", "empty", "no-latents"])
def test_a_damaged_latent_cache_is_deleted_with_a_warning_and_rebuilt(tmp_path, monkeypatch, damage):
    ae = _autoencoder()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = latent_cache.cached_latents(ae, images, tmp_path, {"images": "test"})
    (path,) = tmp_path.iterdir()
    path.write_bytes(damage(path.read_bytes()))
    with pytest.warns(UserWarning, match=rf"the latent cache {re.escape(str(path))} cannot be read .*deleting it and "
                                         r"encoding the images again"):
        again = latent_cache.cached_latents(ae, images, tmp_path, {"images": "test"})
    assert torch.equal(again, latents) and list(tmp_path.iterdir()) == [path]

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again instead of reading the rebuilt cache")

    monkeypatch.setattr(latent_cache, "encode_dataset", no_encoding)
    assert torch.equal(latent_cache.cached_latents(ae, images, tmp_path, {"images": "test"}), latents)


@pytest.mark.skipif(not os.environ.get(TEXT_ENCODER_VAR),
                    reason=f"set {TEXT_ENCODER_VAR} to a local all-MiniLM-L6-v2 folder to test a pretrained encoder")
def test_a_pretrained_text_encoder_is_saved_as_a_reference(tmp_path):
    encoder = PretrainedTextEncoder(max_length=16)
    ldm = LatentDiffusion(_autoencoder(), _unet(encoder.context_dim), SCHEDULE, encoder, 32)
    images = _sample(ldm, [PROMPT])
    ldm.save_pretrained(tmp_path)
    text = json.loads((tmp_path / "config.json").read_text())["text_encoder"]
    assert text["class"] == "PretrainedTextEncoder" and text["context_dim"] == 384 and text["max_length"] == 16
    assert not (tmp_path / "text_encoder").exists()  # no copy of weights that never changed
    assert torch.equal(_sample(LatentDiffusion.from_pretrained(tmp_path), [PROMPT]), images)
