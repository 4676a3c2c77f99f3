"""The training steps of the three ``full`` presets at 64x64, with the speed switches: what ``throughput.py`` times.

- ``autoencoder``: ``AUTOENCODER_PRESETS["full"]`` (f = 8, 64x64x3 -> 8x8x4). One step is the generator's (encode,
  posterior sample, decode, L1 + LPIPS + KL + the adaptive-weighted GAN term, AdamW) and then the PatchGAN's
  (hinge loss, AdamW), with the GAN on, as after ``disc_start``; then the EMA. LPIPS needs AlexNet weights
  (torchvision's download, or ``TINYLDM_LPIPS_WEIGHTS``); without them the step runs without LPIPS and says so.
- ``pixel``: ``PIXEL_PRESETS["full"]``, the 40M-parameter UNet on 64x64x3 pixels: diffusion loss, AdamW, EMA.
- ``latent``: ``LDM_PRESETS["full"]``'s UNet on the 8x8x4 latents of 64x64 images, encoded once by the full f = 8
  autoencoder (random weights: speed does not depend on them; training never runs the encoder, the latents are
  cached), trained through ``LatentDiffusion.training_loss`` as ``tinyldm train ldm`` trains it. Random
  (L = 16, D = 384) contexts with padding masks stand in for the frozen MiniLM's, which is neither loaded nor
  counted (on a GPU it adds its own forward pass over the batch's captions to each step).

Each step mirrors ``tinyldm.training.diffusion_loop.train_diffusion`` or
``tinyldm.training.autoencoder_loop.train_autoencoder``: a batch
drawn with replacement from a tensor, autocast, the check of every loss and gradient norm, clipping, AdamW, EMA
(the learning-rate schedule, one Python call, is left out). The switches: ``bf16`` (autocast, as the loops do on
CUDA), ``tf32`` (TF32 matmuls; PyTorch's convolutions use TF32 already), ``channels_last`` (weights and batches),
``fused_adamw``, ``compile`` (``torch.compile`` of the trained networks) and ``data_on_device`` (the training
tensor kept on the device instead of moving each batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.autoencoder_loss import AutoencoderLoss
from tinyldm.data.shapes import shapes_tensor
from tinyldm.diffusion import diffusion_loss
from tinyldm.guidance import drop_captions
from tinyldm.jobs.autoencoder import AUTOENCODER_PRESETS
from tinyldm.jobs.ldm import LDM_PRESETS
from tinyldm.jobs.pixel import PIXEL_PRESETS
from tinyldm.ldm import LatentDiffusion, check_parts
from tinyldm.perceptual import LPIPS
from tinyldm.runtime import dropout_rng, seeded  # the loops' own: dropout draws from a generator-seeded global RNG
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import shapes_captions
from tinyldm.training.ema import EMA
from tinyldm.training.latent_cache import encode_dataset
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet

__all__ = ["CONFIGS", "SWITCHES", "Bench", "RandomContexts", "build", "preset_batch_size"]

CONFIGS = ("autoencoder", "pixel", "latent")
SWITCHES = ("bf16", "tf32", "channels_last", "fused_adamw", "compile", "data_on_device")
CONTEXT_LENGTH, CONTEXT_DIM = 16, 384  # the frozen MiniLM's tokens per caption (at most) and its width


@dataclass
class Bench:
    """One config ready to run: ``step()`` is one training step, ``forward()`` one forward pass of what trains."""

    step: Callable[[], None]
    forward: Callable[[], None]
    parameters: int  # trainable parameters
    notes: list[str] = field(default_factory=list)  # what was measured differently from the real run, and why


def preset_batch_size(config: str) -> int:
    """The batch size of the config's ``full`` preset."""
    presets = {"autoencoder": AUTOENCODER_PRESETS, "pixel": PIXEL_PRESETS, "latent": LDM_PRESETS}
    return presets[config]["full"].train.batch_size


def _check(value: torch.Tensor, what: str) -> None:
    """The loops' check of every loss and gradient norm (it also waits for the device, as theirs does)."""
    if not math.isfinite(number := value.item()):
        raise FloatingPointError(f"the {what} became {number} in the benchmark")


def _speed(s: dict[str, bool]) -> SpeedConfig:
    """The training loops' own switches (``tinyldm.training.speed``), as ``tinyldm train ... --tf32 ...`` sets them."""
    return SpeedConfig(bf16=s["bf16"], tf32=s["tf32"], channels_last=s["channels_last"],
                       fused_adamw=s["fused_adamw"], compile=s["compile"],
                       data_on_device_mb=SpeedConfig.data_on_device_mb if s["data_on_device"] else 0.0)


def _sampler(data: torch.Tensor, batch: int, device: torch.device, speed: SpeedConfig):
    """A function that draws a (B, C, H, W) batch from ``data`` with replacement, as the loops do, and its indices."""
    data = speed.place_data(data, device)
    data_gen = torch.Generator().manual_seed(0)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, data.shape[0], (batch,), generator=data_gen)
        return speed.format_batch(data[index.to(data.device)].to(device, non_blocking=True)), index
    return draw


def _diffusion(model, data, captions, p_uncond, schedule, config, batch, device, s) -> Bench:
    """The step of ``train_diffusion`` for ``model``, with the loop's speed switches (``SpeedConfig``): the
    noise-prediction loss of an image UNet, or a text-conditioned pipeline's own ``training_loss``."""
    speed = _speed(s)
    ema = EMA(model, config.ema_decay)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay,
                                  **speed.adamw_options(device))
    unet = model if captions is None else model.unet
    speed.prepare_model(unet, device)
    draw = _sampler(data, batch, device, speed)
    noise_gen = torch.Generator(device).manual_seed(1)
    caption_gen = torch.Generator().manual_seed(0)
    autocast = speed.autocast(device)

    def step() -> None:
        x0, index = draw()
        with autocast, dropout_rng(noise_gen, device):
            t = torch.randint(0, schedule.num_steps, (batch,), generator=noise_gen, device=device)  # (B,)
            eps = torch.randn(x0.shape, generator=noise_gen, device=device, dtype=x0.dtype)
            if captions is None:
                loss = diffusion_loss(model, x0, schedule, t=t, eps=eps)
            else:
                prompts = drop_captions([captions[i] for i in index.tolist()], p_uncond, caption_gen)
                loss = model.training_loss(x0, prompts, t=t, eps=eps)
        _check(loss, "loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _check(torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip or math.inf), "gradient norm")
        optimizer.step()
        ema.update(model)

    def forward() -> None:
        x0, index = draw()
        t = torch.randint(0, schedule.num_steps, (batch,), generator=noise_gen, device=device)  # (B,)
        with autocast, torch.no_grad():
            if captions is None:
                unet(x0, t)
            else:
                context, mask = model.encode_prompts([captions[i] for i in index.tolist()])
                unet(x0, t, context, mask)
    return Bench(step, forward, sum(p.numel() for p in trainable))


def _pixel(batch: int, device: torch.device, s: dict[str, bool]) -> Bench:
    recipe = PIXEL_PRESETS["full"]
    with seeded(recipe.train.seed):
        unet = UNet(recipe.unet).to(device)
    data = shapes_tensor(batch, recipe.image_size)  # (B, 3, 64, 64) on the CPU, as train_pixel keeps it
    schedule = NoiseSchedule.cosine(recipe.num_steps).to(device)
    return _diffusion(unet, data, None, 0.0, schedule, recipe.train, batch, device, s)


class RandomContexts(torch.nn.Module):
    """Stands in for the frozen text encoder: ``encode`` gives random (B, L, 384) contexts and padding masks of
    random lengths, where the pipeline's ``training_loss`` runs MiniLM on the batch's captions."""

    context_dim = CONTEXT_DIM

    def encode(self, captions: list[str], allow_empty: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        context = torch.randn(len(captions), CONTEXT_LENGTH, CONTEXT_DIM, generator=generator)  # (U, L, D)
        lengths = torch.randint(2, CONTEXT_LENGTH + 1, (len(captions), 1), generator=generator)  # (U, 1)
        return context, torch.arange(CONTEXT_LENGTH) < lengths  # (U, L, D), (U, L)


def _latent(batch: int, device: torch.device, s: dict[str, bool]) -> Bench:
    recipe, text = LDM_PRESETS["full"], RandomContexts()
    with seeded(0):
        ae = AutoencoderKL(AUTOENCODER_PRESETS["full"].autoencoder).to(device).eval()
    latents = encode_dataset(ae, shapes_tensor(batch, recipe.image_size))  # (B, 4, 8, 8) on the CPU
    with seeded(recipe.train.seed):
        c = ae.config.latent_channels
        unet = UNet(replace(recipe.unet, in_channels=c, out_channels=c, context_dim=text.context_dim))
    check_parts(ae, unet, text, recipe.image_size)
    captions = shapes_captions()
    index = torch.randint(0, len(captions), (batch,), generator=torch.Generator().manual_seed(0))  # (B,)
    schedule = NoiseSchedule.scaled_linear(recipe.num_steps).to(device)
    pipeline = LatentDiffusion(ae, unet, schedule, text, recipe.image_size).to(device)
    bench = _diffusion(pipeline, latents, [captions[i] for i in index.tolist()], recipe.p_uncond, schedule,
                       recipe.train, batch, device, s)
    bench.notes.append(f"latent: the UNet on {tuple(latents.shape[1:])} latents of {recipe.image_size}x"
                       f"{recipe.image_size} images; random text contexts (L={CONTEXT_LENGTH}, D={CONTEXT_DIM}) "
                       "stand in for the frozen MiniLM's, which is neither loaded nor counted")
    return bench


def _autoencoder(batch: int, device: torch.device, s: dict[str, bool]) -> Bench:
    recipe, notes = AUTOENCODER_PRESETS["full"], []
    loss_config, cfg, lpips = recipe.loss, recipe.train, None
    try:
        lpips = LPIPS()
    except (OSError, RuntimeError, ValueError) as error:
        loss_config = replace(loss_config, perceptual_weight=0.0)
        notes.append(f"autoencoder: measured WITHOUT LPIPS, which could not load ({str(error)[:100]}...)")
    with seeded(cfg.seed):
        model = AutoencoderKL(recipe.autoencoder).to(device)
        loss = AutoencoderLoss(loss_config, lpips=lpips, generator=torch.Generator().manual_seed(cfg.seed))
    loss, disc = loss.to(device), loss.discriminator
    if s["channels_last"]:
        model.to(memory_format=torch.channels_last)
        loss.to(memory_format=torch.channels_last)
    speed = _speed(s)
    speed.apply_precision(device)
    ema = EMA(model, cfg.ema_decay)
    opt_g, opt_d = (torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                      **speed.adamw_options(device))
                    for params, lr in ((model.parameters(), cfg.lr), (disc.parameters(), cfg.disc_lr)))
    if s["compile"]:  # the parts, not the whole: the posterior sample's generator would break the graph
        for network in (model.encoder, model.decoder, disc):
            network.compile()
    draw = _sampler(shapes_tensor(batch, recipe.image_size), batch, device, speed)
    noise_gen = torch.Generator(device).manual_seed(1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s["bf16"])
    gan_step = loss_config.disc_start  # the GAN term and the discriminator are on from here
    clip = cfg.grad_clip or math.inf
    model.train()

    def step() -> None:
        x, _ = draw()
        with autocast, dropout_rng(noise_gen, device):
            reconstruction, posterior = model(x, sample_posterior=True, generator=noise_gen)
            g_total, _ = loss.generator_loss(x, reconstruction, posterior, gan_step, model.last_layer)
        _check(g_total, "loss")
        opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        _check(torch.nn.utils.clip_grad_norm_(model.parameters(), clip), "gradient norm")
        opt_g.step()
        with autocast:
            d_total, _ = loss.discriminator_loss(x, reconstruction.detach(), gan_step)
        _check(d_total, "discriminator loss")
        opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        _check(torch.nn.utils.clip_grad_norm_(disc.parameters(), clip), "discriminator gradient norm")
        opt_d.step()
        ema.update(model)

    def forward() -> None:
        with autocast, torch.no_grad():
            model(draw()[0], sample_posterior=True, generator=noise_gen)
    notes.append(f"autoencoder: parameters are the autoencoder's {model.num_parameters():,} plus the "
                 f"discriminator's {disc.num_parameters():,}; LPIPS is frozen and not counted")
    return Bench(step, forward, model.num_parameters() + disc.num_parameters(), notes)


def build(config: str, batch: int, device: torch.device, switches: dict[str, bool]) -> Bench:
    """The training step of ``config`` ("autoencoder", "pixel" or "latent") at ``batch`` images, on ``device``."""
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; use one of {CONFIGS}")
    return {"autoencoder": _autoencoder, "pixel": _pixel, "latent": _latent}[config](batch, device, switches)
