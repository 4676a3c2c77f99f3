"""save_pretrained / from_pretrained: an exact round trip, and loading errors that say what did not match."""

import json

import pytest
import torch

from tinyldm.evaluation.judge import Judge, JudgeConfig
from tinyldm.pretrained import checkpoint_dir, load_schedule, measurement_file, save_schedule
from tinyldm.schedule import NoiseSchedule
from tinyldm.unet import UNet, UNetConfig

CONFIG = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, attention_levels=(1,), groups=4,
                    num_heads=2)


def _trained_looking(model):
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=generator)
    return model


def test_round_trip_is_exact(tmp_path):
    model = _trained_looking(UNet(CONFIG))
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = UNet.from_pretrained(tmp_path)
    assert loaded.config == CONFIG and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 900])
    assert torch.equal(model.eval()(x, t), loaded(x, t))


def test_config_json_is_readable(tmp_path):
    UNet(CONFIG).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["_class_name"] == "UNet" and saved["channel_mults"] == [1, 2]


def test_the_judge_round_trips_too(tmp_path):
    judge = _trained_looking(Judge(JudgeConfig(width=4, feature_dim=8)))
    judge.save_pretrained(tmp_path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(judge.eval()(x)["valid"], Judge.from_pretrained(tmp_path)(x)["valid"])


def test_an_expected_config_that_differs_is_named(tmp_path):
    UNet(CONFIG).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"base_channels: saved 8, expected 16"):
        UNet.from_pretrained(tmp_path, config=UNetConfig(**{**CONFIG.__dict__, "base_channels": 16}))


def test_unknown_and_missing_fields_are_named(tmp_path):
    UNet(CONFIG).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["colour"] = "red"
    del saved["groups"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]; missing fields \['groups'\]"):
        UNet.from_pretrained(tmp_path)


def test_another_class_is_refused(tmp_path):
    Judge(JudgeConfig(width=4, feature_dim=8)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"describes a Judge, not a UNet: give the folder of a UNet \(in Python, "
                                         r"load this one with Judge.from_pretrained\)"):
        UNet.from_pretrained(tmp_path)


def test_weights_from_another_model_are_refused(tmp_path):
    UNet(CONFIG).save_pretrained(tmp_path / "a")
    UNet(UNetConfig(**{**CONFIG.__dict__, "base_channels": 16})).save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    message = r"shape mismatches .*conv_in.weight: saved \(16, 3, 3, 3\), model \(8, 3, 3, 3\)"
    with pytest.raises(ValueError, match=message):
        UNet.from_pretrained(tmp_path / "a")


def test_a_missing_folder_or_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder"):
        UNet.from_pretrained(tmp_path / "nowhere")
    UNet(CONFIG).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        UNet.from_pretrained(tmp_path)


def _cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_weights_are_named_as_damaged_with_how_to_get_them_back(tmp_path):
    UNet(CONFIG).save_pretrained(tmp_path / "mine")
    _cut_short(tmp_path / "mine" / "model.safetensors")
    with pytest.raises(ValueError, match=r"mine/model.safetensors is damaged: it cannot be read as safetensors "
                                         r"\(.*\); restore .*mine from a good copy, or train the model again"):
        UNet.from_pretrained(tmp_path / "mine")
    shipped = tmp_path / "repo" / "data" / "checkpoints" / "pixel-mine"
    UNet(CONFIG).save_pretrained(shipped)
    _cut_short(shipped / "model.safetensors")
    with pytest.raises(ValueError, match=r"shipped model pixel-mine: restore its folder with "
                                         r"git checkout -- data/checkpoints/pixel-mine"):
        UNet.from_pretrained(shipped)


@pytest.mark.parametrize("name", ["config.json", "schedule.json"])
@pytest.mark.parametrize("damage, message", [
    (_cut_short, r"is damaged: it is not valid JSON \(.*line \d+ column \d+"),
    (lambda path: path.write_bytes(b"\xff\xfe{}"), r"is damaged: it is not valid JSON \(.*utf-8"),
    (lambda path: path.write_text("[1, 2]"), r"is damaged: it holds a JSON list, not an object"),
])
def test_a_config_or_schedule_that_is_not_json_names_the_file(tmp_path, name, damage, message):
    UNet(CONFIG).save_pretrained(tmp_path)
    save_schedule(tmp_path, NoiseSchedule.cosine(20), "eps", 32)
    damage(tmp_path / name)
    with pytest.raises(ValueError, match=rf"{name} {message}.*train the model again"):
        UNet.from_pretrained(tmp_path) if name == "config.json" else load_schedule(tmp_path)


@pytest.mark.parametrize("payload, message", [
    ({"schedule": {"kind": "linear", "num_steps": 10}}, r"KeyError: 'prediction'"),
    ({"schedule": {"kind": "linear", "num_steps": 10, "start": 0.1}, "prediction": "eps"}, r"TypeError: .*'start'"),
    ({"schedule": {"kind": "custom", "betas": [0.2, 0.1]}, "prediction": "eps"},
     r"ValueError: betas must not decrease"),
])
def test_a_schedule_json_without_a_usable_schedule_names_the_file(tmp_path, payload, message):
    (tmp_path / "schedule.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=rf"schedule.json holds no usable schedule \({message}.*train the model again"):
        load_schedule(tmp_path)


def test_schedule_round_trip(tmp_path):
    save_schedule(tmp_path, NoiseSchedule.cosine(250), "eps", 32)
    schedule, prediction, size = load_schedule(tmp_path)
    assert (schedule.kind, schedule.num_steps, prediction, size) == ("cosine", 250, "eps", 32)
    assert torch.equal(schedule.betas, NoiseSchedule.cosine(250).betas)


def test_checkpoint_dir_finds_shipped_models_and_explains_misses(monkeypatch, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    monkeypatch.setenv("TINYLDM_CHECKPOINTS", str(tmp_path))
    assert checkpoint_dir("mine") == tmp_path / "mine"
    with pytest.raises(FileNotFoundError, match="no shipped checkpoint 'absent'"):
        checkpoint_dir("absent")


def test_measurement_file_is_found_from_a_lesson_folder_and_a_miss_names_the_fix(monkeypatch, tmp_path):
    (tmp_path / "data" / "measurements").mkdir(parents=True)
    (tmp_path / "data" / "measurements" / "mine.json").write_text("{}")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where a lesson runs
    assert measurement_file("mine.json").resolve() == (tmp_path / "data" / "measurements" / "mine.json").resolve()
    with pytest.raises(FileNotFoundError, match="no recorded measurement 'absent.json'.*benchmarks/"):
        measurement_file("absent.json")
