"""The training, sampling and evaluation commands run end to end on tiny settings and report bad input."""

import dataclasses
import json
import os
import shutil
import sys

import pytest
import torch
from PIL import Image

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL
from tinyldm.cli.main import main
from tinyldm.jobs.pixel import sample_pixel
from tinyldm.ldm import LatentDiffusion
from tinyldm.perceptual import LPIPS_WEIGHTS_VAR
from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "pixel", "--config", "tiny", "--out", str(out), "--steps", "2", "--num-images", "64",
                 "--batch-size", "4"]) == 0
    return out


@pytest.mark.slow
def test_train_pixel_writes_a_loadable_run(run):
    for name in ("config.json", "model.safetensors", "schedule.json", "train_state.pt", "loss.jsonl", "loss.png",
                 "run.json"):
        assert (run / name).is_file(), name
    assert len((run / "loss.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "run.json").read_text())["runs"][0]["preset"] == "tiny"
    assert UNet.from_pretrained(run).config == UNetConfig.tiny()


def test_an_unknown_preset_names_the_presets_there_are(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "pixel", "--config", "huge", "--out", str(tmp_path / "x")])
    assert "unknown preset 'huge'; choose from full, small, tiny" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_train_pixel_resumes_and_refuses_to_overwrite(run, capsys):
    assert main(["train", "pixel", "--config", "tiny", "--out", str(run), "--steps", "2", "--num-images", "64",
                 "--batch-size", "4"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "pixel", "--config", "tiny", "--out", str(run), "--steps", "3", "--num-images", "64",
                 "--batch-size", "4", "--resume"]) == 0
    assert len((run / "loss.jsonl").read_text().splitlines()) == 3
    assert len(json.loads((run / "run.json").read_text())["runs"]) == 2


@pytest.mark.slow
def test_sample_writes_pngs_a_grid_and_a_gif(run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(run), "--num-images", "2", "--seed", "1", "--out", str(out),
                 "--sampler", "ddim", "--steps", "4", "--animation"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "reverse_process.gif", "sample_000.png", "sample_001.png"]
    assert Image.open(out / "sample_000.png").size == (32, 32)
    with Image.open(out / "reverse_process.gif") as gif:
        assert gif.n_frames == 5  # x_T and the output of each of the 4 steps
    assert str(out / "grid.png") in capsys.readouterr().out


def test_ddpm_sampling_keeps_about_the_requested_frames():
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(),
                            groups=4))
    images, frames, labels = sample_pixel(model, NoiseSchedule.cosine(20), 2, 8, sampler="ddpm", steps=20,
                                          frames=5, progress=False)
    assert images.shape == (2, 3, 8, 8) and frames.shape == (6, 2, 3, 8, 8)
    assert labels == [19, 15, 11, 7, 3, -1]  # the full chain: every step of Ho et al.'s Algorithm 2


@pytest.mark.slow
def test_train_judge_and_evaluate(run, tmp_path, capsys):
    judge = tmp_path / "judge"
    assert main(["train", "judge", "--out", str(judge), "--steps", "2", "--num-images", "64"]) == 0
    report = json.loads((judge / "accuracy.json").read_text())
    assert set(report["accuracy_on_fresh_images"]) == {"color", "shape", "size", "position", "all", "valid"}
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run), "--judge", str(judge), "--num-images", "4", "--steps", "2",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and 0 <= metrics["valid_fraction"] <= 1
    assert (out / "samples.png").is_file()


def test_a_missing_checkpoint_is_reported(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")]) == 2
    assert "no model folder" in capsys.readouterr().err


def _needs_lpips():
    if not os.environ.get(LPIPS_WEIGHTS_VAR):
        pytest.skip(f"the autoencoder presets use LPIPS: set {LPIPS_WEIGHTS_VAR} to an AlexNet features "
                    "safetensors file to run it offline")


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    _needs_lpips()
    out = tmp_path_factory.mktemp("autoencoder")
    assert main(["train", "autoencoder", "--config", "tiny", "--out", str(out), "--steps", "2", "--num-images", "32",
                 "--batch-size", "4"]) == 0
    return out


@pytest.mark.slow
def test_train_autoencoder_writes_a_loadable_run_and_resumes(autoencoder_run, capsys):
    run = autoencoder_run
    for name in ("config.json", "model.safetensors", "train_state.pt", "loss.jsonl", "loss.png", "run.json"):
        assert (run / name).is_file(), name
    model = AutoencoderKL.from_pretrained(run)
    assert model.config == AutoencoderConfig.tiny() and model.scale_factor.item() != 1.0
    assert main(["train", "autoencoder", "--config", "tiny", "--out", str(run), "--steps", "3", "--num-images", "32",
                 "--batch-size", "4", "--resume"]) == 0
    assert "latent scale factor" in capsys.readouterr().out
    assert len((run / "loss.jsonl").read_text().splitlines()) == 3
    runs = json.loads((run / "run.json").read_text())["runs"]
    assert [r["steps_run"] for r in runs] == [2, 1] and runs[0]["factor"] == 4


@pytest.mark.slow
def test_train_autoencoder_at_another_factor(tmp_path):
    _needs_lpips()
    assert main(["train", "autoencoder", "--config", "tiny", "--out", str(tmp_path), "--steps", "1", "--num-images",
                 "8", "--batch-size", "2", "--factor", "8"]) == 0
    model = AutoencoderKL.from_pretrained(tmp_path)
    assert model.downsampling_factor == 8 and model.encode(torch.zeros(1, 3, 32, 32)).mean.shape == (1, 4, 4, 4)


@pytest.mark.slow
def test_reconstruct_writes_a_figure_and_metrics(autoencoder_run, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(autoencoder_run), "--num-images", "8", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 8 and metrics["split"] == "test" and metrics["seed"] == 1
    assert {"psnr", "lpips", "agree_all", "fid"} <= set(metrics) and 0 <= metrics["agree_all"] <= 1
    assert Image.open(out / "reconstructions.png").size[0] > 300
    printed = capsys.readouterr().out
    assert '"psnr"' in printed and str(out / "reconstructions.png") in printed
    assert main(["reconstruct", "--checkpoint", str(autoencoder_run), "--num-images", "4", "--no-lpips", "--out",
                 str(out)]) == 0
    assert "lpips" not in json.loads((out / "metrics.json").read_text())


def test_reconstruct_reports_missing_files_and_too_few_images(tmp_path, capsys):
    assert main(["reconstruct", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "no model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reconstruct", "--num-images", "1", "--out", str(tmp_path / "r")])
    assert "argument --num-images: expected a whole number at least 2, got 1" in capsys.readouterr().err


@pytest.mark.slow
def test_train_autoencoder_on_photos_and_reconstruct_the_test_photographs(tmp_path, capsys):
    _needs_lpips()
    run = tmp_path / "run"
    assert main(["train", "autoencoder", "--config", "tiny", "--data", "photos", "--out", str(run), "--steps", "2",
                 "--num-images", "16", "--batch-size", "4"]) == 0
    data = json.loads((run / "run.json").read_text())["runs"][0]["data"]
    assert data["source"] == "photos" and data["split"] == "train" and "chelsea" not in data["photographs"]
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(run), "--data", "photos", "--num-images", "8", "--out",
                 str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "photos" and metrics["photographs"] == ["chelsea", "gravel", "rocket"]
    assert {"psnr", "lpips", "hf_ratio", "c2st_accuracy", "c2st_ci95"} <= set(metrics)
    assert "agree_all" not in metrics and metrics["c2st_images"] == 8


@pytest.mark.slow
def test_train_autoencoder_with_a_loss_recipe_records_it(tmp_path, capsys):
    # mse needs no LPIPS weights; the recipe reaches the loss, the settings and the run record
    run = tmp_path / "mse"
    assert main(["train", "autoencoder", "--config", "tiny", "--data", "photos", "--loss", "mse", "--out", str(run),
                 "--steps", "2", "--num-images", "8", "--batch-size", "2"]) == 0
    assert "tiny preset, mse loss" in capsys.readouterr().out
    settings = json.loads((run / "train_config.json").read_text())
    assert settings["loss_recipe"] == "mse" and settings["loss"]["pixel_loss"] == "l2"
    assert (settings["loss"]["perceptual_weight"], settings["loss"]["disc_weight"]) == (0, 0)
    assert json.loads((run / "run.json").read_text())["runs"][0]["loss_recipe"] == "mse"
    assert "l2" in json.loads((run / "loss.jsonl").read_text().splitlines()[-1])


def test_photos_at_a_size_the_factor_cannot_take_are_refused(tiny_autoencoder, tmp_path, capsys):
    assert main(["reconstruct", "--checkpoint", str(tiny_autoencoder), "--data", "photos", "--size", "30",
                 "--no-lpips", "--out", str(tmp_path / "rec")]) == 2
    assert "image size 30 is not a multiple of 4: the autoencoder downsamples 2 times; use 32" in \
        capsys.readouterr().err
    _needs_lpips()
    assert main(["train", "autoencoder", "--config", "tiny", "--data", "photos", "--image-size", "30", "--out",
                 str(tmp_path / "run")]) == 2
    assert "image size 30 is not a multiple of 4" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_missing_scikit_image_is_reported_with_the_install_command(tiny_autoencoder, tmp_path, monkeypatch,
                                                                     capsys):
    from tinyldm.data import photos

    photos._photograph.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    try:
        assert main(["reconstruct", "--checkpoint", str(tiny_autoencoder), "--data", "photos", "--no-lpips", "--out",
                     str(tmp_path / "rec")]) == 2
    finally:
        photos._photograph.cache_clear()
    assert "pip install scikit-image" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_lpips_weights_are_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LPIPS_WEIGHTS_VAR, str(tmp_path / "no-such-file.safetensors"))
    assert main(["train", "autoencoder", "--config", "tiny", "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert "no AlexNet weights file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.fixture(scope="module")
def ldm_run(tmp_path_factory):
    """A two-step text-to-image run on a fresh tiny autoencoder (lesson 4's training is not this test's job)."""
    root = tmp_path_factory.mktemp("ldm")
    with seeded(0):
        AutoencoderKL(AutoencoderConfig.tiny()).save_pretrained(root / "autoencoder")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINYLDM_CACHE", str(root / "cache"))  # the latent cache, kept out of the home folder
        assert main(["train", "ldm", "--config", "tiny", "--out", str(root / "run"), "--autoencoder",
                     str(root / "autoencoder"), "--steps", "2", "--num-images", "64", "--batch-size", "4"]) == 0
    assert len(list((root / "cache" / "latents").iterdir())) == 1
    return root / "run"


@pytest.mark.slow
def test_train_ldm_writes_a_loadable_pipeline(ldm_run):
    for name in ("config.json", "schedule.json", "autoencoder/model.safetensors", "unet/model.safetensors",
                 "text_encoder/model.safetensors", "train_state.pt", "loss.jsonl", "loss.png", "run.json"):
        assert (ldm_run / name).is_file(), name
    assert json.loads((ldm_run / "run.json").read_text())["runs"][0]["preset"] == "tiny"
    assert LatentDiffusion.from_pretrained(ldm_run).latent_shape == (4, 8, 8)


@pytest.mark.slow
def test_generate_writes_the_animation_only_when_asked_and_refuses_one_of_many_images(ldm_run, tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["generate", "--checkpoint", str(ldm_run), "--prompt", "a large red circle at the top left",
                 "--steps", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"sample_{k:03d}.png" for k in range(4)]
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(ldm_run), "--prompt", "a large red circle at the top left",
                 "--steps", "2", "--num-images", "17", "--animation", "--out", str(tmp_path / "many")]) == 2
    assert "--animation draws all 17 images in every frame" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_writes_pngs_a_grid_and_a_gif(ldm_run, tmp_path, capsys):
    out = tmp_path / "generated"
    assert main(["generate", "--checkpoint", str(ldm_run), "--prompt", "a large red circle at the top left",
                 "--num-images", "2", "--seed", "1", "--guidance-scale", "2", "--sampler", "ddim", "--steps", "4",
                 "--out", str(out), "--animation"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "reverse_process.gif", "sample_000.png", "sample_001.png"]
    assert Image.open(out / "sample_000.png").size == (32, 32)
    with Image.open(out / "reverse_process.gif") as gif:
        # Up to 5 frames (4 steps' decoded x0 predictions, then the images); Pillow merges the identical ones
        # that a two-step model draws.
        assert 2 <= gif.n_frames <= 5
    assert str(out / "grid.png") in capsys.readouterr().out


@pytest.mark.parametrize("prompt, message", [
    ([], "pass --prompt"),
    (["--prompt", ""], "prompt 0 is empty"),
    (["--prompt", "a large red dragon"], "never saw: ['dragon']"),
])
@pytest.mark.slow
def test_generate_reports_bad_prompts(ldm_run, tmp_path, capsys, prompt, message):
    assert main(["generate", "--checkpoint", str(ldm_run), *prompt, "--num-images", "1", "--steps", "2",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "tinyldm generate: error:" in err and message in err


@pytest.mark.slow
def test_generate_reports_a_checkpoint_whose_parts_do_not_fit(ldm_run, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(ldm_run, folder)
    config = dataclasses.replace(UNet.from_pretrained(folder / "unet").config, in_channels=3, out_channels=3)
    UNet(config).save_pretrained(folder / "unet")  # a pixel UNet where the latent one was
    assert main(["generate", "--checkpoint", str(folder), "--prompt", "a small blue square on the left",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "do not fit together" in err and "in_channels=3" in err


@pytest.mark.slow
def test_generate_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "nowhere"), "--prompt", "a small blue square on the left",
                 "--out", str(tmp_path / "out")]) == 2
    assert "no latent diffusion folder" in capsys.readouterr().err
