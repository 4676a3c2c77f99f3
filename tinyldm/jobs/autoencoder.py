"""The autoencoder jobs behind the ``tinyldm`` command: train one with a preset, reconstruct and score images.

Like ``tinyldm.jobs.pixel`` for the pixel model, each job is a plain function with explicit arguments that the command,
the notebook and the tests call alike. The presets: ``tiny`` for a quick look (f = 4, a minute or two on a CPU),
``small`` for the shipped 32x32 checkpoint (f = 4: 32x32x3 -> 8x8x4, about 20 minutes on one CPU core), ``full``
for 64x64 images on a GPU (f = 8, the factor of Stable Diffusion's autoencoder: 64x64x3 -> 8x8x4). With
``data=`` it learns your own pictures instead of Shapes: the autoencoder to give ``train_ldm`` on that data; with
``data="photos"`` crops of photographs (``tinyldm.data.photos``), whose texture Shapes lacks.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL
from tinyldm.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from tinyldm.data.photos import TEST_PHOTOS, photos_tensor
from tinyldm.data.shapes import shapes_tensor
from tinyldm.data.training_set import PHOTOS, training_set
from tinyldm.evaluation.judge import Judge
from tinyldm.evaluation.metrics import evaluate_reconstructions
from tinyldm.evaluation.spectrum import high_frequency_ratio
from tinyldm.evaluation.two_sample import classifier_two_sample_test
from tinyldm.jobs.common import pick_preset, record_run, with_overrides
from tinyldm.runtime import seeded
from tinyldm.training import distributed
from tinyldm.training.autoencoder_loop import AutoencoderTrainConfig, AutoencoderTrainResult, train_autoencoder
from tinyldm.training.run_folder import refuse_to_overwrite
from tinyldm.training.speed import SpeedConfig
from tinyldm.viz.images import tile

__all__ = ["AutoencoderPreset", "AUTOENCODER_PRESETS", "LOSS_RECIPES", "with_loss_recipe", "train_autoencoder_preset",
           "load_autoencoder", "reconstruct", "evaluate_autoencoder", "plot_reconstructions", "ERROR_SCALE",
           "EVALUATION_DATA"]

ERROR_SCALE = 0.25  # mean absolute error (on the [0, 1] scale) drawn brightest in the error maps
_LPIPS_MIN_SIZE = 31  # LPIPS' AlexNet shrinks smaller images to nothing before its last layer
EVALUATION_DATA = ("shapes", PHOTOS)  # what evaluate_autoencoder reconstructs: Shapes or crops of the test photographs


@dataclass
class AutoencoderPreset:
    """A recipe for ``train_autoencoder_preset``: the network, its loss, the loop's settings and the data."""

    autoencoder: AutoencoderConfig  # the network
    loss: AutoencoderLossConfig  # the loss terms and the discriminator
    train: AutoencoderTrainConfig  # the loop's settings
    image_size: int  # side of the training images, in pixels
    num_images: int  # distinct training images (Shapes train split, seed 0); your own data uses all its pictures


AUTOENCODER_PRESETS = {
    "tiny": AutoencoderPreset(AutoencoderConfig.tiny(), AutoencoderLossConfig.tiny(), AutoencoderTrainConfig.tiny(),
                              32, 2048),
    # The shipped model: cosine decay to the end, the GAN switched on for the last 40% (it is meant to sharpen what
    # L1 and LPIPS have already placed; an early discriminator only slows the reconstruction down). The
    # discriminator learns 5x slower than the autoencoder: at 1e-3 it collapsed to a constant output at once. (At
    # 2e-4 it still did after a few hundred steps in the shipped run; see its model card.)
    "small": AutoencoderPreset(
        AutoencoderConfig.small(),
        AutoencoderLossConfig(disc_start=2400, disc_channels=32, disc_layers=2, disc_groups=8),
        AutoencoderTrainConfig(steps=4000, batch_size=32, lr=1e-3, disc_lr=2e-4, warmup_steps=100,
                               checkpoint_every=250, sample_every=500),
        32, 10_000),
    "full": AutoencoderPreset(
        AutoencoderConfig.full(),
        AutoencoderLossConfig(disc_start=20_000),
        AutoencoderTrainConfig(steps=100_000, batch_size=32, lr=2e-4, disc_lr=2e-4, warmup_steps=1000,
                               ema_decay=0.999, checkpoint_every=2000, sample_every=5000),
        64, 50_000),
}


# The three recipes of lesson 4's trade-off, the --loss switch: pixels only (the Gaussian likelihood of a plain VAE),
# L1 + LPIPS, and L1 + LPIPS + the PatchGAN with the adaptive weight. None keeps the preset's own loss.
LOSS_RECIPES = ("mse", "lpips", "gan")
_GAN_DISC_WEIGHT = 0.1  # the gan recipe's disc_weight: at the presets' 0.5 the discriminator collapses on photographs


def with_loss_recipe(preset: AutoencoderPreset, recipe: str | None) -> AutoencoderPreset:
    """The preset with its loss replaced by one of ``LOSS_RECIPES``, the network, data and schedule unchanged.

    - "mse": the mean squared error on pixels alone (no LPIPS, no discriminator);
    - "lpips": L1 + LPIPS (no discriminator);
    - "gan": L1 + LPIPS + the preset's PatchGAN with the adaptive weight, from the preset's ``disc_start``, with
      ``disc_weight`` 0.1 and the discriminator learning as fast as the autoencoder (``disc_lr = lr``).

    The KL term stays in all three. None returns the preset itself: its own loss, as the shipped Shapes autoencoder
    was trained (L1 + LPIPS + PatchGAN with ``disc_weight`` 0.5 and a slower discriminator).

    Why the gan recipe differs from the presets' GAN (tiny preset on ``--data photos``, 1500 steps, measured on the
    test photographs): with ``disc_weight`` 0.5 the discriminator's hinge loss sits at 1.00 with equal logits on
    real and reconstructed crops for the whole GAN phase, and the adaptive weight climbs to about 100. Trained alone
    for 500 steps first (``AutoencoderLossConfig.disc_warmup``) it reaches a hinge loss of 0.2-0.3 (logits about
    +-2), and still collapses within a few hundred steps of its term joining: two autoencoder steps at adaptive
    weight 0.03 push the fake logits from -1.8 to +1.3, above the real ones, and the discriminator's best answer is
    a constant output (its gradient norm falls from about 70 to 0.06). The adaptive weight balances the gradients at
    the decoder's last layer only, and Adam moves every weight by about the learning rate whatever the size of its
    gradient, so the autoencoder follows the discriminator's gradient almost at full speed. A learning rate of 1e-3
    for the discriminator, spectral normalisation or the non-saturating loss each collapsed the same way; a smaller
    GAN weight did not. With ``disc_weight`` 0.1 and ``disc_lr = lr`` the hinge loss falls from 0.70 to 0.35, below
    0.9 on 96% of the GAN steps, the logits part (+1.4 / -1.2), and against L1 + LPIPS at the same steps the
    high-frequency ratio rises from 0.37 to 0.61 and the two-sample accuracy falls from 92% to 88%, for 0.6 dB of
    PSNR (24.4 -> 23.9 dB). With ``disc_weight`` 0.2 (after a 500-step warm-up) it still learns (hinge 0.84 -> 0.62)
    and the ratio reaches 0.65, for 0.6 dB as well, but the two-sample accuracy stays at 92%.
    """
    if recipe is None:
        return preset
    loss, train = preset.loss, preset.train
    perceptual = loss.perceptual_weight or 1.0
    if recipe == "mse":
        loss = dataclasses.replace(loss, pixel_loss="l2", perceptual_weight=0.0, disc_weight=0.0)
    elif recipe == "lpips":
        loss = dataclasses.replace(loss, pixel_loss="l1", perceptual_weight=perceptual, disc_weight=0.0)
    elif recipe == "gan":
        loss = dataclasses.replace(loss, pixel_loss="l1", perceptual_weight=perceptual, disc_weight=_GAN_DISC_WEIGHT)
        train = dataclasses.replace(train, disc_lr=train.lr)
    else:
        raise ValueError(f"unknown loss recipe {recipe!r}; use one of {LOSS_RECIPES} (or None for the preset's)")
    return dataclasses.replace(preset, loss=loss, train=train)


def train_autoencoder_preset(preset: str, out: str | Path, device: torch.device, steps: int | None = None,
                             batch_size: int | None = None, num_images: int | None = None,
                             factor: int | None = None, resume: bool = False, progress: bool = True,
                             lpips: nn.Module | None = None, data: str | Path | None = None,
                             image_size: int | None = None, strict: bool = False,
                             speed: SpeedConfig | None = None,
                             checkpoint_every: int | None = None, loss: str | None = None) -> AutoencoderTrainResult:
    """Train a KL autoencoder on Shapes, or on your own pictures, with a preset, writing the run into ``out``.

    ``out`` ends up holding the exported model (config.json, model.safetensors with the latent scale factor), the
    resumable ``train_state.pt``, the loss log and plot, reconstruction grids and ``run.json`` (settings, timing).

    Args:
        preset: "tiny", "small" or "full" (see ``AUTOENCODER_PRESETS``).
        out: the run folder.
        device: where to train.
        steps, batch_size, num_images: override the preset's values.
        factor: the down-sampling factor f (2, 4 or 8) instead of the preset's (``AutoencoderConfig.with_factor``).
        resume: continue the run saved in ``out``.
        progress: show the progress bar.
        lpips: an already-built ``tinyldm.perceptual.LPIPS`` to use; built here when None and the preset needs it.
        data, strict: the training pictures (see ``tinyldm.data.training_set``); None for Shapes, "photos" for
            crops of the train photographs.
        image_size: the image side instead of the preset's; a multiple of the factor f.
        speed: GPU speed switches (``tinyldm.training.speed``); the defaults when None.
        checkpoint_every: steps between checkpoints instead of the preset's (0: only at the end).
        loss: one of ``LOSS_RECIPES`` ("mse", "lpips", "gan") instead of the preset's loss (``with_loss_recipe``);
            recorded as ``loss_recipe`` in the settings and the run record ("preset" when None).
    """
    recipe = with_loss_recipe(pick_preset(AUTOENCODER_PRESETS, preset), loss)
    config = with_overrides(recipe.train, steps=steps, batch_size=batch_size, checkpoint_every=checkpoint_every)
    if not resume:
        refuse_to_overwrite(out)  # before the data is read and the model built
    model_config = recipe.autoencoder if factor is None else recipe.autoencoder.with_factor(factor)
    size = image_size or recipe.image_size
    model_config.check_image_size(size)  # before the run folder is made, not at the model's first step
    if recipe.loss.perceptual_weight > 0 and size < _LPIPS_MIN_SIZE:
        raise ValueError(f"image size {size} is too small for the {preset} preset's LPIPS loss: its AlexNet features "
                         f"need at least {_LPIPS_MIN_SIZE} pixels; use an image size of 32 or more")
    # seeded: the layers' default initialisation draws from the global RNG, which a job leaves alone.
    with seeded(config.seed):
        model = AutoencoderKL(model_config).to(device)
        objective = AutoencoderLoss(recipe.loss, lpips=lpips, generator=torch.Generator().manual_seed(config.seed))
    objective = objective.to(device)
    pictures = training_set(data, size, num_images, recipe.num_images, strict, progress)
    started = time.time()
    loss_recipe = loss or "preset"
    result = train_autoencoder(model, objective, pictures.images, config, out=out, resume=resume, progress=progress,
                               settings={"preset": preset, "loss_recipe": loss_recipe}, speed=speed)
    if distributed.is_main_process():  # process 0 writes the run's record
        record_run(Path(out), resume, started, result, device, [r["loss"] for r in result.records], preset=preset,
                   loss_recipe=loss_recipe,
                   factor=model_config.downsampling_factor, data=pictures.record, image_size=size,
                   num_images=pictures.images.shape[0], scale_factor=result.scale_factor)
    return result


def load_autoencoder(directory: str | Path, device: torch.device | None = None) -> AutoencoderKL:
    """Load an autoencoder folder (``save_pretrained``'s) onto ``device`` (CPU by default), in eval mode."""
    return AutoencoderKL.from_pretrained(directory).to(device or torch.device("cpu"))


@torch.no_grad()
def reconstruct(model: AutoencoderKL, images: Tensor, batch_size: int = 256, sample: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
    """Encode and decode ``images`` in batches: decode(mean of q(z|x)), or of a sample with ``sample=True``.

    Args:
        model: the autoencoder.
        images: (N, C, H, W) in [-1, 1], on any device.
        batch_size: images per call.
        sample: decode a posterior sample instead of the mean.
        generator: source of those samples (on the model's device).
    Returns:
        (N, C, H, W) reconstructions on the CPU, clamped to [-1, 1] as a saved picture would be.
    """
    device = next(model.parameters()).device
    # On a CPU the convolutions run faster on channels-last batches (benchmarks/autoencoder.py times both layouts);
    # the reconstructions agree with the default layout's to about 1e-6.
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    parts = [model(images[i:i + batch_size].to(device).contiguous(memory_format=layout), sample_posterior=sample,
                   generator=generator)[0] for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts).float().clamp(-1, 1).cpu().contiguous()


def evaluate_autoencoder(model: AutoencoderKL, num_images: int = 512, image_size: int = 32, seed: int = 1,
                         judge: Judge | None = None, lpips: nn.Module | None = None, data: str = "shapes"
                         ) -> tuple[dict[str, float], Tensor, Tensor]:
    """Reconstruct ``num_images`` fresh test images and score the reconstructions.

    With ``data="shapes"`` they are Shapes test-split images: the training set is the train split (seed 0) and
    the test split draws from other generator streams. With ``data="photos"`` they are crops of the test
    photographs (``tinyldm.data.photos.TEST_PHOTOS``), which no training run on photos sees; the judge, which
    reads Shapes, is not used there.

    Returns:
        (the metrics of ``tinyldm.evaluation.metrics.evaluate_reconstructions``, the high-frequency ratio
        ("hf_ratio", ``tinyldm.evaluation.spectrum``), the classifier two-sample test ("c2st_accuracy",
        "c2st_stderr", "c2st_ci95", "c2st_p_value", "c2st_images", ``tinyldm.evaluation.two_sample``, seeded by
        ``seed``) and the settings; the originals (N, 3, S, S); the reconstructions (N, 3, S, S)).
    """
    if data not in EVALUATION_DATA:
        raise ValueError(f"unknown evaluation data {data!r}; use one of {EVALUATION_DATA}")
    model.config.check_image_size(image_size)
    if data == PHOTOS:
        originals, judge = photos_tensor(num_images, image_size, seed=seed, split="test"), None
    else:
        originals = shapes_tensor(num_images, image_size, seed=seed, split="test")
    reconstructions = reconstruct(model, originals)
    metrics = evaluate_reconstructions(originals, reconstructions, judge=judge, lpips=lpips)
    metrics["hf_ratio"] = high_frequency_ratio(originals, reconstructions)
    c2st = classifier_two_sample_test(originals, reconstructions, seed=seed)
    metrics.update({"c2st_accuracy": c2st.accuracy, "c2st_stderr": c2st.stderr, "c2st_ci95": list(c2st.ci95),
                    "c2st_p_value": c2st.p_value, "c2st_images": c2st.num_test})
    settings = {"data": data, "seed": seed, "split": "test", "image_size": image_size,
                "downsampling_factor": model.downsampling_factor, "scale_factor": model.scale_factor.item()}
    if data == PHOTOS:
        settings["photographs"] = list(TEST_PHOTOS)
    return {**settings, **metrics}, originals, reconstructions


def plot_reconstructions(originals: Tensor, reconstructions: Tensor, max_images: int = 12,
                         error_scale: float = ERROR_SCALE) -> Figure:
    """Originals, reconstructions and per-pixel error maps |x - x_rec| (mean over channels, [0, 1] scale), in
    three rows of one figure with a colour bar for the errors.

    Args:
        originals, reconstructions: (N, 3, H, W) in [-1, 1]; the first ``max_images`` are drawn.
        error_scale: the error drawn brightest (larger errors saturate).
    """
    if originals.shape != reconstructions.shape or originals.ndim != 4:
        raise ValueError(f"originals and reconstructions must be (N, C, H, W) of one shape, got "
                         f"{tuple(originals.shape)} and {tuple(reconstructions.shape)}")
    x, y = originals[:max_images].float().cpu(), reconstructions[:max_images].float().cpu()
    n = x.shape[0]
    error = ((x - y).abs() / 2).mean(1, keepdim=True)  # (n, 1, H, W) on the [0, 1] scale

    def strip(images: Tensor, pad: float) -> Tensor:
        return tile(images, nrow=n, padding=2, pad_value=pad).permute(1, 2, 0).numpy()  # (H', W', 3)

    fig, axes = plt.subplots(3, 1, figsize=(0.75 * n + 1.6, 3.4), layout="constrained")
    axes[0].imshow(strip((x.clamp(-1, 1) + 1) / 2, 1.0))
    axes[1].imshow(strip((y.clamp(-1, 1) + 1) / 2, 1.0))
    maps = axes[2].imshow(strip(error, float("nan"))[..., 0], cmap="magma", vmin=0, vmax=error_scale)
    for ax, label in zip(axes, ("original", "reconstruction", "|error|")):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=8)
    fig.colorbar(maps, ax=axes[2], fraction=0.03, pad=0.01)
    return fig
