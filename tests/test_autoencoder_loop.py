"""The autoencoder's two-optimiser loop (the losses fall, resuming is exact, bad runs stop with a clear message)
and the jobs around it."""

import dataclasses
import json
import os

import pytest
import torch

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL, estimate_scale_factor
from tinyldm.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from tinyldm.discriminator import PatchDiscriminator
from tinyldm.jobs.autoencoder import (
    AUTOENCODER_PRESETS,
    LOSS_RECIPES,
    plot_reconstructions,
    reconstruct,
    train_autoencoder_preset,
    with_loss_recipe,
)
from tinyldm.perceptual import LPIPS_WEIGHTS_VAR
from tinyldm.runtime import seeded
from tinyldm.training.autoencoder_loop import (
    DISCRIMINATOR_FOLDER,
    SCALE_IMAGES,
    AutoencoderTrainConfig,
    plot_autoencoder_losses,
    train_autoencoder,
)
from tinyldm.training.diffusion_loop import NonFiniteLossError
from tinyldm.training.run_folder import LossLog, load_training_state

MODEL = AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4)  # f = 4
# LPIPS off (it needs weights on disk; one test below turns it on), the GAN on from step 2 so that resuming
# has a discriminator and its optimiser to restore.
LOSS = AutoencoderLossConfig(perceptual_weight=0.0, disc_start=2, disc_channels=8, disc_layers=2, disc_groups=4)


def _data(n=32, size=16):
    from tinyldm.data.shapes import shapes_tensor

    return shapes_tensor(n, size=size)


def _model():
    with seeded(0):
        return AutoencoderKL(MODEL)


def _loss(**changes):
    config = AutoencoderLossConfig(**{**LOSS.__dict__, **changes})
    return AutoencoderLoss(config, generator=torch.Generator().manual_seed(0))


def _config(**changes):
    base = dict(steps=6, batch_size=4, lr=1e-3, disc_lr=1e-3, warmup_steps=2, ema_decay=0.9, checkpoint_every=2,
                sample_every=0, num_samples=4)
    return AutoencoderTrainConfig(**{**base, **changes})


def test_the_reconstruction_loss_falls():
    data = _data(8)
    result = train_autoencoder(_model(), _loss(disc_weight=0.0), data, _config(steps=40, lr=3e-3, warmup_steps=5,
                               checkpoint_every=0), progress=False)
    l1 = [r["l1"] for r in result.records]
    assert len(l1) == 40 and result.steps_run == 40
    assert sum(l1[-5:]) / 5 < 0.5 * sum(l1[:5]) / 5


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    data = _data()
    whole = train_autoencoder(_model(), _loss(), data, _config(checkpoint_every=3), out=tmp_path / "whole",
                              progress=False)
    train_autoencoder(_model(), _loss(), data, _config(checkpoint_every=3), out=tmp_path / "split", progress=False,
                      until=3)
    state = load_training_state(tmp_path / "split" / "train_state.pt")
    assert state["step"] == 3 and state["disc_optimizer"]["state"]  # the discriminator had started learning
    resumed = train_autoencoder(_model(), _loss(), data, _config(checkpoint_every=3), out=tmp_path / "split",
                                resume=True, progress=False)
    assert resumed.steps_run == 3
    assert resumed.records == whole.records  # every loss term, bit for bit
    assert "d_loss" in whole.records[-1] and "d_loss" not in whole.records[0]
    assert (tmp_path / "split" / "loss.jsonl").read_text() == (tmp_path / "whole" / "loss.jsonl").read_text()
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    saved = AutoencoderKL.from_pretrained(tmp_path / "split")
    assert torch.equal(saved.scale_factor, whole.model.scale_factor)


def test_resume_across_the_discriminator_warm_up_repeats_the_run_exactly(tmp_path):
    # The discriminator trains from step 2, alone until its term joins the autoencoder's loss at step 4; the run
    # stops at step 3, inside the warm-up, and resumes past it.
    data, config = _data(), _config(steps=7, checkpoint_every=3)
    whole = train_autoencoder(_model(), _loss(disc_warmup=2), data, config, out=tmp_path / "whole", progress=False)
    assert [("d_loss" in r, r["adaptive_weight"] > 0) for r in whole.records] == [
        (False, False), (False, False), (True, False), (True, False), (True, True), (True, True), (True, True)]
    train_autoencoder(_model(), _loss(disc_warmup=2), data, config, out=tmp_path / "split", progress=False, until=3)
    resumed = train_autoencoder(_model(), _loss(disc_warmup=2), data, config, out=tmp_path / "split", resume=True,
                                progress=False)
    assert resumed.steps_run == 4 and resumed.records == whole.records
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"different settings \(loss.disc_warmup: saved 2, now 0\)"):
        train_autoencoder(_model(), _loss(), data, _config(steps=8, checkpoint_every=3), out=tmp_path / "split",
                          resume=True, progress=False)


def test_a_spectral_norm_discriminator_resumes_exactly(tmp_path):
    # Its power iteration's vectors change at every forward pass: the checkpoint must carry them.
    data, config = _data(), _config(steps=5, checkpoint_every=2)
    whole = train_autoencoder(_model(), _loss(disc_norm="spectral"), data, config, out=tmp_path / "whole",
                              progress=False)
    train_autoencoder(_model(), _loss(disc_norm="spectral"), data, config, out=tmp_path / "split", progress=False,
                      until=3)
    resumed = train_autoencoder(_model(), _loss(disc_norm="spectral"), data, config, out=tmp_path / "split",
                                resume=True, progress=False)
    assert resumed.records == whole.records and "d_loss" in whole.records[-1]


def test_a_resume_drops_log_lines_written_after_the_checkpoint(tmp_path):
    data = _data()
    train_autoencoder(_model(), _loss(), data, _config(), out=tmp_path, progress=False, until=4)
    LossLog(tmp_path / "loss.jsonl").append([{"step": 5, "loss": 9.0}])  # a step the crash did not checkpoint
    resumed = train_autoencoder(_model(), _loss(), data, _config(), out=tmp_path, resume=True, progress=False)
    assert [r["step"] for r in LossLog(tmp_path / "loss.jsonl").records()] == list(range(1, 7))
    assert 9.0 not in resumed.losses


def test_run_folder_holds_the_model_with_its_scale_log_plot_and_grids(tmp_path):
    data = _data()
    result = train_autoencoder(_model(), _loss(), data, _config(steps=4, sample_every=2, ema_decay=0.0),
                               out=tmp_path, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "train_state.pt", "loss.jsonl", "loss.png", "train_config.json",
            "reconstructions"} <= names
    assert sorted(p.name for p in (tmp_path / "reconstructions").iterdir()) == ["step_000002.png",
                                                                                  "step_000004.png"]
    saved = AutoencoderKL.from_pretrained(tmp_path)
    assert saved.config == MODEL
    expected = estimate_scale_factor(result.model, data[:SCALE_IMAGES], generator=torch.Generator().manual_seed(2))
    assert saved.scale_factor.item() == pytest.approx(expected) and saved.scale_factor.item() != 1.0
    last = json.loads((tmp_path / "loss.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "lr", "grad_norm", "l1", "lpips", "kl", "g_loss", "adaptive_weight", "d_loss",
            "logits_real", "logits_fake", "disc_grad_norm", "disc_lr"} <= set(last)
    settings = json.loads((tmp_path / "train_config.json").read_text())
    assert settings["loss"]["disc_start"] == 2 and settings["autoencoder"]["base_channels"] == 8
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_gan_run_saves_its_trained_discriminator_and_a_run_without_one_does_not(tmp_path):
    data, loss = _data(), _loss()
    result = train_autoencoder(_model(), loss, data, _config(steps=4), out=tmp_path / "gan", progress=False)
    saved = PatchDiscriminator.from_pretrained(tmp_path / "gan" / DISCRIMINATOR_FOLDER)
    assert result.files["discriminator"] == tmp_path / "gan" / DISCRIMINATOR_FOLDER
    assert saved.config == loss.discriminator.config
    for name, tensor in loss.discriminator.state_dict().items():  # the trained weights, not the initial ones
        torch.testing.assert_close(saved.state_dict()[name], tensor, rtol=0, atol=0)
    assert not torch.equal(saved.layers[0].weight, _loss().discriminator.layers[0].weight)
    train_autoencoder(_model(), _loss(disc_weight=0.0), data, _config(steps=2), out=tmp_path / "plain",
                      progress=False)
    assert not (tmp_path / "plain" / DISCRIMINATOR_FOLDER).exists()


def test_an_existing_run_is_not_overwritten_and_changed_settings_are_refused(tmp_path):
    data = _data()
    train_autoencoder(_model(), _loss(), data, _config(steps=2), out=tmp_path / "a", progress=False)
    with pytest.raises(FileExistsError, match=r"already holds a run \(saved at step 2\)"):
        train_autoencoder(_model(), _loss(), data, _config(steps=2), out=tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_autoencoder(_model(), _loss(), data, _config(), out=tmp_path / "b", resume=True, progress=False)
    with pytest.raises(ValueError, match=r"different settings \(disc_lr: saved 0.001, now 0.5\)"):
        train_autoencoder(_model(), _loss(), data, _config(steps=3, disc_lr=0.5), out=tmp_path / "a", resume=True,
                          progress=False)
    with pytest.raises(ValueError, match=r"different settings \(loss.kl_weight: saved 1e-06, now 0.1\)"):
        train_autoencoder(_model(), _loss(kl_weight=0.1), data, _config(steps=3), out=tmp_path / "a", resume=True,
                          progress=False)
    extended = train_autoencoder(_model(), _loss(), data, _config(steps=3), out=tmp_path / "a", resume=True,
                                 progress=False)  # only steps may change: the run is extended
    assert extended.steps_run == 1 and len(extended.records) == 3


def test_a_run_saved_before_a_setting_existed_resumes_with_that_settings_old_value(tmp_path):
    data = _data()
    train_autoencoder(_model(), _loss(), data, _config(steps=2), out=tmp_path, progress=False)
    path = tmp_path / "train_config.json"
    older = json.loads(path.read_text())
    del older["loss"]["disc_warmup"]  # as written before the discriminator warm-up existed
    path.write_text(json.dumps(older))
    with pytest.raises(ValueError, match=r"different settings \(loss.disc_warmup: saved 0, now 5\)"):
        train_autoencoder(_model(), _loss(disc_warmup=5), data, _config(steps=3), out=tmp_path, resume=True,
                          progress=False)
    extended = train_autoencoder(_model(), _loss(), data, _config(steps=3), out=tmp_path, resume=True, progress=False)
    assert extended.steps_run == 1


def test_a_non_finite_loss_stops_the_run_naming_the_step():
    # Adam moves every weight by about lr on its first step: with lr = 1e30 the second reconstruction overflows.
    config = _config(steps=10, lr=1e30, warmup_steps=0, lr_decay="constant", checkpoint_every=0)
    with pytest.raises(NonFiniteLossError, match=r"the loss became (inf|nan) at step 2 .*Lower the learning rate") \
            as info:
        train_autoencoder(_model(), _loss(disc_weight=0.0), _data(), config, progress=False)
    assert info.value.step == 2


def test_the_global_rng_is_left_alone():
    model, loss, data = _model(), _loss(), _data()
    before = torch.get_rng_state()
    train_autoencoder(model, loss, data, _config(steps=3, checkpoint_every=0), progress=False)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("changes, message", [
    ({"betas": (0.5, 1.0)}, r"betas must be two numbers in \[0, 1\), got \(0.5, 1.0\)"),
    ({"ema_decay": 1.0}, r"ema_decay must lie in \[0, 1\) \(0: no EMA\), got 1.0"),
    ({"disc_lr": 0.0}, "disc_lr must be positive, got 0.0"),
    ({"lr_decay": "step"}, "lr_decay must be 'cosine' or 'constant', got 'step'"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"sample_every": -1}, "sample_every must be >= 0, got -1"),
])
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        train_autoencoder(_model(), _loss(), _data(4), _config(**changes), progress=False)


def test_bad_data_and_until_are_refused():
    with pytest.raises(ValueError, match=r"data must be images \(N, 3, H, W\), got shape \(4, 1, 16, 16\)"):
        train_autoencoder(_model(), _loss(), torch.zeros(4, 1, 16, 16), _config(), progress=False)
    with pytest.raises(ValueError, match=r"until must lie in \[1, 6\]"):
        train_autoencoder(_model(), _loss(), _data(4), _config(), progress=False, until=7)


def test_lpips_joins_the_loss_when_its_weights_are_available():
    if not os.environ.get(LPIPS_WEIGHTS_VAR):
        pytest.skip(f"set {LPIPS_WEIGHTS_VAR} to an AlexNet features safetensors file to run LPIPS offline")
    loss = AutoencoderLoss(AutoencoderLossConfig(disc_weight=0.0))
    result = train_autoencoder(_model(), loss, _data(8, size=32), _config(steps=2, checkpoint_every=0),
                               progress=False)
    assert all(r["lpips"] > 0 for r in result.records)
    assert result.records[0]["loss"] > result.records[0]["l1"] + result.records[0]["lpips"] * 0.99


def test_the_loss_plot_has_a_panel_per_term():
    records = [{"step": k, "lr": 1e-3, "loss": 1 / k, "l1": 0.5 / k, "kl": 10.0 * k, "logits_real": 0.1,
                "logits_fake": -0.1} for k in range(1, 151)]
    fig = plot_autoencoder_losses(records, window=50)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["autoencoder loss", "l1", "kl", "discriminator logits"]
    assert shown[0].get_yscale() == "log" and shown[3].get_yscale() == "linear"
    assert [line.get_label() for line in shown[3].get_lines()[::2]] == ["logits_real", "logits_fake"]


def test_reconstruct_decodes_the_posterior_mean_in_batches_and_clamps():
    model = _model()
    torch.nn.init.normal_(model.last_layer, std=1.0)  # outputs well beyond [-1, 1], to see the clamp
    x = _data(5)
    out = reconstruct(model, x, batch_size=2)
    with torch.no_grad():
        expected = model(x, sample_posterior=False)[0].clamp(-1, 1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)  # batches of 2 round differently
    assert out.abs().max() == 1.0


def test_reconstruct_feeds_the_cpu_channels_last_batches_and_returns_a_plain_tensor():
    model = _model()
    seen = []
    model.encoder.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    out = reconstruct(model, _data(5), batch_size=2)
    assert seen == [True, True, True]  # the faster layout on a CPU, for every batch
    assert out.is_contiguous()  # callers may .view() the result


def test_the_reconstruction_figure_has_three_labelled_rows():
    x = _data(4)
    fig = plot_reconstructions(x, x.flip(0), max_images=3)
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == ["original", "reconstruction", "|error|"]
    assert fig.axes[2].images[0].get_array().shape == (16 + 4, 3 * 18 + 2)  # one strip of 3 images, 2 px gaps
    with pytest.raises(ValueError, match=r"one shape, got \(4, 3, 16, 16\) and \(3, 3, 16, 16\)"):
        plot_reconstructions(x, x[:3])


def test_loss_recipes_change_only_the_loss():
    preset = AUTOENCODER_PRESETS["small"]
    assert with_loss_recipe(preset, None) is preset  # the default: the preset's own loss, untouched
    mse, lpips, gan = (with_loss_recipe(preset, name).loss for name in LOSS_RECIPES)
    assert (mse.pixel_loss, mse.perceptual_weight, mse.disc_weight) == ("l2", 0.0, 0.0)
    assert (lpips.pixel_loss, lpips.perceptual_weight, lpips.disc_weight) == ("l1", 1.0, 0.0)
    assert (gan.pixel_loss, gan.perceptual_weight, gan.disc_weight) == ("l1", 1.0, 0.1)
    assert gan.disc_start == preset.loss.disc_start and gan.disc_channels == preset.loss.disc_channels
    assert gan.disc_warmup == 0 and mse.kl_weight == lpips.kl_weight == gan.kl_weight == preset.loss.kl_weight
    for name in LOSS_RECIPES:
        changed = with_loss_recipe(preset, name)
        assert (changed.autoencoder, changed.image_size, changed.num_images) == (preset.autoencoder, 32, 10_000)
        # only the gan recipe touches the loop: its discriminator learns as fast as the autoencoder
        expected = dataclasses.replace(preset.train, disc_lr=preset.train.lr) if name == "gan" else preset.train
        assert changed.train == expected
    assert preset.train.disc_lr == 2e-4 and preset.loss.disc_weight == 0.5  # the shipped recipe is untouched
    assert with_loss_recipe(AUTOENCODER_PRESETS["tiny"], "mse").loss.disc_weight == 0
    with pytest.raises(ValueError, match=r"unknown loss recipe 'wgan'; use one of \('mse', 'lpips', 'gan'\)"):
        with_loss_recipe(preset, "wgan")


def test_the_loss_recipe_is_recorded_and_mse_needs_no_lpips(tmp_path):
    run = tmp_path / "mse"
    result = train_autoencoder_preset("tiny", run, torch.device("cpu"), steps=2, batch_size=2, num_images=4,
                                      image_size=16, progress=False, loss="mse")
    assert "l2" in result.records[-1] and "d_loss" not in result.records[-1]
    settings = json.loads((run / "train_config.json").read_text())
    assert settings["loss_recipe"] == "mse" and settings["loss"]["pixel_loss"] == "l2"
    assert settings["loss"]["perceptual_weight"] == 0 and settings["loss"]["disc_weight"] == 0
    assert json.loads((run / "run.json").read_text())["runs"][0]["loss_recipe"] == "mse"
    resumed = train_autoencoder_preset("tiny", run, torch.device("cpu"), steps=3, batch_size=2, num_images=4,
                                       image_size=16, progress=False, resume=True, loss="mse")
    assert resumed.steps_run == 1
    with pytest.raises(ValueError, match="image size 16 is too small for the tiny preset's LPIPS loss"):
        train_autoencoder_preset("tiny", tmp_path / "lpips", torch.device("cpu"), steps=2, image_size=16,
                                 progress=False, loss="lpips")


def test_an_unknown_preset_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; use one of \['full', 'small', 'tiny'\]"):
        train_autoencoder_preset("huge", tmp_path, torch.device("cpu"))
