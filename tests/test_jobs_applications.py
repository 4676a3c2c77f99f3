"""The inpainting and super-resolution jobs: a tiny fine-tune runs through the command, resumes exactly and
exports a loadable model."""

import json

import pytest
import torch
from test_concat_conditioning import tiny_base

from tinyldm.cli.main import main
from tinyldm.concat_conditioning import ConcatConditionedLDM
from tinyldm.jobs.applications import inpainting_data, train_application
from tinyldm.ldm import LatentDiffusion

CPU = torch.device("cpu")
RUN = dict(steps=4, batch_size=4, num_images=16, progress=False)


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base") / "ldm"
    tiny_base().save_pretrained(folder)
    return folder


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
