"""The latent diffusion jobs behind the ``tinyldm`` command: train a text-to-image model, and generate with it.

Training never touches pixels after the first minute: the images (Shapes, or your own captioned pictures, see
``tinyldm.data.training_set``) are encoded once with the frozen autoencoder (``cached_latents``, optionally kept on
disk), and the pipeline trains on that latent tensor with the same loop as the pixel model
(``tinyldm.training.diffusion_loop.train_diffusion``), through its own objective: the loop calls
``LatentDiffusion.training_loss``, the function lessons 5 and 6 build, after dropping captions with
``tinyldm.guidance.drop_captions`` for classifier-free guidance. On your own data the small text encoder's tokenizer
learns the words of your captions (``caption_text_config``); the pretrained encoder needs nothing learnt.

The presets: ``tiny`` for tests and the lesson's quick runs, ``small`` for the shipped ``ldm-shapes`` checkpoint
(32x32 Shapes through the shipped f = 4 autoencoder: 8x8x4 latents, a small text encoder trained with the UNet),
``full`` for 64x64 images on a GPU with a frozen pretrained sentence encoder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.data.training_set import training_set
from tinyldm.jobs.common import FrameRecorder, batches, check_finite_images, pick_preset, record_run, with_overrides
from tinyldm.ldm import LatentDiffusion, check_parts
from tinyldm.pretrained import checkpoint_dir, config_to_dict
from tinyldm.runtime import seeded
from tinyldm.sampling import sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import PretrainedTextEncoder, TextEncoderConfig, TinyTextEncoder
from tinyldm.training import distributed
from tinyldm.training.diffusion_loop import TrainConfig, TrainResult, train_diffusion
from tinyldm.training.latent_cache import cached_latents, latent_cache_dir, weights_hash
from tinyldm.training.run_folder import refuse_to_overwrite
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet, UNetConfig
from tinyldm.word_tokenizer import tokenizer_vocabulary, train_tokenizer

__all__ = ["LDMPreset", "LDM_PRESETS", "caption_text_config", "train_ldm", "load_ldm", "generate_ldm",
           "MAX_CAPTION_TOKENS"]

MAX_CAPTION_TOKENS = 77  # the small text encoder's limit, [CLS] and [SEP] included: Stable Diffusion's CLIP limit
_PREVIEW_GUIDANCE = 3.0  # guidance scale of the sample grids drawn during training


@dataclass
class LDMPreset:
    """A recipe for ``train_ldm``: the networks, the loop's settings and the data."""

    unet: UNetConfig  # the UNet; its in/out channels and context_dim are set from the autoencoder and text encoder
    text_encoder: TextEncoderConfig | str  # a TinyTextEncoder trained with the UNet, or "pretrained" (frozen)
    train: TrainConfig  # the loop's settings
    autoencoder: str | None  # the frozen autoencoder: a shipped checkpoint's name; None: train one first
    image_size: int  # side of the training images, in pixels
    num_images: int  # distinct training images (Shapes train split, seed 0); your own data uses all its pairs
    p_uncond: float = 0.1  # chance of training a caption as the empty one (Ho & Salimans 2022 use 0.1-0.2)
    num_steps: int = 1000  # T of the scaled-linear schedule, the one the LDM and Stable Diffusion models use


LDM_PRESETS = {
    "tiny": LDMPreset(UNetConfig.tiny(), TextEncoderConfig.tiny(),
                      TrainConfig(steps=600, batch_size=32, lr=2e-3, warmup_steps=50, checkpoint_every=200,
                                  sample_every=300), "autoencoder-shapes", 32, 2048),
    # The shipped model: cross-attention at the 8x8 and 4x4 latent levels and in the 2x2 middle; a constant
    # learning rate with an EMA, so the run can be stopped or extended (--resume --steps) and stays one run.
    # 4,500 steps (about 30 minutes on one CPU core) already draw every caption right (see its model card).
    "small": LDMPreset(UNetConfig(base_channels=64, channel_mults=(1, 2, 2), blocks_per_level=1,
                                  attention_levels=(0, 1), num_heads=4, groups=16),
                       TextEncoderConfig.small(),
                       TrainConfig(steps=4500, batch_size=64, lr=5e-4, warmup_steps=200, lr_decay="constant",
                                   checkpoint_every=250, sample_every=1000), "autoencoder-shapes", 32, 10_000),
    "full": LDMPreset(UNetConfig(base_channels=128, channel_mults=(1, 2, 2), blocks_per_level=2,
                                 attention_levels=(0, 1, 2), num_heads=8, dropout=0.1),
                      "pretrained",
                      TrainConfig(steps=100_000, batch_size=128, lr=1e-4, warmup_steps=1000, ema_decay=0.9999,
                                  checkpoint_every=2000, sample_every=5000), None, 64, 50_000),
}


def caption_text_config(config: TextEncoderConfig, captions: list[str]) -> TextEncoderConfig:
    """``config`` with a word-level vocabulary learnt from ``captions`` and ``max_length`` set by the longest.

    Args:
        config: the preset's text encoder settings (widths and depths are kept).
        captions: the distinct training captions.
    Returns:
        the config with ``vocabulary`` (every word of the captions) and ``max_length`` (the longest caption's
        tokens, [CLS] and [SEP] included; at most MAX_CAPTION_TOKENS).
    """
    tokenizer = train_tokenizer(captions, MAX_CAPTION_TOKENS)
    lengths = [len(encoding.ids) for encoding in tokenizer.backend_tokenizer.encode_batch(captions)]
    longest = max(range(len(captions)), key=lengths.__getitem__)
    if lengths[longest] > MAX_CAPTION_TOKENS:
        raise ValueError(f"the caption {captions[longest][:80]!r}... has {lengths[longest]} tokens with [CLS] and "
                         f"[SEP]; the small text encoder takes at most {MAX_CAPTION_TOKENS} (Stable Diffusion's "
                         "CLIP encoder stops there too): shorten the long captions")
    return replace(config, vocabulary=tokenizer_vocabulary(tokenizer), max_length=lengths[longest])


def _autoencoder(source: str | Path | AutoencoderKL) -> AutoencoderKL:
    if isinstance(source, AutoencoderKL):
        return source
    path = Path(source)
    return AutoencoderKL.from_pretrained(path if path.is_dir() or len(path.parts) > 1 else checkpoint_dir(source))


def train_ldm(preset: str, out: str | Path, device: torch.device, autoencoder: str | Path | AutoencoderKL | None = None,
              steps: int | None = None, batch_size: int | None = None, num_images: int | None = None,
              unconditional: bool = False, resume: bool = False, progress: bool = True,
              cache_dir: str | Path | None = None, until: int | None = None,
              speed: SpeedConfig | None = None, data: str | Path | None = None, image_size: int | None = None,
              strict: bool = False, checkpoint_every: int | None = None) -> TrainResult:
    """Train a latent diffusion model on Shapes, or on your own captioned pictures, with a preset, into ``out``.

    ``out`` ends up holding the EMA pipeline (``LatentDiffusion.save_pretrained``: config.json, autoencoder/,
    unet/, text_encoder/, schedule.json), the resumable ``train_state.pt``, the loss log and plot, decoded sample
    grids of the first training captions and ``run.json`` (settings and timing).

    Args:
        preset: "tiny", "small" or "full" (see ``LDM_PRESETS``).
        out: the run folder.
        device: where to train.
        autoencoder: the frozen autoencoder (a folder, a shipped checkpoint's name or a model); the preset's when None.
        steps, batch_size, num_images: override the preset's values (num_images: the first pairs of ``data``).
        unconditional: no text encoder and no cross-attention (lesson 5).
        resume: continue the run saved in ``out``.
        progress: show progress bars.
        cache_dir: folder of the latent cache; ``latent_cache_dir()`` when None.
        until: stop after this step, as if interrupted (see ``train_diffusion``).
        speed: GPU speed switches (``tinyldm.training.speed``); the defaults when None.
        data: None for Shapes; a folder of pictures with a captions.jsonl, "mnist" or "fashion-mnist" (see
            ``tinyldm.data.training_set``). The small text encoder then learns the captions' words.
        image_size: the training image side instead of the preset's.
        strict: stop at the first unreadable or uncaptioned picture of ``data`` instead of skipping it.
        checkpoint_every: steps between checkpoints instead of the preset's (0: only at the end).
    """
    recipe = pick_preset(LDM_PRESETS, preset)
    config = with_overrides(recipe.train, steps=steps, batch_size=batch_size, checkpoint_every=checkpoint_every)
    if not resume:
        refuse_to_overwrite(out)  # before the pictures are read and encoded
    if autoencoder is None and recipe.autoencoder is None:
        raise ValueError(f"the {preset} preset needs a {recipe.image_size}x{recipe.image_size} autoencoder, and none "
                         f"is shipped: train one first (tinyldm train autoencoder --config {preset} --out "
                         f"runs/autoencoder-{recipe.image_size}), then pass it (--autoencoder "
                         f"runs/autoencoder-{recipe.image_size})")
    ae = _autoencoder(autoencoder if autoencoder is not None else recipe.autoencoder).to(device).eval()
    size = image_size or recipe.image_size
    pictures = training_set(data, size, num_images, recipe.num_images, strict, progress)
    text_config = recipe.text_encoder
    if data is not None and not unconditional and isinstance(text_config, TextEncoderConfig):
        text_config = caption_text_config(text_config, sorted(set(pictures.captions)))  # the user's words

    with seeded(config.seed):  # the layers' default initialisation draws from the global RNG
        text_encoder = None
        if not unconditional:
            text_encoder = PretrainedTextEncoder() if text_config == "pretrained" else TinyTextEncoder(text_config)
        c = ae.config.latent_channels
        unet = UNet(replace(recipe.unet, in_channels=c, out_channels=c,
                            context_dim=None if text_encoder is None else text_encoder.context_dim))
    check_parts(ae, unet, text_encoder, size)
    # Data-parallel: process 0 encodes and caches first, then the others read its cache (or encode, elsewhere).
    if not distributed.is_main_process():
        distributed.barrier()
    latents = cached_latents(ae, pictures.images, cache_dir or latent_cache_dir(), pictures.key)  # (n, C, h, w)
    if distributed.is_main_process():
        distributed.barrier()
    schedule = NoiseSchedule.scaled_linear(recipe.num_steps).to(device)
    settings = {"preset": preset, "unconditional": unconditional, "unet": config_to_dict(unet.config),
                "autoencoder_sha256": weights_hash(ae),
                "text_encoder": None if text_encoder is None else
                text_config if isinstance(text_config, str) else config_to_dict(text_config)}
    first_captions = pictures.captions[:config.num_samples]

    if text_encoder is None:  # lesson 5's unconditional model: the loop trains the UNet alone
        model, captions = unet.to(device), None

        def export(ema: UNet, folder: Path) -> None:
            LatentDiffusion(ae, ema, schedule, None, size).save_pretrained(folder)

        def preview(ema: UNet) -> Tensor:
            generator = torch.Generator(device).manual_seed(config.seed)
            z0 = sample(ema, (config.num_samples, *latents.shape[1:]), schedule, "ddpm", config.sample_steps,
                        generator=generator, progress=False)
            return ae.decode_latents(z0)
    else:
        model, captions = LatentDiffusion(ae, unet, schedule, text_encoder, size).to(device), pictures.captions

        def export(ema: LatentDiffusion, folder: Path) -> None:
            ema.save_pretrained(folder)

        def preview(ema: LatentDiffusion) -> Tensor:
            generator = torch.Generator(device).manual_seed(config.seed)
            return ema.sample(first_captions, steps=config.sample_steps, sampler="ddpm",
                              guidance_scale=_PREVIEW_GUIDANCE, generator=generator, progress=False)

    started = time.time()
    result = train_diffusion(model, latents, schedule, config, out=out, resume=resume, progress=progress,
                             until=until, speed=speed, captions=captions,
                             p_uncond=0.0 if captions is None else recipe.p_uncond, settings=settings,
                             export=export, preview=preview)
    if distributed.is_main_process():  # process 0 writes the run's record
        record_run(Path(out), resume, started, result, device, result.losses, preset=preset,
                   unconditional=unconditional, data=pictures.record, image_size=size,
                   num_images=latents.shape[0], distinct_captions=len(set(pictures.captions)),
                   until_step=until or config.steps)
    return result


def load_ldm(directory: str | Path, device: torch.device | None = None) -> LatentDiffusion:
    """Load a latent diffusion folder onto ``device`` (CPU by default), in eval mode."""
    return LatentDiffusion.from_pretrained(directory).to(device or torch.device("cpu"))


@torch.no_grad()
def generate_ldm(ldm: LatentDiffusion, prompt: str | None, num_images: int = 16, seed: int = 0,
                 guidance_scale: float = 3.0, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
                 frames: int = 40, progress: bool = True) -> tuple[Tensor, Tensor | None, list[int]]:
    """Draw ``num_images`` images of one prompt and the decoded x0 predictions along the way, for an animation.

    Each frame decodes the model's current guess of the clean latents, x0_pred (Eq. 15 of Ho et al. 2020, in
    latent space): noisy latents decode to colour noise, while x0_pred shows the picture taking shape.

    Args:
        ldm: the pipeline; sampling runs on its device.
        prompt: the text, or None for an unconditional model.
        num_images, seed: how many images, and the seed of the noise.
        guidance_scale, sampler, steps, eta: see ``LatentDiffusion.sample``.
        frames: about how many frames to keep; 0 keeps none (no animation: nothing extra is decoded).
    Returns:
        images (B, 3, H, W) in [-1, 1] on the CPU (drawn SAMPLE_BATCH at a time), frames (K, B1, 3, H, W) of the
        first batch's B1 images ending with those images (None without frames), and the K step labels (-1 for the
        final images).
    """
    generator = torch.Generator(ldm.device).manual_seed(seed)
    recorder = FrameRecorder(min(steps, ldm.schedule.num_steps), frames, "x0_pred") if frames else None
    sizes = batches(num_images, progress=progress)
    parts = [ldm.sample(None if prompt is None else [prompt], n, steps, sampler, eta, guidance_scale, generator,
                        recorder if k == 0 else None, progress and len(sizes) == 1).cpu()
             for k, n in enumerate(sizes)]
    images = torch.cat(parts)
    check_finite_images(images, ldm, f"guidance scale {guidance_scale:g}, {sampler} with {steps} steps")
    if recorder is None:
        return images, None, []
    decoded = [ldm.decode_latents(z0.to(ldm.device)).cpu() for z0 in recorder.kept]  # (B1, 3, H, W) each
    return images, torch.stack([*decoded, parts[0]]), [*recorder.labels, -1]
