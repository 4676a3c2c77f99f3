"""``tinyldm train inpaint`` and ``tinyldm train sr``: fine-tune the text-to-image model into an inpainting or a
4x super-resolution model by concat conditioning (``tinyldm.concat_conditioning``; Rombach et al. 2022, Sec. 4.4-4.5).

The training data packs z0 and the conditioning c into one tensor, (N, C + k, h, w), so the one training loop
(``tinyldm.training.diffusion_loop.train_diffusion``) draws both in the same batch and resumes exactly:

- inpainting: each Shapes image appears ``masks_per_image`` times, each time with its own mask
  (``tinyldm.data.masks.inpainting_masks``: object boxes, random boxes, blobs, the whole image), and c is the
  latent of the masked image (the hole set to 0) and the mask at latent resolution: 4 + 5 = 9 channels.
- super-resolution: c is the image downsampled 4x (bicubic, antialiased), 8x8x3 in [-1, 1]: 4 + 3 = 7 channels.
  The captions are always dropped (p_uncond = 1): the model upscales from the low-resolution image alone, like the
  paper's Tab. 5 models. ``objective="regression"`` trains the same network with an MSE on z0 instead.

Super-resolution on photo crops (``data="photos"``, ``tinyldm train sr --data photos``): there is no
text-to-image photo model to fine-tune, so the base is built from scratch (``photo_base``): the shipped
photos-ae-lpips autoencoder's latents, a fresh UNet without text (the preset's ``photo_unet``), the scaled-linear
schedule and no text encoder. The pictures are the 10,000 train crops the photo autoencoders learnt from, in their
true colours, or with ``permute_colours`` (``--permute-colours``) in a random channel order each, as the autoencoders
saw them; the test crops keep their true colours. On Shapes an 8x8 picture nearly fixes the 32x32 one; a photo crop's
8x8 version leaves its texture open, which is where the paper's diffusion model is sharp and regression blurs.

The presets: ``tiny`` (seconds, for tests) and ``small`` (the shipped models, fine-tuned from ldm-shapes on one CPU
thread, or trained from scratch on photo crops; see their model cards).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.concat_conditioning import OBJECTIVES, ConcatConditionedLDM, downsample_images, masked_images
from tinyldm.data.masks import inpainting_masks
from tinyldm.data.training_set import PHOTOS, training_set
from tinyldm.inpainting import downsample_mask
from tinyldm.jobs.common import pick_preset, record_run, with_overrides
from tinyldm.ldm import LatentDiffusion
from tinyldm.pretrained import checkpoint_dir
from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.training.diffusion_loop import TrainConfig, TrainResult, train_diffusion
from tinyldm.training.latent_cache import cached_latents, latent_cache_dir, weights_hash
from tinyldm.training.run_folder import refuse_to_overwrite
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet, UNetConfig

__all__ = ["ApplicationPreset", "INPAINT_PRESETS", "SR_PRESETS", "inpainting_data", "sr_data", "photo_base",
           "train_application"]


@dataclass
class ApplicationPreset:
    """A fine-tuning recipe for ``train_application``."""

    train: TrainConfig  # the loop's settings
    num_images: int  # Shapes train-split images (seed 0), the base model's own training images
    masks_per_image: int = 1  # inpainting: each image with this many masks (items = num_images * masks_per_image)
    p_uncond: float = 0.1  # chance of training a caption as the empty one; 1 trains without captions
    mask_seed: int = 0  # inpainting: the masks' seed
    base: str = "ldm-shapes"  # the text-to-image model fine-tuned: a shipped checkpoint's name or a folder
    photo_unet: UNetConfig = field(default_factory=UNetConfig.small)  # photo super-resolution: the fresh UNet
    photo_autoencoder: str = "photos-ae-lpips"  # ... and the frozen autoencoder whose latents it learns


INPAINT_PRESETS = {
    "tiny": ApplicationPreset(TrainConfig(steps=20, batch_size=8, lr=2e-4, warmup_steps=5, lr_decay="constant",
                                          checkpoint_every=10, sample_every=0), 64, 2),
    # The shipped ldm-shapes-inpaint: 1,500 steps of batch 64 (about 12 minutes on an idle CPU thread).
    "small": ApplicationPreset(TrainConfig(steps=1500, batch_size=64, lr=3e-4, warmup_steps=100, lr_decay="constant",
                                           ema_decay=0.995, checkpoint_every=250, sample_every=500, num_samples=16,
                                           sample_steps=25), 10_000, 2),
}
PHOTO_SIZE = 32  # the side of the photo crops, the photo autoencoders' training size

SR_PRESETS = {
    "tiny": ApplicationPreset(TrainConfig(steps=20, batch_size=8, lr=2e-4, warmup_steps=5, lr_decay="constant",
                                          checkpoint_every=10, sample_every=0), 64, p_uncond=1.0,
                              photo_unet=UNetConfig.tiny()),
    # The shipped ldm-shapes-sr and its regression baseline: 2,000 steps of batch 64 each (about 15 minutes on an
    # idle CPU thread); at 800 the diffusion model still drew a wrong colour or shape for 45% of the test images.
    "small": ApplicationPreset(TrainConfig(steps=2000, batch_size=64, lr=3e-4, warmup_steps=100, lr_decay="constant",
                                           ema_decay=0.995, checkpoint_every=200, sample_every=400, num_samples=16,
                                           sample_steps=25), 10_000, p_uncond=1.0),
}


def inpainting_data(ldm: LatentDiffusion, images: Tensor, masks_per_image: int, seed: int,
                    cache_dir: str | Path | None, key: dict) -> tuple[Tensor, Tensor]:
    """The packed training tensor of an inpainting model and the image index of each item.

    Args:
        ldm: the base model (its autoencoder encodes).
        images: (N, 3, H, W) in [-1, 1].
        masks_per_image: M; item j * N + i is image i with its j-th mask (mask index j * N + i of ``seed``).
        seed: the masks' seed.
        cache_dir, key: the latent cache and the key of ``images`` (``cached_latents``).
    Returns:
        data (N * M, C + C + 1, h, w) = [z0, E(x * (1 - m)), m at latent resolution], and (N * M,) image indices.
    """
    index = torch.arange(images.shape[0]).repeat(masks_per_image)  # (N * M,)
    z0 = cached_latents(ldm.autoencoder, images, cache_dir, key)
    masks = inpainting_masks(images[index], seed)  # (N * M, 1, H, W)
    masked_key = {**key, "masked": {"masks_per_image": masks_per_image, "seed": seed}}
    z_masked = cached_latents(ldm.autoencoder, masked_images(images[index], masks), cache_dir, masked_key)
    return torch.cat([z0[index], z_masked, downsample_mask(masks, ldm.autoencoder.downsampling_factor)], 1), index


def sr_data(ldm: LatentDiffusion, images: Tensor, cache_dir: str | Path | None, key: dict) -> Tensor:
    """The packed training tensor of a 4x super-resolution model: [z0, x downsampled 4x], (N, C + 3, h, w)."""
    z0 = cached_latents(ldm.autoencoder, images, cache_dir, key)
    return torch.cat([z0, downsample_images(images, ldm.image_size // z0.shape[-1])], 1)


def photo_base(recipe: ApplicationPreset, image_size: int, seed: int) -> LatentDiffusion:
    """The from-scratch base of a photo super-resolution model: the preset's photo autoencoder, a fresh UNet
    (``recipe.photo_unet`` reading and predicting the latent channels, no cross-attention), the scaled-linear
    schedule (T = 1000) and no text encoder; the UNet's initial weights are fixed by ``seed``."""
    autoencoder = AutoencoderKL.from_pretrained(checkpoint_dir(recipe.photo_autoencoder))
    if float(autoencoder.scale_factor) == 1.0:
        raise ValueError(f"the {recipe.photo_autoencoder} autoencoder has no latent scale (scale_factor is 1): set "
                         "it with estimate_scale_factor and set_scale_factor, as tinyldm train autoencoder does")
    c = autoencoder.config.latent_channels
    with seeded(seed):  # the layers' default initialisation draws from the global RNG
        unet = UNet(replace(recipe.photo_unet, in_channels=c, out_channels=c, context_dim=None))
    return LatentDiffusion(autoencoder, unet, NoiseSchedule.scaled_linear(1000), None, image_size)


def train_application(kind: str, preset: str, out: str | Path, device: torch.device, objective: str = "diffusion",
                      base: str | Path | None = None, steps: int | None = None, batch_size: int | None = None,
                      num_images: int | None = None, resume: bool = False, progress: bool = True,
                      cache_dir: str | Path | None = None, until: int | None = None,
                      speed: SpeedConfig | None = None, checkpoint_every: int | None = None,
                      data: str | None = None, permute_colours: bool = False) -> TrainResult:
    """Fine-tune a text-to-image model on Shapes into an inpainting ("inpaint") or a super-resolution ("sr")
    model, or train a super-resolution model on photo crops from a base built from scratch; ``out`` ends up
    holding the EMA model (``ConcatConditionedLDM.save_pretrained``), the resumable ``train_state.pt``, the loss
    log and plot, sample grids and ``run.json``.

    Args:
        kind: "inpaint" or "sr".
        preset: "tiny" or "small" (``INPAINT_PRESETS``, ``SR_PRESETS``).
        out: the run folder.
        device: where to train.
        objective: "diffusion", or "regression" (super-resolution's baseline: z0 in one call, by MSE).
        base: the text-to-image model to start from (a folder or a shipped name); the preset's when None.
        data: None for Shapes; "photos" for super-resolution on the train photo crops, in true colours, from
            ``photo_base`` (no ``base``).
        permute_colours: with ``data="photos"``, each training crop's colour channels in a random order, as the
            photo autoencoders trained (the train photographs hold few hues; the test crops keep their colours).
        steps, batch_size, num_images, checkpoint_every: override the preset's values.
        resume, progress, cache_dir, until, speed: see ``tinyldm.jobs.ldm.train_ldm``.
    """
    if kind not in ("inpaint", "sr"):
        raise ValueError(f"kind must be 'inpaint' or 'sr', got {kind!r}")
    if objective not in OBJECTIVES or (kind == "inpaint" and objective != "diffusion"):
        raise ValueError(f"objective must be one of {OBJECTIVES} (regression only for sr), got {objective!r} for "
                         f"{kind}")
    if data not in (None, PHOTOS):
        raise ValueError(f"data must be None (Shapes) or {PHOTOS!r} (crops of the photographs), got {data!r}")
    if data == PHOTOS and kind != "sr":
        raise ValueError(f"data={PHOTOS!r} trains super-resolution only (kind 'sr'), got kind {kind!r}; inpainting "
                         "fine-tunes the Shapes text-to-image model: drop --data")
    if permute_colours and data != PHOTOS:
        raise ValueError(f"permute_colours shuffles the colour channels of the photo crops only; add data={PHOTOS!r} "
                         "(--data photos) or drop it")
    if data == PHOTOS and base is not None:
        raise ValueError(f"a super-resolution model on photos is built from scratch (photo_base: a photo "
                         f"autoencoder and a fresh UNet), so it takes no base; got base={str(base)!r}: drop --base, "
                         f"or drop --data {PHOTOS} to fine-tune that Shapes model")
    recipe = pick_preset(INPAINT_PRESETS if kind == "inpaint" else SR_PRESETS, preset)
    config = with_overrides(recipe.train, steps=steps, batch_size=batch_size, checkpoint_every=checkpoint_every)
    if not resume:
        refuse_to_overwrite(out)
    if data == PHOTOS:
        source = f"from scratch: {recipe.photo_autoencoder} and a fresh UNet (photo_base)"
        ldm = photo_base(recipe, PHOTO_SIZE, config.seed).to(device)
    else:
        source = Path(base) if base is not None else checkpoint_dir(recipe.base)
        ldm = LatentDiffusion.from_pretrained(source).to(device)
    pictures = training_set(data, ldm.image_size, num_images, recipe.num_images, progress=progress,
                            permute_colours=permute_colours)
    cache = cache_dir or latent_cache_dir()
    if kind == "inpaint":
        packed, index = inpainting_data(ldm, pictures.images, recipe.masks_per_image, recipe.mask_seed, cache,
                                        pictures.key)
        captions = [pictures.captions[i] for i in index.tolist()]
    else:
        packed, captions = sr_data(ldm, pictures.images, cache, pictures.key), pictures.captions
    model = ConcatConditionedLDM.from_base(ldm, kind, objective).to(device)
    settings = {"preset": preset, "kind": kind, "objective": objective, "base_sha256": weights_hash(ldm),
                "masks_per_image": recipe.masks_per_image, "mask_seed": recipe.mask_seed,
                **({"data": data} if data is not None else {})}  # Shapes runs keep their settings
    shown = packed[:config.num_samples]
    shown_captions = None if recipe.p_uncond >= 1 else captions[:config.num_samples]

    def export(ema: ConcatConditionedLDM, folder: Path) -> None:
        ema.save_pretrained(folder)

    def preview(ema: ConcatConditionedLDM) -> Tensor:
        generator = torch.Generator(device).manual_seed(config.seed)
        c = shown[:, model.latent_shape[0]:].to(device)
        return ema.sample(shown_captions, c, steps=config.sample_steps, generator=generator, progress=False)

    started = time.time()
    result = train_diffusion(model, packed, model.schedule, config, out=out, resume=resume, progress=progress,
                             until=until, speed=speed, captions=captions, p_uncond=recipe.p_uncond,
                             settings=settings, export=export, preview=preview)
    record_run(Path(out), resume, started, result, device, result.losses, preset=preset, kind=kind,
               objective=objective, base=str(source), data=pictures.record, num_items=packed.shape[0],
               num_images=pictures.images.shape[0],
               until_step=until or config.steps)
    return result
