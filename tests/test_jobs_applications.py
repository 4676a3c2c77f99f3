"""The inpainting and super-resolution jobs: a tiny fine-tune runs through the command, resumes exactly and
exports a loadable model."""

import json

import pytest
import torch

from tinyldm.cli.main import main
from tinyldm.concat_conditioning import ConcatConditionedLDM
from tinyldm.jobs.applications import SR_PRESETS, inpainting_data, photo_base, train_application
from tinyldm.ldm import LatentDiffusion

CPU = torch.device("cpu")
RUN = dict(steps=4, batch_size=4, num_images=16, progress=False)


@pytest.fixture(scope="module")
def base_folder(tiny_ldm_folder):
    return tiny_ldm_folder  # conftest's tiny text-to-image pipeline, saved: the model each run fine-tunes


@pytest.mark.slow
@pytest.mark.parametrize("kind, objective", [("inpaint", "diffusion"), ("sr", "diffusion"), ("sr", "regression")])
def test_a_run_stopped_and_resumed_equals_an_uninterrupted_one(base_folder, tmp_path, kind, objective):
    options = dict(base=base_folder, cache_dir=tmp_path / "cache", objective=objective, **RUN)
    whole = train_application(kind, "tiny", tmp_path / "whole", CPU, **options)
    train_application(kind, "tiny", tmp_path / "split", CPU, until=3, **options)
    resumed = train_application(kind, "tiny", tmp_path / "split", CPU, resume=True, **options)
    assert resumed.steps_run == 1 and resumed.losses == whole.losses
    a = ConcatConditionedLDM.from_pretrained(tmp_path / "whole")
    b = ConcatConditionedLDM.from_pretrained(tmp_path / "split")
    assert (a.kind, a.objective) == (kind, objective)
    for part in ("unet", "text_encoder"):
        for x, y in zip(getattr(a, part).state_dict().values(), getattr(b, part).state_dict().values()):
            assert torch.equal(x, y), part


@pytest.mark.slow
def test_train_inpaint_and_sr_commands_write_loadable_models(base_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYLDM_CACHE", str(tmp_path / "cache"))
    for kind, extra in (("inpaint", []), ("sr", ["--objective", "regression"])):
        out = tmp_path / kind
        assert main(["train", kind, "--config", "tiny", "--out", str(out), "--base", str(base_folder), "--steps",
                     "2", "--batch-size", "4", "--num-images", "8", *extra]) == 0
        model = ConcatConditionedLDM.from_pretrained(out)
        assert model.kind == kind and json.loads((out / "run.json").read_text())["runs"][0]["kind"] == kind
        assert main(["train", kind, "--config", "tiny", "--out", str(out), "--base", str(base_folder), "--steps",
                     "3", "--batch-size", "4", "--num-images", "8", "--resume", *extra]) == 0
    assert "trained 1 steps" in capsys.readouterr().out


def test_inpainting_data_packs_latents_masked_latents_and_masks(base_folder):
    ldm = LatentDiffusion.from_pretrained(base_folder)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    data, index = inpainting_data(ldm, images, 2, 0, None, {})
    assert data.shape == (6, 9, 8, 8) and index.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(data[:3, :4], data[3:, :4]) and set(data[:, 8].unique().tolist()) <= {0.0, 1.0}


def test_regression_is_refused_for_inpainting(base_folder, tmp_path):
    with pytest.raises(ValueError, match="regression only for sr"):
        train_application("inpaint", "tiny", tmp_path / "x", CPU, objective="regression", base=base_folder)


@pytest.mark.slow
def test_train_sr_on_photos_builds_from_scratch_trains_through_the_command_and_upscales(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLDM_CACHE", str(tmp_path / "cache"))
    for objective in ("diffusion", "regression"):
        out = tmp_path / objective
        assert main(["train", "sr", "--config", "tiny", "--data", "photos", "--objective", objective, "--out",
                     str(out), "--steps", "2", "--batch-size", "4", "--num-images", "8"]) == 0
        model = ConcatConditionedLDM.from_pretrained(out)
        assert (model.kind, model.objective, model.text_encoder) == ("sr", objective, None)
        run = json.loads((out / "run.json").read_text())["runs"][0]
        assert run["data"]["source"] == "photos" and run["data"]["permute_colours"] is False
        assert json.loads((out / "train_config.json").read_text())["data"] == "photos"
        low = torch.zeros(2, 3, 8, 8)
        images = model.upscale(low, steps=2, generator=torch.Generator().manual_seed(0), progress=False)
        assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_photo_base_is_the_photo_autoencoder_and_a_fresh_unet_without_text_fixed_by_the_seed():
    recipe = SR_PRESETS["tiny"]
    base, again = photo_base(recipe, 32, seed=0), photo_base(recipe, 32, seed=0)
    assert base.text_encoder is None and base.unet.config.context_dim is None
    assert base.unet.config.in_channels == base.unet.config.out_channels == 4 and base.latent_shape == (4, 8, 8)
    assert base.schedule.kind == "scaled_linear" and float(base.autoencoder.scale_factor) != 1.0
    for x, y in zip(base.unet.state_dict().values(), again.unet.state_dict().values()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("kind, options, message", [
    ("inpaint", {"data": "photos"}, "trains super-resolution only"),
    ("sr", {"data": "photos", "base": "data/checkpoints/ldm-shapes"}, "takes no base"),
    ("sr", {"data": "mnist"}, "data must be None"),
    ("sr", {"permute_colours": True}, "photo crops only"),
])
def test_bad_photo_combinations_are_refused_naming_the_fix(tmp_path, kind, options, message):
    with pytest.raises(ValueError, match=message):
        train_application(kind, "tiny", tmp_path / "x", CPU, **options)
    assert not (tmp_path / "x").exists()


def test_the_inpaint_command_takes_no_photos(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "inpaint", "--config", "tiny", "--data", "photos", "--out", str(tmp_path / "x")])
    assert "unrecognized arguments: --data photos" in capsys.readouterr().err
