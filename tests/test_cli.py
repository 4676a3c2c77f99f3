"""The `tinyldm` command writes what it says, and refuses bad arguments with a clear message."""

from pathlib import Path

import pytest
from PIL import Image

from tinyldm.cli.main import main


def test_forward_writes_strip_gif_and_schedules(tmp_path, capsys):
    out = tmp_path / "forward"
    assert main(["forward", "--out", str(out), "--num-images", "2", "--num-steps", "50", "--frames", "6"]) == 0
    printed = capsys.readouterr().out
    for name in ("forward_chain.png", "forward_chain.gif", "schedules.png"):
        assert (out / name).is_file()
        assert str(out / name) in printed  # the command says where its pictures are
    with Image.open(out / "forward_chain.gif") as gif:
        # 6 requested frames: x0, then every 10th step (0, 10, ..., 40) and the last step 49.
        assert gif.n_frames == 7
        assert gif.size == (4 * (2 * 34 + 2), 4 * (1 * 34 + 2))  # two 32px images, 2px padding, scale 4


@pytest.mark.slow
def test_demo_draws_every_prompt_with_the_shipped_pipeline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default out folder is relative: outputs/demo
    assert main(["demo", "--num-images", "2", "--steps", "5"]) == 0
    out = tmp_path / "outputs" / "demo"
    printed = capsys.readouterr().out
    for name in ("prompt_1.png", "prompt_4.png", "demo.png", "reverse_process.gif"):
        assert (out / name).is_file() and str(Path("outputs/demo") / name) in printed
    with Image.open(out / "prompt_1.png") as grid:
        assert grid.size == (4 * (2 * 34 + 2), 4 * (1 * 34 + 2))  # two 32px images in a row, 2px padding, scale 4


def test_same_seed_same_pictures(tmp_path):
    for name in ("a", "b"):
        main(["forward", "--out", str(tmp_path / name), "--num-images", "1", "--num-steps", "20", "--seed", "3"])
    first, second = (Image.open(tmp_path / n / "forward_chain.gif") for n in ("a", "b"))
    for k in range(first.n_frames):
        first.seek(k)
        second.seek(k)
        assert first.tobytes() == second.tobytes()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["forward", "--out", "x", "--num-images", "0"], "expected a positive whole number, got 0"),
        (["forward", "--out", "x", "--schedule", "sigmoid"], "invalid choice: 'sigmoid'"),
        (["forward"], "the following arguments are required: --out"),
        (["train", "pixel", "--config", "huge", "--out", "x"], "unknown preset 'huge'; choose from full, small, tiny"),
        (["train", "pixel", "--config", "tiny"], "the following arguments are required: --out"),
        (["sample", "--out", "x", "--sampler", "euler"], "invalid choice: 'euler'"),
        (["train", "pixel", "--out", "x", "--steps", "0"], "expected a positive whole number, got 0"),
        (["train", "autoencoder", "--config", "huge", "--out", "x"],
         "unknown preset 'huge'; choose from full, small, tiny"),
        (["train", "autoencoder", "--config", "tiny"], "the following arguments are required: --out"),
        (["train", "autoencoder", "--out", "x", "--factor", "3"], "argument --factor: invalid choice: 3"),
        (["train", "autoencoder", "--out", "x", "--loss", "wgan"], "argument --loss: invalid choice: 'wgan'"),
        (["train", "autoencoder", "--out", "x", "--factor", "four"], "argument --factor: invalid int value"),
        (["train", "autoencoder", "--out", "x", "--batch-size", "-2"], "expected a positive whole number, got -2"),
        (["train", "vqgan", "--out", "x"], "invalid choice: 'vqgan'"),
        (["reconstruct", "--num-images", "4"], "the following arguments are required: --out"),
        (["reconstruct", "--out", "x", "--num-images", "0"], "expected a whole number at least 2, got 0"),
        (["reconstruct", "--out", "x", "--size", "abc"], "expected a positive whole number, got 'abc'"),
        (["train", "ldm", "--config", "huge", "--out", "x"], "unknown preset 'huge'; choose from full, small, tiny"),
        (["generate", "--prompt", "a red circle"], "the following arguments are required: --out"),
        (["generate", "--out", "x", "--guidance-scale", "-1"], "expected a finite number >= 0, got -1"),
        (["generate", "--out", "x", "--guidance-scale", "strong"], "expected a number, got 'strong'"),
        (["generate", "--out", "x", "--num-images", "0"], "expected a positive whole number, got 0"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_image_size_shapes_cannot_draw_is_reported(tmp_path, capsys):
    assert main(["forward", "--out", str(tmp_path), "--size", "4", "--num-steps", "10"]) == 2
    err = capsys.readouterr().err
    assert "tinyldm forward: error:" in err and "4" in err
