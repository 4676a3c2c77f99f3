"""The latent diffusion jobs: a tiny run trains, resumes exactly, exports a loadable pipeline and generates."""

import dataclasses
import json

import pytest
import torch

from tinyldm.jobs import ldm as ldm_jobs
from tinyldm.jobs.ldm import LDM_PRESETS, generate_ldm, load_ldm, train_ldm
from tinyldm.ldm import LatentDiffusion
from tinyldm.training import latent_cache
from tinyldm.training.run_folder import TRAIN_CONFIG_NAME

CPU = torch.device("cpu")
RUN = dict(steps=4, batch_size=4, num_images=32, progress=False)


@pytest.fixture(autouse=True)
def tiny_preset(monkeypatch):
    """The tiny preset with half the captions dropped (so resuming must restore the coin flips), a narrower UNet
    and a sample grid every 2 steps (decoded through the autoencoder)."""
    recipe = LDM_PRESETS["tiny"]
    monkeypatch.setitem(LDM_PRESETS, "tiny", dataclasses.replace(
        recipe, p_uncond=0.5, unet=dataclasses.replace(recipe.unet, base_channels=8, num_heads=2),
        train=dataclasses.replace(recipe.train, checkpoint_every=2, sample_every=2, sample_steps=2, num_samples=4)))


@pytest.mark.slow
def test_a_run_stopped_and_resumed_equals_an_uninterrupted_one(tiny_autoencoder, tmp_path):
    whole = train_ldm("tiny", tmp_path / "whole", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", **RUN)
    train_ldm("tiny", tmp_path / "split", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", until=3, **RUN)
    resumed = train_ldm("tiny", tmp_path / "split", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", resume=True,
                        **RUN)
    assert resumed.steps_run == 1 and resumed.losses == whole.losses  # bit for bit, caption dropout included
    a = LatentDiffusion.from_pretrained(tmp_path / "whole")
    b = LatentDiffusion.from_pretrained(tmp_path / "split")
    for part in ("unet", "text_encoder"):
        for x, y in zip(getattr(a, part).state_dict().values(), getattr(b, part).state_dict().values()):
            assert torch.equal(x, y), part
    assert len(json.loads((tmp_path / "split" / "run.json").read_text())["runs"]) == 2
    assert (tmp_path / "whole" / "samples" / "step_000004.png").is_file()


@pytest.mark.slow
def test_the_run_folder_is_a_pipeline_that_generates(tiny_autoencoder, tmp_path):
    train_ldm("tiny", tmp_path / "run", CPU, tiny_autoencoder, cache_dir=None, **RUN)
    ldm = load_ldm(tmp_path / "run")
    assert ldm.text_encoder is not None and ldm.latent_shape == (4, 8, 8)
    images, frames, labels = generate_ldm(ldm, "a small blue square on the left", num_images=2, steps=4, frames=2,
                                          progress=False)
    assert images.shape == (2, 3, 32, 32) and frames.shape == (3, 2, 3, 32, 32)
    assert labels == [999, 499, -1] and torch.equal(frames[-1], images)
    with pytest.raises(ValueError, match="never saw"):
        generate_ldm(ldm, "a small blue dragon", num_images=1, steps=2, progress=False)


@pytest.mark.slow
def test_unconditional_latent_diffusion_trains_without_a_text_encoder(tiny_autoencoder, tmp_path):
    train_ldm("tiny", tmp_path / "run", CPU, tiny_autoencoder, unconditional=True, cache_dir=None, **RUN)
    ldm = load_ldm(tmp_path / "run")
    assert ldm.text_encoder is None and ldm.unet.config.context_dim is None
    images, _, _ = generate_ldm(ldm, None, num_images=3, steps=2, progress=False)
    assert images.shape == (3, 3, 32, 32)


@pytest.mark.slow
def test_a_resume_with_other_settings_and_an_overwrite_are_refused(tiny_autoencoder, tmp_path):
    out = tmp_path / "run"
    train_ldm("tiny", out, CPU, tiny_autoencoder, cache_dir=None, until=2, **RUN)
    with pytest.raises(ValueError, match="unconditional: saved False, now True"):
        train_ldm("tiny", out, CPU, tiny_autoencoder, unconditional=True, resume=True, cache_dir=None, **RUN)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_ldm("tiny", out, CPU, tiny_autoencoder, cache_dir=None, **RUN)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train_ldm("huge", out, CPU, tiny_autoencoder)
    with pytest.raises(ValueError, match=r"the full preset needs a 64x64 autoencoder, and none is shipped: train one "
                                         r"first \(tinyldm train autoencoder --config full"):
        train_ldm("full", tmp_path / "full", CPU)


@pytest.mark.slow
def test_a_second_run_reads_the_latent_cache(tiny_autoencoder, tmp_path, monkeypatch):
    train_ldm("tiny", tmp_path / "a", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", **{**RUN, "steps": 1})
    assert len(list((tmp_path / "cache").glob("latents-*.safetensors"))) == 1

    def no_encoding(*args, **kwargs):
        raise AssertionError("the dataset was encoded again")

    monkeypatch.setattr(latent_cache, "encode_dataset", no_encoding)
    train_ldm("tiny", tmp_path / "b", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", **{**RUN, "steps": 1})
    assert TRAIN_CONFIG_NAME in {p.name for p in (tmp_path / "b").iterdir()}


def test_train_diffusion_wants_one_caption_per_item():
    from tinyldm.schedule import NoiseSchedule
    from tinyldm.training.diffusion_loop import TrainConfig, train_diffusion
    from tinyldm.unet import UNet, UNetConfig

    model = UNet(UNetConfig(in_channels=4, out_channels=4, base_channels=8, channel_mults=(1,), attention_levels=(),
                            groups=4))
    with pytest.raises(ValueError, match="got 3 captions for 4 items of data; pass one per item"):
        train_diffusion(model, torch.zeros(4, 4, 8, 8), NoiseSchedule.cosine(10), TrainConfig(steps=1),
                        captions=["a", "b", "c"], progress=False)

@pytest.mark.slow
def test_shipped_pipeline_draws_what_captions_say_including_unseen_pairs():
    # The shipped model card reports 100% over all 432 captions with 50 steps; 20 steps on 8 captions is a quick
    # regression check that the files still load and fit together and that the text still steers the image.
    from tinyldm.data.shapes import HELD_OUT, parse_caption
    from tinyldm.evaluation.judge import Judge
    from tinyldm.evaluation.metrics import caption_accuracy
    from tinyldm.pretrained import checkpoint_dir

    ldm = load_ldm(checkpoint_dir("ldm-shapes"))
    judge = Judge.from_pretrained(checkpoint_dir("judge-shapes"))
    prompts = ["a large red circle at the top left", "a small yellow square in the center",
               "a small purple diamond on the right", "a large orange triangle at the bottom",
               "a large blue triangle at the bottom right", "a small green circle on the left",
               "a large red square at the top", "a small yellow diamond at the bottom left"]
    assert sum((parse_caption(p)["color"], parse_caption(p)["shape"]) in HELD_OUT for p in prompts) == 4
    images = ldm.sample(prompts, steps=20, generator=torch.Generator().manual_seed(0), progress=False)
    assert caption_accuracy(judge, images, prompts)["all"] >= 7 / 8


# ---------------------------------------------------------------- your own data


@pytest.fixture
def folder(tmp_path):
    """Four 40x30 captioned pictures."""
    from PIL import Image

    path = tmp_path / "pictures"
    path.mkdir()
    captions = ["a black cat", "a white dog", "a cat on a mat", "a ball"]
    for k, text in enumerate(captions):
        Image.new("RGB", (40, 30), (60 * k, 200 - 40 * k, 90)).save(path / f"{k}.png")
    (path / "captions.jsonl").write_text("".join(json.dumps({"file": f"{k}.png", "caption": text}) + "\n"
                                                 for k, text in enumerate(captions)))
    return path


@pytest.mark.slow
def test_the_latent_cache_of_a_folder_follows_its_pictures(tiny_autoencoder, folder, tmp_path, monkeypatch):
    from PIL import Image

    run = {**RUN, "steps": 1, "num_images": None}
    train_ldm("tiny", tmp_path / "a", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", data=folder, **run)
    train_ldm("tiny", tmp_path / "b", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", data=folder, **run)
    assert len(list((tmp_path / "cache").glob("latents-*.safetensors"))) == 1  # the same pictures: one entry
    Image.new("RGB", (40, 30), (255, 255, 255)).save(folder / "2.png")  # same name, same size, other pixels
    encoded = []
    monkeypatch.setattr(latent_cache, "encode_dataset", lambda ae, images, *a: encoded.append(images) or
                        torch.zeros(images.shape[0], 4, 8, 8))
    train_ldm("tiny", tmp_path / "c", CPU, tiny_autoencoder, cache_dir=tmp_path / "cache", data=folder, **run)
    assert len(encoded) == 1 and (encoded[0][2] == 1).all()  # encoded afresh, with the new picture
    assert len(list((tmp_path / "cache").glob("latents-*.safetensors"))) == 2
    with pytest.raises(ValueError, match="data_sha256: saved"):
        train_ldm("tiny", tmp_path / "a", CPU, tiny_autoencoder, cache_dir=None, data=folder, resume=True,
                  **{**run, "steps": 2})


def test_caption_text_config_learns_the_words_and_the_longest_caption():
    config = ldm_jobs.caption_text_config(LDM_PRESETS["tiny"].text_encoder, ["a black cat", "a cat, on a mat!"])
    assert config.vocabulary == ("a", "cat", "!", ",", "black", "mat", "on")  # by falling frequency, then A-Z
    assert config.max_length == 2 + 7 and config.hidden_size == LDM_PRESETS["tiny"].text_encoder.hidden_size
    with pytest.raises(ValueError, match=r"'cat cat cat.*has 80 tokens with \[CLS\] and \[SEP\]; the small text "
                                         r"encoder takes at most 77"):
        ldm_jobs.caption_text_config(config, ["a cat", " ".join(["cat"] * 78)])


@pytest.mark.slow
def test_the_pretrained_encoder_trains_nothing_for_text(tiny_autoencoder, folder, tmp_path, monkeypatch):
    import os

    from tinyldm.text import TEXT_ENCODER_VAR, PretrainedTextEncoder

    if not os.environ.get(TEXT_ENCODER_VAR):
        pytest.skip(f"{TEXT_ENCODER_VAR} is not set: point it at a local all-MiniLM-L6-v2 folder")

    def no_tokenizer(*args):
        raise AssertionError("a tokenizer was trained for the pretrained encoder")

    monkeypatch.setattr(ldm_jobs, "caption_text_config", no_tokenizer)
    recipe = LDM_PRESETS["tiny"]
    monkeypatch.setitem(LDM_PRESETS, "tiny", dataclasses.replace(recipe, text_encoder="pretrained"))
    train_ldm("tiny", tmp_path / "run", CPU, tiny_autoencoder, cache_dir=None, data=folder,
              **{**RUN, "steps": 1, "num_images": None})
    ldm = load_ldm(tmp_path / "run")
    assert isinstance(ldm.text_encoder, PretrainedTextEncoder) and ldm.unet.config.context_dim == 384
    images, _, _ = generate_ldm(ldm, "a dog on a mat", num_images=1, steps=2, progress=False)
    assert images.shape == (1, 3, 32, 32)
