"""Latent diffusion (Rombach et al. 2022): diffusion on an autoencoder's latents, optionally guided by text.

A frozen KL autoencoder (lesson 4) maps an image x to latents z0 = scale_factor * E(x), small enough that a UNet
can afford to denoise them; sampling runs the reverse process on latents and decodes only the final z0 (Sec. 3.2).
With a text encoder the UNet reads the prompt's tokens through cross-attention, eps_theta(z_t, t, tau(y))
(Sec. 3.3, Eq. 3), and classifier-free guidance sharpens the match between image and prompt (Ho & Salimans 2022).
Without one it is unconditional latent diffusion, lesson 5's model.

``LatentDiffusion.save_pretrained`` writes one folder that holds every part::

    config.json        {"_class_name": "LatentDiffusion", "autoencoder": "autoencoder", "unet": "unet",
                        "text_encoder": ..., "schedule": "schedule.json", "image_size": 32, ...}
    autoencoder/       config.json, model.safetensors (with the latent scale factor)
    unet/              config.json, model.safetensors
    text_encoder/      the small trained encoder: config.json (with its vocabulary), model.safetensors, tokenizer/
    schedule.json      the noise schedule, the prediction target and the image size

A frozen pretrained text encoder is saved as a reference (its name and width), not as 90 MB of weights it never
changed; loading fetches it by that name, or from ``$TINYLDM_TEXT_ENCODER`` offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.diffusion import diffusion_loss
from tinyldm.guidance import ClassifierFreeGuidance, drop_captions
from tinyldm.pretrained import CONFIG_NAME, load_schedule, read_json_file, save_schedule
from tinyldm.runtime import atomic_write
from tinyldm.sampling import SAMPLERS, sample
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import TEXT_ENCODER_VAR, PretrainedTextEncoder, TinyTextEncoder, check_prompts
from tinyldm.unet import UNet

__all__ = ["LatentDiffusion", "check_parts"]
TextEncoder = TinyTextEncoder | PretrainedTextEncoder


def check_parts(autoencoder: AutoencoderKL, unet: UNet, text_encoder: TextEncoder | None, image_size: int) -> None:
    """Raise ValueError, naming the values and the fix, unless the parts of a latent diffusion model fit together.

    The UNet must read and predict the autoencoder's latent channels, the image size must be a multiple of the
    autoencoder's factor f and the latent side a multiple of the UNet's down-sampling, and the UNet's
    ``context_dim`` must be the text encoder's width (or both absent, for an unconditional model).
    """
    c = autoencoder.config.latent_channels
    for name in ("in_channels", "out_channels"):
        if getattr(unet.config, name) != c:
            raise ValueError(f"the UNet has {name}={getattr(unet.config, name)} but the autoencoder's latents have "
                             f"{c} channels (AutoencoderConfig.latent_channels); build the UNet with "
                             f"UNetConfig(in_channels={c}, out_channels={c})")
    f = autoencoder.downsampling_factor
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TypeError(f"image size {image_size!r} is a {type(image_size).__name__}, not a whole number of "
                        f"pixels: pass an int that is a multiple of the autoencoder's factor f = {f}, e.g. 32")
    autoencoder.config.check_image_size(image_size)
    side, k = image_size // f, 2 ** unet.config.num_downsamples
    if side % k:
        raise ValueError(f"the latents are {side}x{side} (image size {image_size} / f = {f}), not a multiple of {k}: "
                         f"the UNet halves the resolution {unet.config.num_downsamples} times; give the UNet fewer "
                         f"levels (channel_mults) or use an image size that is a multiple of {f * k}")
    dim = unet.config.context_dim
    if text_encoder is None and dim is not None:
        raise ValueError(f"the UNet reads a text context (UNetConfig.context_dim={dim}) but there is no text "
                         f"encoder; pass a text encoder of width {dim}, or build the UNet with context_dim=None "
                         "for unconditional latent diffusion")
    if text_encoder is not None and dim is None:
        raise ValueError(f"a text encoder (width {text_encoder.context_dim}) was given but the UNet has no "
                         f"cross-attention (UNetConfig.context_dim=None); build it with "
                         f"UNetConfig(context_dim={text_encoder.context_dim}), or drop the text encoder")
    if text_encoder is not None and text_encoder.context_dim != dim:
        raise ValueError(f"the UNet's context_dim is {dim} but the text encoder's tokens are "
                         f"{text_encoder.context_dim} wide; build the UNet with "
                         f"UNetConfig(context_dim={text_encoder.context_dim})")


class LatentDiffusion(nn.Module):
    """A frozen autoencoder, a UNet on its scaled latents and an optional text encoder (Rombach et al. 2022).

    Args:
        autoencoder: the trained autoencoder; frozen here (no gradients, always in eval mode).
        unet: the noise predictor on latents (in/out channels = the latent channels; ``context_dim`` = the text
            encoder's width, or None without one).
        schedule: the noise schedule the UNet is (or will be) trained with.
        text_encoder: a ``TinyTextEncoder`` (trained with the UNet), a frozen ``PretrainedTextEncoder``, or None.
        image_size: the side of the images in pixels, a multiple of the autoencoder's factor f.
    """

    def __init__(self, autoencoder: AutoencoderKL, unet: UNet, schedule: NoiseSchedule,
                 text_encoder: TextEncoder | None = None, image_size: int = 32):
        super().__init__()
        check_parts(autoencoder, unet, text_encoder, image_size)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.unet = unet
        self.text_encoder = text_encoder
        self.schedule = schedule
        self.image_size = image_size

    def train(self, mode: bool = True) -> LatentDiffusion:
        """Set train or eval mode; the frozen autoencoder stays in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one image's latents: the autoencoder's channels at image_size / f."""
        side = self.image_size // self.autoencoder.downsampling_factor
        return self.autoencoder.config.latent_channels, side, side

    @property
    def device(self) -> torch.device:
        """Where the UNet's weights are, and so where sampling runs."""
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def encode_images(self, images: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """z0 = scale_factor * z with z the mean of q(z|x) (or a sample): what the UNet learns to denoise.

        Args:
            images: (B, 3, image_size, image_size) in [-1, 1].
        Returns:
            (B, C, h, w) scaled latents.
        """
        return self.autoencoder.latents(images.to(self.device), sample=sample, generator=generator)

    @torch.no_grad()
    def decode_latents(self, z0: Tensor) -> Tensor:
        """Images from scaled latents, clamped to the image range: (B, C, h, w) -> (B, 3, H, W) in [-1, 1]."""
        return self.autoencoder.decode_latents(z0).clamp(-1, 1)

    def encode_prompts(self, prompts: Sequence[str], allow_empty: bool = False) -> tuple[Tensor, Tensor]:
        """The text context tau(y) of the prompts (Eq. 3): (context (B, L, D), mask (B, L)); see ``tinyldm.text``."""
        if self.text_encoder is None:
            raise ValueError("this latent diffusion model is unconditional (it has no text encoder): it cannot read "
                             "prompts; sample it with prompts=None")
        return self.text_encoder.encode(prompts, allow_empty=allow_empty)

    def training_loss(self, z0: Tensor, prompts: Sequence[str] | None = None, p_uncond: float = 0.0,
                      generator: torch.Generator | None = None, caption_generator: torch.Generator | None = None,
                      t: Tensor | None = None, eps: Tensor | None = None) -> Tensor:
        """The loss of one training step on latents (Rombach et al. 2022, Eq. 2; with text, Eq. 3), with
        classifier-free guidance's caption dropout (Ho & Salimans 2022, Algorithm 1).

        ``tinyldm train ldm`` trains through this very function: its loop (``tinyldm.training.diffusion_loop``)
        draws a batch of cached latents, t, eps and the caption dropout's coins, and calls it.

        Args:
            z0: (B, C, h, w) scaled latents (``encode_images``, or a latent cache).
            prompts: B captions for a text-conditioned model; None for an unconditional one.
            p_uncond: the probability of replacing a caption by the empty one.
            generator: source of t and eps when they are not given (on z0's device).
            caption_generator: source of the caption dropout's coin flips (on the CPU).
            t: (B,) int64 steps; drawn uniformly when None.
            eps: (B, C, h, w) standard normal noise; drawn when None.
        Returns:
            scalar || eps - eps_theta(z_t, t, tau(y)) ||^2; gradients reach the UNet and a trainable text encoder.
        """
        conditioning = None
        if self.text_encoder is not None or prompts is not None:
            prompts = check_prompts(prompts if prompts is not None else [], allow_empty=True)
            if len(prompts) != z0.shape[0]:
                raise ValueError(f"got {len(prompts)} prompts for {z0.shape[0]} latents; pass one caption per image")
            context, mask = self.encode_prompts(drop_captions(prompts, p_uncond, caption_generator),
                                                allow_empty=True)
            conditioning = {"context": context, "context_mask": mask}
        return diffusion_loss(self.unet, z0, self.schedule, generator=generator, t=t, eps=eps,
                              conditioning=conditioning)

    def denoiser(self, prompts: Sequence[str] | None = None, num_images_per_prompt: int = 1,
                 guidance_scale: float = 3.0) -> tuple[Callable[..., Tensor], int]:
        """The noise predictor the samplers call, ``model(z_t, t) -> eps_pred``, and the batch size it expects.

        For a text-conditioned model this is the UNet under classifier-free guidance for the prompts, each repeated
        ``num_images_per_prompt`` times (Ho & Salimans 2022, Eq. 6); for an unconditional one the UNet itself, and
        the batch is ``num_images_per_prompt``. ``sample`` calls this; so does DDIM inversion
        (``tinyldm.inversion``), which must run the very model the sampler runs.

        Returns:
            (model taking z_t (B, C, h, w) and t (B,) and returning eps_pred (B, C, h, w), B).
        """
        n = num_images_per_prompt
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_images_per_prompt must be a positive int, got {n!r}")
        if self.text_encoder is None:
            if prompts is not None:
                self.encode_prompts(prompts)  # raises: this model reads no prompts
            return self.unet, n
        if prompts is None:
            raise ValueError("this model is text-conditioned: pass prompts, e.g. "
                             "['a large red circle at the top left']")
        prompts = [p for p in check_prompts(prompts) for _ in range(n)]
        context, mask = self.encode_prompts(prompts)
        null, null_mask = self.text_encoder.encode_null(1)
        return ClassifierFreeGuidance(self.unet, context, null, guidance_scale, mask, null_mask), len(prompts)

    @torch.no_grad()
    def sample(self, prompts: Sequence[str] | None = None, num_images_per_prompt: int = 1, steps: int = 50,
               sampler: str = "ddim", eta: float = 0.0, guidance_scale: float = 3.0,
               generator: torch.Generator | None = None, callback: Callable[[dict[str, Any]], None] | None = None,
               progress: bool = True, xT: Tensor | None = None, t_start: int | None = None,
               after_step: Callable[[dict[str, Any]], Tensor] | None = None) -> Tensor:
        """Draw latents with the reverse process and decode them (Rombach et al. 2022, Sec. 3.2 and 3.3).

        Args:
            prompts: one prompt per group of images; None for an unconditional model.
            num_images_per_prompt: images per prompt (without prompts: the number of images).
            steps: network evaluations, in [1, T].
            sampler: "ddim" (Song et al. 2021; deterministic with eta = 0) or "ddpm" (ancestral: all T steps of
                Ho et al. 2020, Algorithm 2 when steps >= T, otherwise DDIM with eta = 1).
            eta: DDIM's noise scale (ignored by "ddpm").
            guidance_scale: classifier-free guidance scale s (Ho & Salimans 2022, Eq. 6 with s = 1 + w): 1 is the
                plain conditional model, larger follows the prompt more closely; ignored without prompts.
            generator: source of z_T and the steps' noise (on the model's device).
            callback: called after every step with the sampler's dict (latents ``xt``, ``x0_pred`` ...).
            progress: show a progress bar.
            xT: (B, C, h, w) starting latents instead of drawn ones (with ``t_start``: the latents at that step).
            t_start: start part-way, at this step index in [0, T-1], from ``xT``: the sampler runs the indices of
                its ``steps``-step sequence at or below it (SDEdit, ``tinyldm.img2img``); None is plain sampling.
            after_step: called after every step with the sampler's dict; returns the (B, C, h, w) latents to use as
                x_prev (blended inpainting, ``tinyldm.inpainting``); see ``tinyldm.sampling.ddpm_sample``.
        Returns:
            (B, 3, image_size, image_size) images in [-1, 1], B = len(prompts) * num_images_per_prompt; prompt
            i's images are rows i * num_images_per_prompt onwards.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        model, batch = self.denoiser(prompts, num_images_per_prompt, guidance_scale)
        self.eval()
        shape = (batch, *self.latent_shape)
        # No clipping of x0 predictions: latents are not confined to [-1, 1] the way pixels are.
        z0 = sample(model, shape, self.schedule, sampler, steps, eta, generator, callback, xT=xT, progress=progress,
                    t_start=t_start, after_step=after_step)
        return self.decode_latents(z0)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the whole pipeline into one folder (see the module docstring); returns the folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.autoencoder.save_pretrained(directory / "autoencoder")
        self.unet.save_pretrained(directory / "unet")
        text: dict[str, Any] | None = None
        if isinstance(self.text_encoder, TinyTextEncoder):
            self.text_encoder.save_pretrained(directory / "text_encoder")
            # The encoder rebuilds its tokenizer from the vocabulary in its config; this copy is for other tools.
            self.text_encoder.tokenizer.save_pretrained(directory / "text_encoder" / "tokenizer")
            text = {"class": "TinyTextEncoder", "path": "text_encoder"}
        elif isinstance(self.text_encoder, PretrainedTextEncoder):
            text = {"class": "PretrainedTextEncoder", "name": self.text_encoder.name,
                    "max_length": self.text_encoder.max_length, "context_dim": self.text_encoder.context_dim}
        elif self.text_encoder is not None:
            raise TypeError(f"cannot save a {type(self.text_encoder).__name__} text encoder; use TinyTextEncoder or "
                            "PretrainedTextEncoder")
        save_schedule(directory, self.schedule, "eps", self.image_size)
        index = {"_class_name": type(self).__name__, "autoencoder": "autoencoder", "unet": "unet",
                 "text_encoder": text, "schedule": "schedule.json", "image_size": self.image_size,
                 "latent_shape": list(self.latent_shape)}
        atomic_write(directory / CONFIG_NAME, lambda f: f.write(json.dumps(index, indent=2).encode() + b"\n"))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike,
                        text_encoder: TextEncoder | None = None) -> LatentDiffusion:
        """Load a folder written by ``save_pretrained``, checking that its parts fit together; weights on the CPU.

        Args:
            directory: the pipeline folder.
            text_encoder: use this encoder instead of the saved one (e.g. a local copy of a pretrained encoder).
        Returns:
            The pipeline in eval mode.
        """
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no latent diffusion folder at {directory}: it has no {CONFIG_NAME}; pass the "
                                    "folder that save_pretrained (tinyldm train ldm, inpaint or sr) wrote")
        index = read_json_file(path)
        if index.get("_class_name") != cls.__name__:
            raise ValueError(cls._other_class_message(path, index.get("_class_name")))
        autoencoder = AutoencoderKL.from_pretrained(_part_folder(directory, "autoencoder", index.get("autoencoder")))
        unet = UNet.from_pretrained(_part_folder(directory, "unet", index.get("unet")))
        schedule, prediction, image_size = load_schedule(directory)
        if prediction != "eps":
            raise ValueError(f"{directory} holds a {prediction!r}-prediction UNet; LatentDiffusion samples "
                             "eps-prediction models")
        text = index.get("text_encoder")
        if text is not None and not isinstance(text, dict):
            raise ValueError(f"{path}: text_encoder must be null or an object such as "
                             f'{{"class": "TinyTextEncoder", "path": "text_encoder"}}, got {text!r}; save the '
                             "pipeline again with LatentDiffusion.save_pretrained")
        if text_encoder is None and text is not None:
            text_encoder = _load_text_encoder(directory, text)
        try:
            return cls._from_parts(index, autoencoder, unet, schedule, text_encoder, image_size).eval()
        except ValueError as error:
            raise ValueError(f"the parts in {directory} do not fit together: {error}") from error

    @classmethod
    def _other_class_message(cls, path: Path, found: str | None) -> str:
        """What ``from_pretrained`` says when the folder holds another class of model."""
        return (f"{path} describes a {found}, not a {cls.__name__}: give the folder of a pipeline (what tinyldm "
                f"train ldm writes; in Python, load this one with {found}.from_pretrained)")

    @classmethod
    def _from_parts(cls, index: dict[str, Any], autoencoder: AutoencoderKL, unet: UNet, schedule: NoiseSchedule,
                    text_encoder: TextEncoder | None, image_size: int) -> LatentDiffusion:
        """The model from its loaded parts; ``index`` is its config.json, for what a subclass records there."""
        return cls(autoencoder, unet, schedule, text_encoder, image_size)


def _part_folder(directory: Path, key: str, value: Any) -> Path:
    """The folder of one part named in a pipeline's config.json, refused unless it lies inside the pipeline's folder.

    A pipeline is one self-contained folder: it is copied, shared and checked out as a whole, so a part outside it
    (an absolute path, or one that climbs out with "..") would load whatever happens to lie there on this machine.
    """
    path, written = directory / CONFIG_NAME, key.split(".")[0]  # save_pretrained names each part's folder its key
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: {key} must name a sub-folder of {directory}, got {value!r}; write "
                         f'"{written}" there, the folder save_pretrained writes')
    relative = PurePosixPath(value.replace("\\", "/"))
    if relative.is_absolute() or PureWindowsPath(value).anchor or ".." in relative.parts:
        raise ValueError(f"{path}: {key} points at {value!r}, outside the pipeline folder {directory}; a pipeline "
                         f"loads its parts only from its own folder: copy the part into {directory / written} and "
                         f'write "{written}" there')
    return directory / relative


def _load_text_encoder(directory: Path, text: dict[str, Any]) -> TextEncoder:
    if text.get("class") == "TinyTextEncoder":
        return TinyTextEncoder.from_pretrained(_part_folder(directory, "text_encoder.path", text.get("path")))
    if text.get("class") == "PretrainedTextEncoder":
        # Offline, the local copy named by the environment wins over the name saved on another machine.
        name = None if os.environ.get(TEXT_ENCODER_VAR) else text["name"]
        encoder = PretrainedTextEncoder(name, text["max_length"])
        if encoder.context_dim != text["context_dim"]:
            raise ValueError(f"the text encoder {encoder.name!r} is {encoder.context_dim} wide but {directory} was "
                             f"trained with {text['name']!r}, {text['context_dim']} wide; point "
                             f"{TEXT_ENCODER_VAR} at a copy of {text['name']!r}")
        return encoder
    raise ValueError(f"{directory / CONFIG_NAME} names an unknown text encoder {text!r}; expected "
                     "TinyTextEncoder or PretrainedTextEncoder")
