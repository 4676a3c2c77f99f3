"""Checkers for lesson 5, latent diffusion: the latent scale factor, the SNR the data really sees, how many numbers
the UNet denoises, and an experiment: which scale factors let a short latent run learn to draw."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch
from torch import Tensor

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.evaluation.judge import Judge
from tinyldm.evaluation.metrics import judge_images
from tinyldm.evaluation.proportion import wilson_interval
from tinyldm.exercises.checking import NOT_ATTEMPTED, attempt, expect_close, not_attempted, passed
from tinyldm.jobs.ldm import LDM_PRESETS
from tinyldm.runtime import seeded
from tinyldm.sampling import sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.training.diffusion_loop import train_diffusion
from tinyldm.unet import UNet

__all__ = ["scale_factor", "effective_snr", "latent_numbers", "check_scale_factor", "check_effective_snr",
           "check_latent_numbers", "scale_run_images", "scale_run", "check_latent_scale"]


def scale_factor(z: Tensor) -> float:
    """1 / std of every number of a latent batch (Rombach et al. 2022, Sec. 4.3.2): s * z has unit variance.

    Args:
        z: (N, C, h, w) unscaled latents.
    """
    return 1.0 / z.double().std().item()


def effective_snr(schedule: NoiseSchedule, t: Tensor, data_std: float) -> Tensor:
    """The signal-to-noise ratio of x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps when x0 has standard
    deviation ``data_std``: alpha_bar_t * data_std^2 / (1 - alpha_bar_t) (Kingma et al. 2021, Eq. 2 for unit
    data).

    Args:
        schedule: the noise schedule.
        t: (K,) int64 steps.
        data_std: the standard deviation of the data.
    Returns:
        (K,) float32 ratios.
    """
    return schedule.snr(t) * data_std**2


def latent_numbers(image_size: int, factor: int, channels: int) -> int:
    """Numbers in the latent of one image_size x image_size image: channels * (image_size / factor)^2."""
    return channels * (image_size // factor) ** 2


def _as_float(name: str, got: Any, hint: str) -> float:
    if isinstance(got, Tensor):
        if got.numel() != 1:
            raise AssertionError(f"{name}: expected one number, got a tensor of shape {tuple(got.shape)}. "
                                 f"Hint: {hint}")
        return got.item()
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(got)
    raise AssertionError(f"{name}: expected a number, got {type(got).__name__}. Hint: {hint}")


def check_scale_factor(fn: Callable[[Tensor], Any]) -> None:
    """Exercise: ``fn(z) -> float``, the one number s that gives a batch of latents (N, C, h, w) unit variance."""
    name = "scale_factor"
    gen = torch.Generator().manual_seed(5)
    hint = ("one number for the whole batch: the standard deviation of every latent number together "
            "(z.std(), not per channel), and s is its inverse, so that s * z has standard deviation 1")
    # Channels of different spread and offset, like the shipped autoencoder's latents.
    spreads = [torch.tensor([1.9, 1.2, 1.1, 1.3]), torch.tensor([5.0, 6.0, 4.5, 5.5])]
    for spread in spreads:
        z = torch.randn(256, 4, 8, 8, generator=gen) * spread[:, None, None] + 0.1
        got = attempt(fn, z.clone())
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        value, expected = _as_float(name, got, hint), scale_factor(z)
        if abs(value - expected) > 1e-3 * expected:
            raise AssertionError(f"{name}: for latents of standard deviation {1 / expected:.3f} the scale factor "
                                 f"is {expected:.4f}, you returned {value:.4f}. Hint: {hint}")
    return passed(name, "scale_factor * z has unit standard deviation, one number for all channels")


def check_effective_snr(fn: Callable[[NoiseSchedule, Tensor, float], Tensor]) -> None:
    """Exercise: ``fn(schedule, t, data_std) -> (K,)``, the SNR at steps t of data with standard deviation
    ``data_std``."""
    name = "effective_snr"
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    for schedule in (NoiseSchedule.scaled_linear(1000), NoiseSchedule.cosine(1000)):
        for data_std in (1.0, 1.4, 5.0):
            got = attempt(fn, schedule, t.clone(), data_std)
            if got is NOT_ATTEMPTED:
                return not_attempted(name)
            expect_close(
                name, got, effective_snr(schedule, t, data_std), atol=1e-6,
                hint="x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps: the signal's variance is "
                "alpha_bar * data_std^2 and the noise's is 1 - alpha_bar; the SNR is their ratio "
                "(variances, so data_std enters squared); schedule.alpha_bars[t] holds alpha_bar",
            )
    return passed(name, "data twice as spread has four times the SNR at every step")


def check_latent_numbers(fn: Callable[[int, int, int], int]) -> None:
    """Exercise: ``fn(image_size, factor, channels) -> int``, the numbers in one image's latent."""
    name = "latent_numbers"
    for image_size, factor, channels in [(32, 4, 4), (32, 8, 4), (64, 8, 4), (512, 8, 4), (1024, 8, 16),
                                         (256, 4, 3)]:
        got = attempt(fn, image_size, factor, channels)
        if got is NOT_ATTEMPTED:
            return not_attempted(name)
        expected = latent_numbers(image_size, factor, channels)
        if isinstance(got, bool) or not isinstance(got, (int, float)) or got != expected:
            raise AssertionError(
                f"{name}: a {image_size}x{image_size} image at f = {factor} with {channels} latent channels "
                f"has {expected:,} latent numbers, you returned {got!r}. Hint: f divides each side, so the "
                f"grid is (image_size / f) x (image_size / f), with `channels` numbers at each position"
            )
    return passed(name, "channels * (image_size / f)^2: Stable Diffusion's 512 x 512 images are 16,384 numbers")


SCALE_RUN_STEPS = 1200  # twice the tiny preset's run, a minute or more on one CPU thread; 600 did not set s = 3 apart
SCALE_RUN_SAMPLES = 128  # judged samples, 50 ancestral steps each
SCALE_RUN_VALID = 0.35  # the judged-valid rate the experiment asks for


@torch.no_grad()
def _draw(unet: UNet, schedule: NoiseSchedule, shape: tuple[int, ...], seed: int) -> Tensor:
    return sample(unet, shape, schedule, "ddpm", 50, generator=torch.Generator().manual_seed(seed), progress=False)


def scale_run_images(s: float, raw: Tensor, autoencoder: AutoencoderKL, steps: int = SCALE_RUN_STEPS,
                     num_samples: int = SCALE_RUN_SAMPLES, seed: int = 0) -> Tensor:
    """Lesson 5's tiny unconditional run with the latents scaled by ``s``; its decoded samples.

    The UNet (``UNetConfig.tiny()``, 4 channels) trains on ``s * raw`` with the tiny preset's loop and the
    scaled-linear schedule for ``steps`` steps, on the CPU. It then draws ``num_samples`` latents with 50 ancestral
    steps from N(0, I); they are divided by ``s`` again and decoded, so only the scale the diffusion saw differs.

    Args:
        s: the scale factor to try.
        raw: (N, C, h, w) the encoder's unscaled latents of the training images.
    Returns:
        (num_samples, 3, H, W) the decoded samples, clamped to [-1, 1].
    """
    recipe = LDM_PRESETS["tiny"]
    channels = raw.shape[1]
    with seeded(seed):
        unet = UNet(replace(recipe.unet, in_channels=channels, out_channels=channels, context_dim=None))
    schedule = NoiseSchedule.scaled_linear(1000)
    config = replace(recipe.train, steps=steps, seed=seed)
    result = train_diffusion(unet, s * raw.float().cpu(), schedule, config, progress=False)
    z = _draw(result.ema_model.eval(), schedule, (num_samples, *raw.shape[1:]), seed)
    with torch.no_grad():
        return autoencoder.cpu().decode(z / s).clamp(-1, 1)


def scale_run(s: float, raw: Tensor, autoencoder: AutoencoderKL, judge: Judge) -> Tensor:
    """The experiment of ``check_latent_scale``: ``scale_run_images`` with its defaults, judged.

    Returns:
        (SCALE_RUN_SAMPLES,) bool: whether the judge calls each decoded sample a valid Shapes image.
    """
    return judge_images(judge.cpu(), scale_run_images(s, raw, autoencoder)).valid


def _recorded_run(recorded: dict | None, s: float, raw: Tensor) -> dict | None:
    """The run of ``recorded`` (``benchmarks/latent_scale.py``'s figures) made with this ``s`` on these latents, with
    the checker's steps and samples; None when there is none."""
    if recorded is None:
        return None
    same_setup = (recorded.get("steps") == SCALE_RUN_STEPS and recorded.get("samples") == SCALE_RUN_SAMPLES
                  and abs(recorded.get("unit_scale", 0.0) * raw.std().item() - 1) < 1e-4)
    if not same_setup:
        print(f"the recorded runs are not of these latents with {SCALE_RUN_STEPS} steps and {SCALE_RUN_SAMPLES} "
              "samples; running the experiment")
        return None
    return next((run for run in recorded.get("runs", []) if abs(run["s"] / s - 1) < 1e-3), None)


def check_latent_scale(fn: Callable[[], Any], raw: Tensor, autoencoder: AutoencoderKL, judge: Judge,
                       recorded: dict | None = None) -> None:
    """Experiment: ``fn() -> s``, a scale factor with which lesson 5's tiny run, trained for SCALE_RUN_STEPS steps
    on ``s * raw``, draws samples the judge calls valid at least SCALE_RUN_VALID of the time.

    ``recorded``: the figures ``benchmarks/latent_scale.py`` wrote (``data/measurements/latent_scale.json``). When
    they hold a run of this very experiment with this ``s`` (to 3 digits) on these latents, that run's result is
    reported instead of training again, which takes a minute or more; otherwise the experiment runs here."""
    name = "latent_scale"
    got = attempt(fn)
    if got is NOT_ATTEMPTED:
        return not_attempted(name)
    s = _as_float(name, got, "return one number, the factor the raw latents are multiplied by")
    if not 1e-3 <= s <= 1e3:
        raise AssertionError(f"{name}: s = {s:g} is outside [0.001, 1000]. Hint: the raw latents' std is "
                             f"{raw.std().item():.2f}")
    run = _recorded_run(recorded, s, raw)
    if run is None:
        valid = scale_run(s, raw, autoencoder, judge)
        rate, samples, source = valid.float().mean().item(), valid.numel(), ""
    else:
        rate, samples, source = run["valid_fraction"], run["samples"], "; recorded by benchmarks/latent_scale.py"
    low, high = wilson_interval(rate, samples)
    measured = (f"with s = {s:.3g} (latent std {s * raw.std().item():.2f}) the run's samples were judged valid "
                f"{rate:.0%} of the time (95% interval {low:.0%} to {high:.0%}, {samples} samples{source})")
    if rate < SCALE_RUN_VALID:
        raise AssertionError(f"{name}: {measured}, below {SCALE_RUN_VALID:.0%}. Hint: compare the latents' std "
                             "with the noise the forward process adds, at the start and at the end of the chain")
    return passed(name, f"{measured}; at least {SCALE_RUN_VALID:.0%} asked")
