"""The training, sampling and evaluation commands run end to end on tiny settings and report bad input."""

import json

import pytest
import torch
from PIL import Image

from tinyldm.cli import main
from tinyldm.jobs import run_sampler, sample_pixel
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "pixel", "--config", "tiny", "--out", str(out), "--steps", "2", "--num-images", "64",
                 "--batch-size", "4"]) == 0
    return out


def test_train_pixel_writes_a_loadable_run(run):
    for name in ("config.json", "model.safetensors", "schedule.json", "train_state.pt", "loss.jsonl", "loss.png",
                 "run.json"):
        assert (run / name).is_file(), name
    assert len((run / "loss.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "run.json").read_text())["runs"][0]["preset"] == "tiny"
    assert UNet.from_pretrained(run).config == UNetConfig.tiny()


def test_train_pixel_resumes_and_refuses_to_overwrite(run, capsys):
    assert main(["train", "pixel", "--config", "tiny", "--out", str(run), "--steps", "2", "--num-images", "64",
                 "--batch-size", "4"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "pixel", "--config", "tiny", "--out", str(run), "--steps", "3", "--num-images", "64",
                 "--batch-size", "4", "--resume"]) == 0
    assert len((run / "loss.jsonl").read_text().splitlines()) == 3
    assert len(json.loads((run / "run.json").read_text())["runs"]) == 2


def test_sample_writes_pngs_a_grid_and_a_gif(run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(run), "--num-images", "2", "--seed", "1", "--out", str(out),
                 "--sampler", "ddim", "--steps", "4"]) == 0
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


def test_ancestral_sampling_on_fewer_steps_is_ddim_with_eta_one():
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(),
                            groups=4))
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)  # a model that predicts something
    schedule = NoiseSchedule.cosine(20)
    shape = (2, 3, 8, 8)
    ours = run_sampler(model, shape, schedule, "ddpm", 5, torch.Generator().manual_seed(0), progress=False)
    reference = ddim_sample(model, shape, schedule, steps=5, eta=1.0, generator=torch.Generator().manual_seed(0),
                            clip_x0=True, progress=False)
    assert torch.equal(ours, reference)
    with pytest.raises(ValueError, match="sampler must be 'ddpm' or 'ddim'"):
        run_sampler(model, shape, schedule, "euler", 5)


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
