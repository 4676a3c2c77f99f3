"""The latent diffusion jobs behind the ``tinyldm`` command: train a text-to-image model, and generate with it.

Training never touches pixels after the first minute: the images (Shapes, or your own captioned pictures through
``tinyldm.data.folder.image_text_pairs``) are encoded once with the frozen autoencoder (``cached_latents``, optionally
kept on disk) and the UNet trains on that latent tensor with the same loop as the pixel model
(``tinyldm.training.diffusion_loop.train_diffusion``). The captions travel as indices into the list of distinct captions;
``CaptionDenoiser`` turns them into a text context, dropping some for classifier-free guidance.
On your own data the small text encoder's tokenizer learns the words of your captions (``caption_text_config``);
the pretrained encoder needs nothing learnt.

The presets: ``tiny`` for tests and the lesson's quick runs, ``small`` for the shipped ``ldm-shapes`` checkpoint
(32x32 Shapes through the shipped f = 4 autoencoder: 8x8x4 latents, a small text encoder trained with the UNet),
``full`` for 64x64 images on a GPU with a frozen pretrained sentence encoder.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.data.folder import image_text_pairs
from tinyldm.data.shapes import Shapes
from tinyldm.guidance import NULL_CAPTION
from tinyldm.ldm import LatentDiffusion, check_parts
from tinyldm.pretrained import checkpoint_dir
from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import (
    PretrainedTextEncoder,
    TextEncoderConfig,
    TinyTextEncoder,
    tokenizer_vocabulary,
    train_tokenizer,
)
from tinyldm.training import distributed
from tinyldm.training.checkpoint import STATE_NAME
from tinyldm.training.diffusion_loop import TrainConfig, TrainResult, train_diffusion
from tinyldm.training.latent_cache import cached_latents, latent_cache_dir, weights_hash
from tinyldm.training.run_folder import append_run_record
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet, UNetConfig

__all__ = ["LDMPreset", "LDM_PRESETS", "CaptionDenoiser", "caption_text_config", "train_ldm", "load_ldm",
           "generate_ldm", "SETTINGS_NAME", "MAX_CAPTION_TOKENS"]

SETTINGS_NAME = "ldm_settings.json"
MAX_CAPTION_TOKENS = 77  # the small text encoder's limit, [CLS] and [SEP] included: Stable Diffusion's CLIP limit
_ENCODE_CHUNK = 512  # captions per call when a frozen encoder encodes the whole caption list once


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


class CaptionDenoiser(nn.Module):
    """eps_theta(z_t, t, y) for ``train_diffusion``: caption indices in, text context through cross-attention.

    In training mode each caption is replaced by the empty one with probability ``p_uncond`` (Ho & Salimans 2022,
    Algorithm 1), the coin flips drawn from a generator whose state is part of ``state_dict``, so a checkpoint
    restores it and a resumed run drops the same captions. A trainable text encoder is a submodule (it trains and
    is averaged with the UNet); a frozen one is run once over every caption and replaced by the table of contexts.

    Args:
        unet: the noise predictor; ``context_dim`` set unless ``text_encoder`` is None.
        text_encoder: the text encoder, or None for an unconditional model (then ``cond`` is ignored).
        captions: the distinct training captions; ``cond`` holds indices into it.
        p_uncond: the caption dropout probability.
        seed: seeds the caption dropout's generator.
    """

    def __init__(self, unet: UNet, text_encoder: nn.Module | None, captions: list[str], p_uncond: float = 0.1,
                 seed: int = 0):
        super().__init__()
        if not 0 <= p_uncond <= 1:
            raise ValueError(f"p_uncond must lie in [0, 1] (the chance of dropping a caption), got {p_uncond}")
        self.unet = unet
        self.captions = [*captions, NULL_CAPTION]  # the last index is the null caption
        self.p_uncond = p_uncond
        self.generator = torch.Generator().manual_seed(seed)
        self.text_encoder = None
        self.conditional = text_encoder is not None
        if text_encoder is not None and any(p.requires_grad for p in text_encoder.parameters()):
            self.text_encoder = text_encoder
        elif text_encoder is not None:
            context, mask = _encode_all(text_encoder, self.captions)  # (U + 1, L, D), (U + 1, L)
            self.register_buffer("contexts", context, persistent=False)
            self.register_buffer("masks", mask, persistent=False)

    def forward(self, xt: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args:
            xt: (B, C, h, w) noisy latents.
            t: (B,) int64 steps.
            cond: (B,) int64 caption indices (required for a conditional model).
        Returns:
            (B, C, h, w) eps_pred.
        """
        if not self.conditional:
            return self.unet(xt, t)
        if cond is None:
            raise ValueError("this denoiser is text-conditioned: pass cond, the (B,) caption indices")
        if self.training and self.p_uncond > 0:
            # The coins of the whole global batch, of which this process keeps its share: every process's
            # generator stays in step, and the run drops the captions a single process would drop.
            coins = torch.rand(cond.shape[0] * distributed.world_size(), generator=self.generator)  # on the CPU
            drop = distributed.shard(coins) < self.p_uncond  # (B,)
            cond = torch.where(drop.to(cond.device), len(self.captions) - 1, cond)
        if self.text_encoder is not None:
            context, mask = self.text_encoder.encode([self.captions[i] for i in cond.tolist()], allow_empty=True)
        else:
            context, mask = self.contexts[cond], self.masks[cond]
        return self.unet(xt, t, context, mask)

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"caption_generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["caption_generator"])


@torch.no_grad()
def _encode_all(text_encoder: nn.Module, captions: list[str]) -> tuple[Tensor, Tensor]:
    """Encode every caption, in chunks (one batch of 50,000 captions would hold all its activations at once),
    padded to the longest: context (U, L, D) and mask (U, L), False on the padding."""
    parts = [text_encoder.encode(captions[i:i + _ENCODE_CHUNK], allow_empty=True)
             for i in range(0, len(captions), _ENCODE_CHUNK)]
    if len(parts) == 1:
        return parts[0]
    length = max(c.shape[1] for c, _ in parts)
    context = parts[0][0].new_zeros(len(captions), length, parts[0][0].shape[2])  # (U, L, D)
    mask = parts[0][1].new_zeros(len(captions), length)  # (U, L)
    for k, (c, m) in enumerate(parts):
        rows = slice(k * _ENCODE_CHUNK, k * _ENCODE_CHUNK + c.shape[0])
        context[rows, :c.shape[1]], mask[rows, :m.shape[1]] = c, m
    return context, mask


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


def _training_data(data: str | Path | None, size: int, num_images: int | None, default_num: int, strict: bool,
                   progress: bool) -> tuple[Tensor, list[str], dict[str, Any], dict[str, Any]]:
    """The images (n, 3, S, S) in [-1, 1], one caption each, their latent cache key and a record for run.json."""
    if data is None:
        n = num_images or default_num
        dataset = Shapes(n, size=size)
        items = [dataset[i] for i in range(n)]
        images = torch.stack([item["image"] for item in items])  # (n, 3, S, S) in [-1, 1]
        key = {"dataset": "shapes", "num_images": n, "size": size, "seed": 0, "split": "train"}
        return images, [item["caption"] for item in items], key, {"source": "shapes"}
    pairs = image_text_pairs(data, size, num_images, strict, None if progress else False)
    record = pairs.record()
    key = {"dataset": "images", "images_sha256": record["images_sha256"], "num_images": len(pairs), "size": size}
    return pairs.images, pairs.captions, key, record


def _autoencoder(source: str | Path | AutoencoderKL) -> AutoencoderKL:
    if isinstance(source, AutoencoderKL):
        return source
    path = Path(source)
    return AutoencoderKL.from_pretrained(path if path.is_dir() or len(path.parts) > 1 else checkpoint_dir(source))


def _check_settings(out: Path, settings: dict[str, Any], resume: bool) -> None:
    path = out / SETTINGS_NAME
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        changed = [f"{k}: saved {saved.get(k)!r}, now {settings.get(k)!r}" for k in {*saved, *settings}
                   if saved.get(k) != settings.get(k)]
        if changed:
            raise ValueError(f"cannot resume {out} with a different model or data ({'; '.join(sorted(changed))}); "
                             "resume with the run's settings or choose another output folder")
    elif not (out / STATE_NAME).exists() and distributed.is_main_process():
        # a run already there is refused by train_diffusion, untouched
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def train_ldm(preset: str, out: str | Path, device: torch.device, autoencoder: str | Path | AutoencoderKL | None = None,
              steps: int | None = None, batch_size: int | None = None, num_images: int | None = None,
              unconditional: bool = False, resume: bool = False, progress: bool = True,
              cache_dir: str | Path | None = None, until: int | None = None,
              speed: SpeedConfig | None = None, data: str | Path | None = None, image_size: int | None = None,
              strict: bool = False) -> TrainResult:
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
            ``tinyldm.data.folder.image_text_pairs``). The small text encoder then learns the captions' words.
        image_size: the training image side instead of the preset's.
        strict: stop at the first unreadable or uncaptioned picture of ``data`` instead of skipping it.
    """
    if preset not in LDM_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(LDM_PRESETS)}")
    recipe = LDM_PRESETS[preset]
    config = replace(recipe.train, **{k: v for k, v in (("steps", steps), ("batch_size", batch_size))
                                      if v is not None})
    if autoencoder is None and recipe.autoencoder is None:
        raise ValueError(f"the {preset} preset needs a {recipe.image_size}x{recipe.image_size} autoencoder, and none "
                         f"is shipped: train one first (tinyldm train autoencoder --config {preset} --out "
                         f"runs/autoencoder-{recipe.image_size}), then pass it (--autoencoder "
                         f"runs/autoencoder-{recipe.image_size})")
    ae = _autoencoder(autoencoder if autoencoder is not None else recipe.autoencoder).to(device).eval()
    size = image_size or recipe.image_size
    images, item_captions, key, data_record = _training_data(data, size, num_images, recipe.num_images, strict,
                                                             progress)
    n = images.shape[0]
    captions = sorted(set(item_captions))
    index = {text: i for i, text in enumerate(captions)}
    cond = torch.tensor([index[text] for text in item_captions])  # (n,) caption indices
    text_config = recipe.text_encoder
    if data is not None and not unconditional and isinstance(text_config, TextEncoderConfig):
        text_config = caption_text_config(text_config, captions)  # the user's words, not Shapes'

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
    latents = cached_latents(ae, images, cache_dir or latent_cache_dir(), key)  # (n, C, h, w) on the CPU
    if distributed.is_main_process():
        distributed.barrier()
    denoiser = CaptionDenoiser(unet, text_encoder, captions, recipe.p_uncond, config.seed).to(device)
    schedule = NoiseSchedule.scaled_linear(recipe.num_steps).to(device)
    out = Path(out)
    settings = {"preset": preset, "unconditional": unconditional, "num_images": n, "image_size": size,
                "p_uncond": recipe.p_uncond, "autoencoder_sha256": weights_hash(ae)}
    if data is not None:  # (Shapes runs keep their settings as they were, so that they still resume)
        settings["data"] = {k: data_record[k] for k in ("images_sha256", "captions_sha256")}
    _check_settings(out, settings, resume)
    start = time.time()
    result = train_diffusion(denoiser, latents, schedule, config, out=out, resume=resume, progress=progress,
                             until=until, conditioning=cond if text_encoder is not None else None,
                             decode=ae.decode_latents, speed=speed)
    if not distributed.is_main_process():  # process 0 writes the pipeline and the run's record
        return result
    ema = result.ema_model
    trained_text = ema.text_encoder if ema.text_encoder is not None else text_encoder
    LatentDiffusion(ae, ema.unet, schedule, trained_text, size).save_pretrained(out)
    record = {"preset": preset, "unconditional": unconditional, "device": str(device),
              "threads": torch.get_num_threads(), "data": data_record, "image_size": size, "num_images": n,
              "distinct_captions": len(captions),
              "steps_run": result.steps_run, "until_step": until or config.steps,
              "wall_seconds": round(time.time() - start, 1), "train_seconds": round(result.train_seconds, 1),
              "images_per_second": round(result.images_per_second, 1),
              "final_loss_mean_100": sum(result.losses[-100:]) / max(1, len(result.losses[-100:]))}
    append_run_record(out, record, resume)
    return result


def load_ldm(directory: str | Path, device: torch.device | None = None) -> LatentDiffusion:
    """Load a latent diffusion folder onto ``device`` (CPU by default), in eval mode."""
    return LatentDiffusion.from_pretrained(directory).to(device or torch.device("cpu"))


@torch.no_grad()
def generate_ldm(ldm: LatentDiffusion, prompt: str | None, num_images: int = 16, seed: int = 0,
                 guidance_scale: float = 3.0, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
                 frames: int = 40, progress: bool = True) -> tuple[Tensor, Tensor, list[int]]:
    """Draw ``num_images`` images of one prompt and the decoded x0 predictions along the way, for an animation.

    Each frame decodes the model's current guess of the clean latents, x0_pred (Eq. 15 of Ho et al. 2020, in
    latent space): noisy latents decode to colour noise, while x0_pred shows the picture taking shape.

    Args:
        ldm: the pipeline; sampling runs on its device.
        prompt: the text, or None for an unconditional model.
        num_images, seed: how many images, and the seed of the noise.
        guidance_scale, sampler, steps, eta: see ``LatentDiffusion.sample``.
        frames: about how many frames to keep.
    Returns:
        images (B, 3, H, W) in [-1, 1] on the CPU, frames (K, B, 3, H, W) ending with the images, and the K step
        labels (-1 for the final images).
    """
    generator = torch.Generator(ldm.device).manual_seed(seed)
    every = max(1, math.ceil(min(steps, ldm.schedule.num_steps) / frames))
    kept, labels = [], []

    def record(info: dict[str, Any]) -> None:
        if info["i"] % every == 0:
            kept.append(info["x0_pred"])
            labels.append(info["t"])

    images = ldm.sample(None if prompt is None else [prompt], num_images, steps, sampler, eta, guidance_scale,
                        generator, record, progress)
    decoded = [ldm.decode_latents(z0).cpu() for z0 in kept]  # (B, 3, H, W) each
    return images.cpu(), torch.stack([*decoded, images.cpu()]), [*labels, -1]
