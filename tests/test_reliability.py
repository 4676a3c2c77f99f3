"""Nothing lost, nothing silently wrong: the commands guard their run folders and models, recover from damaged
files, and answer bad input with a message that names the value and the fix, never a traceback."""

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tinyldm.cli.main import main
from tinyldm.jobs.pixel import sample_pixel
from tinyldm.pretrained import checkpoint_dir, save_schedule
from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.training.diffusion_loop import TrainConfig, train_diffusion
from tinyldm.training.run_folder import LOCK_NAME, LossLog, append_run_record
from tinyldm.unet import UNet, UNetConfig

TINY_RUN = ["--config", "tiny", "--steps", "2", "--num-images", "16", "--batch-size", "4", "--threads", "1"]
SMALL_UNET = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(), groups=4)


def _train_pixel(out: Path, *extra: str) -> int:
    return main(["train", "pixel", "--out", str(out), *TINY_RUN, *extra])


def _error(capsys) -> str:
    return capsys.readouterr().err


# --- data loss and silent wrong results --------------------------------------------------------------------------

@pytest.mark.slow
def test_training_refuses_a_folder_that_holds_a_model(tmp_path, capsys):
    model = tmp_path / "pixel-shapes"
    shutil.copytree(checkpoint_dir("pixel-shapes"), model)
    before = (model / "model.safetensors").read_bytes()
    assert _train_pixel(model) == 2
    message = _error(capsys)
    assert f"{model} already holds config.json, model.safetensors" in message and "choose another output" in message
    assert (model / "model.safetensors").read_bytes() == before
    assert not (model / "train_config.json").exists() and not (model / LOCK_NAME).exists()  # left as it was


def test_train_judge_refuses_a_folder_that_holds_a_judge(tmp_path, capsys):
    judge = tmp_path / "judge"
    shutil.copytree(checkpoint_dir("judge-shapes"), judge)
    assert main(["train", "judge", "--out", str(judge), "--steps", "1", "--num-images", "8"]) == 2
    assert f"{judge} already holds" in _error(capsys)


@pytest.mark.slow
def test_a_killed_run_refuses_to_resume_on_other_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train_pixel(out) == 0
    (out / "run.json").unlink()  # a killed run never wrote its record: its settings file must guard it alone
    assert _train_pixel(out, "--resume", "--steps", "3", "--num-images", "24") != 0
    assert "different settings (data_sha256: saved" in _error(capsys)
    assert _train_pixel(out, "--resume", "--steps", "3") == 0  # its own data: resumes


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_process_and_a_stale_lock_is_not(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train_pixel(out) == 0
    holder = os.open(out / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run still training into the folder holds it
        os.ftruncate(holder, 0)
        os.write(holder, b"4242\n")
        assert _train_pixel(out, "--resume", "--steps", "3") == 2
        assert "another run (process 4242) is writing to it" in _error(capsys)
        assert len(LossLog(out / "loss.jsonl").records()) == 2
    finally:
        os.close(holder)
    # The lock file of a killed run is still there, with its PID, but nobody holds the lock: the resume goes on.
    assert (out / LOCK_NAME).read_text().strip() == "4242"
    assert _train_pixel(out, "--resume", "--steps", "3") == 0
    assert [r["step"] for r in LossLog(out / "loss.jsonl").records()] == [1, 2, 3]


def _nan_pixel_model(folder: Path) -> Path:
    with seeded(0):
        model = UNet(SMALL_UNET)
    with torch.no_grad():
        model.conv_out.bias.fill_(float("nan"))
    model.save_pretrained(folder)
    save_schedule(folder, NoiseSchedule.cosine(20), "eps", 8)
    return folder


def test_nan_weights_write_no_black_pictures(tmp_path, capsys):
    model = _nan_pixel_model(tmp_path / "broken")
    out = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(model), "--num-images", "2", "--steps", "2", "--out", str(out)]) == 2
    message = _error(capsys)
    assert "2 of 2 images came out as NaN" in message and "weights hold NaN" in message and "conv_out.bias" in message
    assert not list(out.glob("*.png"))


@pytest.mark.slow
def test_a_huge_guidance_scale_writes_no_black_pictures(tmp_path, capsys):
    out = tmp_path / "generated"
    assert main(["generate", "--prompt", "a large red circle at the top left", "--guidance-scale", "1e30",
                 "--num-images", "2", "--steps", "2", "--sampler", "ddim", "--out", str(out)]) == 2
    message = _error(capsys)
    assert "came out as NaN or infinite" in message and "guidance scale 1e+30" in message
    assert not list(out.glob("*.png"))


@pytest.mark.slow
def test_a_second_generate_leaves_no_stale_pictures(tmp_path):
    out = tmp_path / "generated"
    for n, animation in (("2", ["--animation"]), ("1", [])):
        assert main(["generate", "--prompt", "a large red circle at the top left", "--num-images", n,
                     "--steps", "2", "--sampler", "ddim", "--out", str(out), *animation]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "sample_000.png"]


# --- damaged files -------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip file"])
def test_a_damaged_training_state_is_named_not_a_traceback(tmp_path, capsys, content):
    out = tmp_path / "run"
    assert _train_pixel(out) == 0
    (out / "train_state.pt").write_bytes(content)
    assert _train_pixel(out, "--resume", "--steps", "3") == 2
    assert f"the training state {out / 'train_state.pt'} is damaged" in _error(capsys)
    assert _train_pixel(out) == 2  # and a fresh start still says the folder holds a run
    assert "already holds a run (its train_state.pt is damaged)" in _error(capsys)


def _tiny_run(out: Path, until: int | None = None, resume: bool = False) -> list[float]:
    with seeded(0):
        model = UNet(SMALL_UNET)
    config = TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=2, sample_every=0)
    data = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return train_diffusion(model, data, NoiseSchedule.cosine(20), config, out=out, progress=False, until=until,
                           resume=resume).losses


def test_a_torn_last_log_line_does_not_stop_a_resume(tmp_path):
    whole = _tiny_run(tmp_path / "whole")
    out = tmp_path / "torn"
    _tiny_run(out, until=2)
    with (out / "loss.jsonl").open("a") as log:
        log.write('{"step": 3, "loss": 0.9')  # killed while appending a line
    assert _tiny_run(out, resume=True) == whole
    assert [r["step"] for r in LossLog(out / "loss.jsonl").records()] == [1, 2, 3, 4]


def test_a_damaged_run_record_is_kept_aside_and_the_run_goes_on(tmp_path):
    (tmp_path / "run.json").write_text('{"runs": [{"preset": "tiny"')  # cut short
    with pytest.warns(UserWarning, match="run.json was damaged .* kept as run.json.damaged"):
        append_run_record(tmp_path, {"preset": "tiny", "steps_run": 2}, resume=True)
    assert json.loads((tmp_path / "run.json").read_text()) == {"runs": [{"preset": "tiny", "steps_run": 2}]}
    assert (tmp_path / "run.json.damaged").read_text().startswith('{"runs"')


def test_a_damaged_line_inside_the_log_is_named(tmp_path):
    log = tmp_path / "loss.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\nnot json\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"line 2 of .*loss.jsonl is not a JSON record"):
        LossLog(log).records()


# --- bad input: a message, never a traceback -----------------------------------------------------------------------

@pytest.mark.parametrize("device, message", [
    ("nonsense", "unknown device 'nonsense'; use cpu, cuda, cuda:N or mps"),
    pytest.param("cuda", "PyTorch finds no CUDA GPU on this machine; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ("cuda:7", "PyTorch finds no CUDA GPU" if not torch.cuda.is_available() else "there is no cuda:7"),
])
def test_a_device_that_is_not_there_is_named(tmp_path, capsys, device, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--device", device, "--out", str(tmp_path / "s")])
    assert exit_info.value.code == 2 and message in _error(capsys)


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    def no_work(*args, **kwargs):
        raise AssertionError("the command did its work before checking --out")

    monkeypatch.setattr("tinyldm.jobs.pixel.load_pixel_model", no_work)
    assert main(["sample", "--out", str(blocker / "samples")]) == 2
    assert f"--out {blocker / 'samples'} cannot be written" in _error(capsys)


def test_many_images_are_drawn_in_batches_with_one_animation():
    with seeded(0):
        model = UNet(SMALL_UNET)
    images, frames, labels = sample_pixel(model, NoiseSchedule.cosine(10), 70, 8, sampler="ddim", steps=2,
                                          progress=False)
    assert images.shape == (70, 3, 8, 8)
    assert frames.shape == (3, 64, 3, 8, 8) and labels == [9, 4, -1]  # the first batch's reverse process


@pytest.mark.parametrize("argv, message", [
    (["forward", "--size", "100000", "--out", "x"], "expected a whole number from 1 to 1024, got 100000"),
    (["generate", "--seed", "-1", "--out", "x"], "expected a whole number from 0 to 9223372036854775807, got -1"),
    (["sample", "--seed", str(2**64), "--out", "x"], f"got {2**64}"),
    (["evaluate", "--num-images", "1"], "argument --num-images: expected a whole number at least 2, got 1"),
    (["train", "pixel", "--out", "x", "--checkpoint-every", "-1"], "expected a whole number at least 0, got -1"),
])
def test_out_of_range_numbers_name_the_option_and_the_range(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in _error(capsys)


def test_unknown_words_tell_a_command_line_user_what_to_do(capsys):
    assert main(["generate", "--prompt", "a small blue dragon", "--num-images", "1", "--out", "unused"]) == 2
    assert "tinyldm train ldm --data DIR" in _error(capsys)


# --- small but real ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_checkpoint_every_makes_a_short_run_resumable_and_may_change_on_resume(tmp_path):
    out = tmp_path / "run"
    assert _train_pixel(out, "--checkpoint-every", "1") == 0
    assert json.loads((out / "train_config.json").read_text())["checkpoint_every"] == 1
    assert _train_pixel(out, "--resume", "--steps", "4", "--checkpoint-every", "2") == 0
    assert json.loads((out / "train_config.json").read_text())["checkpoint_every"] == 2
    assert Image.open(out / "loss.png").size[0] > 0
