"""Concat conditioning (Rombach et al. 2022, Sec. 4.4-4.5): image-to-image latent diffusion for inpainting and
super-resolution, fine-tuned from a text-to-image model.

The UNet reads extra input channels stacked onto z_t, the conditioning image at latent resolution:

    eps_theta([z_t, c], t, tau(y)),   c = [E(x * (1 - m)), m at h x w]   (inpainting: C + 1 channels)
                                      c = x_low, 8x8x3 in [-1, 1]        (4x super-resolution: 3 channels)

For inpainting, c holds the latent of the masked image (the hole set to 0, grey) and the mask m at latent
resolution (1 = generate); Stable Diffusion's inpainting model is exactly this, 4 + 5 input channels. For
super-resolution at f = 4, the 4x-downsampled 32x32 image is 8x8, the latent's size, so the paper's recipe of
concatenating the low-resolution image to z_t carries over without any resizing.

``ConcatConditionedLDM.from_base`` starts from a trained text-to-image ``LatentDiffusion``: the first
convolution's weights for the extra channels are zero and everything else is copied, so before fine-tuning the
model predicts exactly what the base model predicts. The objective stays Eq. 2/3's noise prediction on the C latent
channels. Sampling reuses the samplers of ``tinyldm.sampling`` through a model wrapper that stacks c onto every x_t;
with classifier-free guidance both branches keep c, and only the caption is dropped, as in Stable Diffusion's
inpainting pipeline (the unconditional branch is eps([z_t, c], t, tau(""))).

``objective="regression"`` is the baseline of the paper's Tab. 5: the same network and inputs trained with an
MSE to predict z0 in one call, from z_t = 0 at the fixed step t = T - 1.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.guidance import ClassifierFreeGuidance, drop_captions
from tinyldm.inpainting import check_mask, downsample_mask
from tinyldm.ldm import LatentDiffusion, TextEncoder, check_parts
from tinyldm.pretrained import CONFIG_NAME, read_json_file
from tinyldm.runtime import atomic_write
from tinyldm.sampling import SAMPLERS, sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import check_prompts
from tinyldm.unet import UNet

__all__ = ["CONCAT_KINDS", "OBJECTIVES", "extra_channels", "masked_images", "downsample_images",
           "ConcatConditionedLDM"]

CONCAT_KINDS = ("inpaint", "sr")
OBJECTIVES = ("diffusion", "regression")


def extra_channels(kind: str, latent_channels: int) -> int:
    """Channels of c: the masked image's latent and the mask (C + 1) for "inpaint", an RGB image (3) for "sr"."""
    if kind not in CONCAT_KINDS:
        raise ValueError(f"kind must be one of {CONCAT_KINDS} (inpainting or super-resolution), got {kind!r}")
    return latent_channels + 1 if kind == "inpaint" else 3


def masked_images(images: Tensor, mask: Tensor) -> Tensor:
    """x * (1 - m): the image with the hole set to 0, mid grey. images (B, 3, H, W), mask (B, 1, H, W)."""
    return images * (1 - mask.to(images.dtype))


def downsample_images(images: Tensor, factor: int = 4) -> Tensor:
    """The low-resolution input of super-resolution: bicubic, antialiased, (B, 3, H, W) -> (B, 3, H/k, W/k)."""
    size = (images.shape[-2] // factor, images.shape[-1] // factor)
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)


class ConcatConditionedLDM(LatentDiffusion):
    """A latent diffusion model whose UNet also reads c, an image at latent resolution, stacked onto z_t.

    Args:
        autoencoder, unet, schedule, text_encoder, image_size: as ``LatentDiffusion``; the UNet reads
            C + extra_channels(kind, C) channels and predicts C.
        kind: "inpaint" or "sr".
        objective: "diffusion" (Eq. 2/3, eps prediction) or "regression" (z0 in one call, Tab. 5's baseline).
    """

    def __init__(self, autoencoder: AutoencoderKL, unet: UNet, schedule: NoiseSchedule,
                 text_encoder: TextEncoder | None = None, image_size: int = 32, kind: str = "inpaint",
                 objective: str = "diffusion"):
        c = autoencoder.config.latent_channels
        k = extra_channels(kind, c)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if unet.config.in_channels != c + k or unet.config.out_channels != c:
            raise ValueError(f"a {kind} model's UNet reads z_t and c, {c} + {k} = {c + k} channels, and predicts "
                             f"{c}; got in_channels={unet.config.in_channels}, out_channels="
                             f"{unet.config.out_channels}: build it with ConcatConditionedLDM.from_base(ldm, "
                             f"{kind!r}) from a text-to-image LatentDiffusion")
        # LatentDiffusion's checks, on the UNet as it reads z_t alone.
        check_parts(autoencoder, _LatentView(replace(unet.config, in_channels=c)), text_encoder, image_size)
        torch.nn.Module.__init__(self)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.unet, self.text_encoder, self.schedule, self.image_size = unet, text_encoder, schedule, image_size
        self.kind, self.objective, self.extra_channels = kind, objective, k

    @classmethod
    def from_base(cls, base: LatentDiffusion, kind: str, objective: str = "diffusion") -> ConcatConditionedLDM:
        """A copy of a text-to-image model whose UNet also reads c; c's first-convolution weights are zero, so the
        new model's first prediction is the base model's (up to the order of float sums)."""
        if type(base) is not LatentDiffusion:
            raise TypeError(f"from_base takes a text-to-image LatentDiffusion, got a {type(base).__name__}; load "
                            "one with LatentDiffusion.from_pretrained('data/checkpoints/ldm-shapes')")
        c = base.latent_shape[0]
        k = extra_channels(kind, c)
        with torch.random.fork_rng(devices=[]):  # the layers' default init draws from the global RNG: leave it be
            unet = UNet(replace(base.unet.config, in_channels=c + k)).to(base.device)
        state = dict(base.unet.state_dict())
        weight = state["conv_in.weight"]  # (width, C, 3, 3)
        state["conv_in.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], k, *weight.shape[2:])], 1)
        unet.load_state_dict(state)
        text = copy.deepcopy(base.text_encoder)  # fine-tuned with the UNet; the base model keeps its own
        return cls(base.autoencoder, unet, base.schedule, text, base.image_size, kind, objective)

    @property
    def low_resolution(self) -> int:
        """The side of a super-resolution model's input image: the latent side, image_size / f."""
        return self.latent_shape[1]

    def inpainting_conditioning(self, images: Tensor, mask: Tensor) -> Tensor:
        """c for inpainting: [E(x * (1 - m)) scaled, m at latent resolution].

        Args:
            images: (B, 3, image_size, image_size) in [-1, 1].
            mask: (B, 1, image_size, image_size), 1 in the hole.
        Returns:
            (B, C + 1, h, w).
        """
        if self.kind != "inpaint":
            raise ValueError(f"this is a {self.kind!r} model: it has no inpainting channels (the masked image's "
                             "latent and the mask); load an inpainting model, e.g. data/checkpoints/"
                             "ldm-shapes-inpaint, or fine-tune one with tinyldm train inpaint")
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size) or mask.shape != (images.shape[0], 1, size, size):
            raise ValueError(f"images must be (B, 3, {size}, {size}) and mask (B, 1, {size}, {size}), got "
                             f"{tuple(images.shape)} and {tuple(mask.shape)}")
        mask = mask.to(self.device)
        z_masked = self.encode_images(masked_images(images.to(self.device), mask))
        return torch.cat([z_masked, downsample_mask(mask, self.autoencoder.downsampling_factor)], 1)

    def sr_conditioning(self, low_res: Tensor) -> Tensor:
        """c for super-resolution: the low-resolution image itself, (B, 3, h, w) in [-1, 1] with h = w the latent
        side (8 for 32x32 images at f = 4)."""
        if self.kind != "sr":
            raise ValueError(f"this is a {self.kind!r} model, not a super-resolution one; load one, e.g. "
                             "data/checkpoints/ldm-shapes-sr, or fine-tune one with tinyldm train sr")
        side = self.low_resolution
        if not isinstance(low_res, Tensor) or low_res.ndim != 4 or low_res.shape[1:] != (3, side, side):
            shape = tuple(low_res.shape) if isinstance(low_res, Tensor) else type(low_res).__name__
            raise ValueError(f"the low-resolution input must be (B, 3, {side}, {side}) (this model upscales "
                             f"{side}x{side} to {self.image_size}x{self.image_size}), got {shape}; make it with "
                             f"downsample_images(images, {self.image_size // side}) from {self.image_size}x"
                             f"{self.image_size} images")
        return low_res.to(self.device)

    def _check_conditioning(self, c: Tensor, batch: int) -> None:
        shape = (batch, self.extra_channels, *self.latent_shape[1:])
        if not isinstance(c, Tensor) or tuple(c.shape) != shape:
            got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
            raise ValueError(f"a {self.kind!r} model's conditioning must be {shape}, got {got}; build it with "
                             f"{'inpainting' if self.kind == 'inpaint' else 'sr'}_conditioning")

    def concat_model(self, c: Tensor) -> Callable[..., Tensor]:
        """``model(xt, t, context, context_mask)`` = unet([xt, c], ...), c repeated when xt holds several copies of
        the batch (guidance's 2B): both branches of classifier-free guidance see the image conditioning."""
        def model(xt: Tensor, t: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
            cc = c if xt.shape[0] == c.shape[0] else c.repeat(xt.shape[0] // c.shape[0], 1, 1, 1)
            return self.unet(torch.cat([xt, cc], 1), t, context, mask)
        return model

    def denoiser(self, *args: Any, **kwargs: Any) -> tuple[Callable[..., Tensor], int]:
        """Refused: this model's noise predictor also needs c; use ``concat_model(c)`` or ``sample``."""
        raise TypeError(f"a {self.kind!r} model's UNet also reads the conditioning image c: build its noise "
                        "predictor with concat_model(c) (and ClassifierFreeGuidance), or call "
                        "sample(prompts, conditioning)")

    def training_loss(self, data: Tensor, prompts: Sequence[str] | None = None, p_uncond: float = 0.0,
                      generator: torch.Generator | None = None, caption_generator: torch.Generator | None = None,
                      t: Tensor | None = None, eps: Tensor | None = None) -> Tensor:
        """Rombach et al. 2022, Eq. 2/3 with c stacked onto z_t: || eps - eps_theta([z_t, c], t, tau(y)) ||^2 on the
        C latent channels only (regression: || z0 - f_theta([0, c], T - 1, tau(y)) ||^2).

        Args:
            data: (B, C + k, h, w): z0 in the first C channels, c in the other k (what ``tinyldm train inpaint``
                and ``tinyldm train sr`` pack, so the loop's batches carry both).
            prompts, p_uncond, generator, caption_generator: see ``LatentDiffusion.training_loss``.
            t: (B,) int64 steps; drawn uniformly when None.
            eps: (B, C, h, w) or (B, C + k, h, w) noise (the loop draws it shaped like data; the first C channels
                are used); drawn when None.
        Returns:
            the scalar loss.
        """
        C = self.latent_shape[0]
        if data.ndim != 4 or data.shape[1] != C + self.extra_channels:
            raise ValueError(f"data must be (B, {C + self.extra_channels}, h, w), z0 and c stacked, got "
                             f"{tuple(data.shape)}")
        z0, c = data[:, :C], data[:, C:]
        B = z0.shape[0]
        context = mask = None
        if self.text_encoder is not None:
            prompts = check_prompts(prompts if prompts is not None else [""] * B, allow_empty=True)
            if len(prompts) != B:
                raise ValueError(f"got {len(prompts)} prompts for {B} latents; pass one caption per image")
            context, mask = self.encode_prompts(drop_captions(prompts, p_uncond, caption_generator), allow_empty=True)
        model = self.concat_model(c)
        if self.objective == "regression":
            t_fixed = torch.full((B,), self.schedule.num_steps - 1, dtype=torch.int64, device=z0.device)
            return F.mse_loss(model(torch.zeros_like(z0), t_fixed, context, mask), z0)
        if t is None:
            t = torch.randint(0, self.schedule.num_steps, (B,), generator=generator, device=z0.device)
        eps = torch.randn(z0.shape, generator=generator, device=z0.device) if eps is None else eps[:, :C]
        alpha_bar = self.schedule.alpha_bars[t].view(B, 1, 1, 1).to(z0.dtype)
        # Ho et al. 2020, Eq. 4: z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps
        zt = alpha_bar.sqrt() * z0 + (1 - alpha_bar).sqrt() * eps
        # Rombach et al. 2022, Eq. 2/3, with c concatenated to z_t
        return F.mse_loss(model(zt, t, context, mask), eps)

    @torch.no_grad()
    def sample(self, prompts: Sequence[str] | None, conditioning: Tensor, steps: int = 50, sampler: str = "ddim",
               eta: float = 0.0, guidance_scale: float = 3.0, generator: torch.Generator | None = None,
               callback: Callable[[dict[str, Any]], None] | None = None, progress: bool = True,
               xT: Tensor | None = None) -> Tensor:
        """Images that fit c (and the prompts), by the samplers of ``tinyldm.sampling`` on [z_t, c].

        Args:
            prompts: one caption per row of ``conditioning``, or None (the empty caption, no guidance).
            conditioning: (B, k, h, w) c, from ``inpainting_conditioning`` or ``sr_conditioning``.
            steps, sampler, eta, guidance_scale, generator, callback, progress, xT: see ``LatentDiffusion.sample``;
                the guidance's unconditional branch keeps c and drops only the caption. A regression model makes
                one call and ignores them.
        Returns:
            (B, 3, image_size, image_size) images in [-1, 1], not pasted into the kept pixels.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        B = conditioning.shape[0] if isinstance(conditioning, Tensor) and conditioning.ndim == 4 else -1
        self._check_conditioning(conditioning, B)
        self.eval()
        c = conditioning.to(self.device)
        model: Callable[..., Tensor] = self.concat_model(c)
        context = mask = None
        if self.text_encoder is not None:
            if prompts is None:
                context, mask = self.text_encoder.encode([""] * B, allow_empty=True)
            else:
                prompts = check_prompts(prompts)
                if len(prompts) != B:
                    raise ValueError(f"got {len(prompts)} prompts for {B} conditioning images; pass one per image")
                context, mask = self.encode_prompts(prompts)
        elif prompts is not None:
            self.encode_prompts(prompts)  # raises: this model reads no prompts
        if self.objective == "regression":
            t = torch.full((B,), self.schedule.num_steps - 1, dtype=torch.int64, device=self.device)
            return self.decode_latents(model(c.new_zeros(B, *self.latent_shape), t, context, mask))
        if self.text_encoder is not None and prompts is not None:
            null, null_mask = self.text_encoder.encode_null(1)
            guided = ClassifierFreeGuidance(model, context, null, guidance_scale, mask, null_mask)
        else:
            def guided(xt: Tensor, t: Tensor) -> Tensor:
                return model(xt, t, context, mask)
        z0 = sample(guided, (B, *self.latent_shape), self.schedule, sampler, steps, eta, generator, callback,
                    xT=xT, progress=progress)
        return self.decode_latents(z0)

    @torch.no_grad()
    def inpaint(self, images: Tensor, mask: Tensor, prompts: Sequence[str] | None, steps: int = 50,
                sampler: str = "ddpm", eta: float = 0.0, guidance_scale: float = 3.0,
                generator: torch.Generator | None = None, progress: bool = True) -> Tensor:
        """Fill the holes after the prompts and paste the fill into the kept pixels: m * D(z0) + (1 - m) * x, with
        z0 sampled from the UNet that reads [z_t, E(x * (1 - m)), m] (Rombach et al. 2022, Sec. 4.5).

        Args:
            images: (B, 3, S, S) in [-1, 1], S = ``image_size``.
            mask: (S, S) or (B, 1, S, S), 1 in the hole (``tinyldm.inpainting.check_mask``).
            prompts, steps, sampler, eta, guidance_scale, generator, progress: see ``sample``.
        Returns:
            (B, 3, S, S) images in [-1, 1], equal to ``images`` wherever the mask is 0.
        """
        images = images.to(self.device)
        mask = check_mask(mask, images)  # (B, 1, S, S)
        raw = self.sample(prompts, self.inpainting_conditioning(images, mask), steps, sampler, eta, guidance_scale,
                          generator, progress=progress)
        return mask * raw + (1 - mask) * images

    @torch.no_grad()
    def upscale(self, low_res: Tensor, steps: int = 50, sampler: str = "ddpm", eta: float = 0.0,
                generator: torch.Generator | None = None, progress: bool = True) -> Tensor:
        """4x super-resolution: (B, 3, h, w) low-resolution images in [-1, 1], h = w the latent side, to (B, 3, S, S).
        A diffusion model samples (``sample``, no caption); a regression model makes its one call."""
        return self.sample(None, self.sr_conditioning(low_res), steps, sampler, eta, generator=generator,
                           progress=progress)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """``LatentDiffusion.save_pretrained``, and config.json records the kind, objective and extra channels."""
        directory = super().save_pretrained(directory)
        index = read_json_file(directory / CONFIG_NAME)
        index.update(kind=self.kind, objective=self.objective, extra_channels=self.extra_channels)
        atomic_write(directory / CONFIG_NAME, lambda f: f.write(json.dumps(index, indent=2).encode() + b"\n"))
        return directory

    @classmethod
    def _other_class_message(cls, path: Path, found: str | None) -> str:
        return (f"{path} describes a {found}, which has no image-conditioning input channels: fine-tune it into one "
                f"with tinyldm train inpaint (or sr), or in Python ConcatConditionedLDM.from_base("
                f"LatentDiffusion.from_pretrained(...), 'inpaint')")

    @classmethod
    def _from_parts(cls, index: dict[str, Any], autoencoder: AutoencoderKL, unet: UNet, schedule: NoiseSchedule,
                    text_encoder: TextEncoder | None, image_size: int) -> ConcatConditionedLDM:
        """The model with the kind and objective its config.json records (see ``save_pretrained``)."""
        model = cls(autoencoder, unet, schedule, text_encoder, image_size, index.get("kind"),
                    index.get("objective", "diffusion"))
        if index.get("extra_channels") != model.extra_channels:
            raise ValueError(f"config.json records extra_channels={index.get('extra_channels')} but a "
                             f"{model.kind!r} model has {model.extra_channels}; save the model again")
        return model


class _LatentView:
    """Stands for a UNet whose config reads z_t alone, for ``check_parts``."""

    def __init__(self, config: Any):
        self.config = config
