"""The training loop: the loss falls, resuming is exact, non-finite losses stop the run, files are written."""

import importlib
import inspect
import json
import math

import pytest
import torch

from tinyldm.runtime import atomic_write, seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.training.diffusion_loop import NonFiniteLossError, TrainConfig, lr_factor, train_diffusion
from tinyldm.training.ema import EMA
from tinyldm.training.run_folder import LossLog, load_training_state
from tinyldm.unet import UNet, UNetConfig

CONFIG = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(1,), groups=4,
                    num_heads=2, dropout=0.1)  # dropout on: its draws must resume exactly too
SCHEDULE = NoiseSchedule.cosine(100)


def _data(n=32, size=8):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=generator) * 2 - 1


def _model():
    with seeded(0):
        return UNet(CONFIG)


def _config(**changes):
    base = dict(steps=8, batch_size=4, lr=1e-3, warmup_steps=2, checkpoint_every=3, sample_every=0,
                lr_decay="cosine")
    return TrainConfig(**{**base, **changes})


def test_loss_falls_on_a_tiny_problem():
    data = _data(4)
    result = train_diffusion(_model(), data, SCHEDULE, _config(steps=80, lr=3e-3, checkpoint_every=0), progress=False)
    assert len(result.losses) == 80 and result.steps_run == 80
    assert sum(result.losses[-10:]) / 10 < 0.7 * sum(result.losses[:10]) / 10


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    data = _data()
    whole = train_diffusion(_model(), data, SCHEDULE, _config(), out=tmp_path / "whole", progress=False)
    train_diffusion(_model(), data, SCHEDULE, _config(), out=tmp_path / "split", progress=False, until=4)
    assert load_training_state(tmp_path / "split" / "train_state.pt")["step"] == 4
    resumed = train_diffusion(_model(), data, SCHEDULE, _config(), out=tmp_path / "split", resume=True,
                              progress=False)
    assert resumed.steps_run == 4
    assert resumed.losses == whole.losses  # bit for bit
    assert (tmp_path / "split" / "loss.jsonl").read_text() == (tmp_path / "whole" / "loss.jsonl").read_text()
    for a, b in zip(whole.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_resume_drops_log_lines_written_after_the_checkpoint(tmp_path):
    data = _data()
    train_diffusion(_model(), data, SCHEDULE, _config(), out=tmp_path, progress=False, until=4)
    LossLog(tmp_path / "loss.jsonl").append([{"step": 5, "loss": 9.0}])  # a step the crash did not checkpoint
    resumed = train_diffusion(_model(), data, SCHEDULE, _config(), out=tmp_path, resume=True, progress=False)
    steps = [r["step"] for r in LossLog(tmp_path / "loss.jsonl").records()]
    assert steps == list(range(1, 9)) and 9.0 not in resumed.losses


def test_run_folder_holds_the_model_log_plot_and_samples(tmp_path):
    exported = []

    def export(ema_model, folder):
        exported.append(folder)
        ema_model.save_pretrained(folder)

    result = train_diffusion(_model(), _data(), SCHEDULE, _config(steps=4, sample_every=2, num_samples=4,
                                                                  sample_steps=3, checkpoint_every=2),
                             out=tmp_path, progress=False, export=export)
    assert exported == [tmp_path, tmp_path]  # at each checkpoint
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "train_state.pt", "loss.jsonl", "loss.png",
            "train_config.json", "samples"} <= names
    assert set(result.files) == {"model", "settings", "loss log", "loss plot", "checkpoint"}
    assert all(path.exists() for path in result.files.values())
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    first = json.loads((tmp_path / "loss.jsonl").read_text().splitlines()[0])
    assert set(first) == {"step", "loss", "lr", "grad_norm"} and first["step"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp files


def test_without_export_the_run_folder_holds_no_model(tmp_path):
    result = train_diffusion(_model(), _data(), SCHEDULE, _config(steps=2), out=tmp_path, progress=False)
    assert not (tmp_path / "model.safetensors").exists() and "model" not in result.files


def test_a_resume_on_other_data_is_refused_even_after_a_kill(tmp_path):
    # train_config.json, with the data's sha256, is written when the run starts: a killed run has it too.
    train_diffusion(_model(), _data(), SCHEDULE, _config(), out=tmp_path, progress=False, until=2)
    other = _data() + 0.5
    with pytest.raises(ValueError, match="cannot resume .* with different settings \\(data_sha256: saved"):
        train_diffusion(_model(), other, SCHEDULE, _config(), out=tmp_path, resume=True, progress=False)


def test_an_existing_run_is_not_overwritten_and_a_missing_one_not_resumed(tmp_path):
    train_diffusion(_model(), _data(), SCHEDULE, _config(steps=2), out=tmp_path / "a", progress=False)
    with pytest.raises(FileExistsError, match=r"already holds a run \(saved at step 2\)"):
        train_diffusion(_model(), _data(), SCHEDULE, _config(steps=2), out=tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_diffusion(_model(), _data(), SCHEDULE, _config(), out=tmp_path / "b", resume=True, progress=False)
    with pytest.raises(ValueError, match=r"cannot resume .* with different settings \(lr: saved 0.001, now 0.5\)"):
        train_diffusion(_model(), _data(), SCHEDULE, _config(lr=0.5), out=tmp_path / "a", resume=True,
                        progress=False)


def test_a_non_finite_loss_stops_the_run_naming_the_step():
    # Adam moves every weight by about lr on its first step: with lr = 1e30 the second step's prediction, and so
    # its squared error, overflows float32.
    config = _config(steps=10, lr=1e30, warmup_steps=0, lr_decay="constant")
    with pytest.raises(NonFiniteLossError, match=r"the loss became (inf|nan) at step 2 .*Lower the learning rate") \
            as info:
        train_diffusion(_model(), _data(), SCHEDULE, config, progress=False)
    assert info.value.step == 2


def test_lr_factor_warms_up_then_decays():
    factors = [lr_factor(k, 4, 14) for k in range(14)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert math.isclose(lr_factor(13, 4, 14), 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert lr_factor(10, 4, 14, "constant") == 1.0


def test_ema_averages_with_a_warm_up():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    model.weight.data.fill_(1.0)
    ema.update(model)  # first decay min(0.9, 1/10) = 0.1: the average moves 90% of the way
    assert math.isclose(ema.model.weight.item(), 0.9, rel_tol=1e-6)
    for _ in range(100):
        ema.update(model)
    assert ema.current_decay() == 0.9 and math.isclose(ema.model.weight.item(), 1.0, abs_tol=1e-4)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["state.bin"]


def test_the_global_rng_is_left_alone():
    before = torch.get_rng_state()
    train_diffusion(_model(), _data(), SCHEDULE, _config(steps=2, checkpoint_every=0), progress=False)
    assert torch.equal(before, torch.get_rng_state())


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="TrainConfig.lr_decay must be 'cosine' or 'constant'"):
        train_diffusion(_model(), _data(), SCHEDULE, _config(lr_decay="step"), progress=False)
    with pytest.raises(ValueError, match=r"until must lie in \[1, 8\]"):
        train_diffusion(_model(), _data(), SCHEDULE, _config(), progress=False, until=9)


def test_the_library_never_picks_a_device():
    # Devices come from the inputs; only the command and the notebooks choose one (tinyldm.runtime).
    import pkgutil

    import tinyldm

    names = [m.name for m in pkgutil.walk_packages(tinyldm.__path__, "tinyldm.")
             if m.name not in ("tinyldm.runtime", "tinyldm.cli.main", "tinyldm.__main__")]
    assert "tinyldm.autoencoder" in names and len(names) > 20
    for name in names:
        source = inspect.getsource(importlib.import_module(name))
        assert ".cuda(" not in source and 'device("cuda' not in source, name


def test_a_text_conditioned_step_is_the_pipelines_training_loss():
    # The loop's step for a text model: drop_captions on the batch's captions, then LatentDiffusion.training_loss
    # with the loop's t and eps. Replaying the loop's draws by hand gives its first loss exactly.
    from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL
    from tinyldm.guidance import drop_captions
    from tinyldm.ldm import LatentDiffusion
    from tinyldm.runtime import dropout_rng
    from tinyldm.text import TextEncoderConfig, TinyTextEncoder

    def pipeline():
        with seeded(0):
            autoencoder = AutoencoderKL(AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4))
            text = TinyTextEncoder(TextEncoderConfig.tiny())
            unet = UNet(UNetConfig(in_channels=4, out_channels=4, base_channels=8, channel_mults=(1, 2),
                                   attention_levels=(1,), groups=4, context_dim=text.context_dim))
        return LatentDiffusion(autoencoder, unet, SCHEDULE, text, image_size=32)

    latents = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    captions = ["a large red circle at the top left", "a small blue square in the center"] * 8
    result = train_diffusion(pipeline(), latents, SCHEDULE, _config(steps=1), captions=captions, p_uncond=0.5,
                             progress=False)

    model = pipeline().train()
    data_gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    caption_gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, 16, (4,), generator=data_gen)
    with dropout_rng(noise_gen, torch.device("cpu")):
        t = torch.randint(0, SCHEDULE.num_steps, (4,), generator=noise_gen)
        eps = torch.randn((4, 4, 8, 8), generator=noise_gen)
        prompts = drop_captions([captions[i] for i in index.tolist()], 0.5, caption_gen)
        loss = model.training_loss(latents[index], prompts, t=t, eps=eps)
    assert result.losses[0] == loss.item()
    assert "" in prompts  # half the captions dropped: the null caption was trained too


def test_a_bad_caption_dropout_is_refused_before_the_run_starts(tmp_path):
    with pytest.raises(ValueError, match="p_uncond must lie in \\[0, 1\\]"):
        train_diffusion(_model(), _data(), SCHEDULE, _config(), out=tmp_path / "run", p_uncond=1.5, progress=False)
    assert not (tmp_path / "run").exists()
