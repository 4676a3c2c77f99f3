"""The editing jobs behind ``tinyldm img2img``, ``tinyldm inpaint`` and ``tinyldm upscale``: read a picture (and a
mask), edit it with a text-to-image model and no training (``tinyldm.img2img``, ``tinyldm.inpainting``) or with a
model fine-tuned for the task (``tinyldm.concat_conditioning``), and write PNGs and a side-by-side figure (input |
start, hole or bicubic | outputs) with ``tinyldm.viz.images``, without matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from tinyldm.concat_conditioning import ConcatConditionedLDM
from tinyldm.img2img import img2img, strength_start
from tinyldm.inpainting import box_mask, inpaint
from tinyldm.jobs.common import check_finite_images
from tinyldm.ldm import LatentDiffusion
from tinyldm.schedule import q_sample
from tinyldm.viz.images import save_grid

__all__ = ["read_picture", "read_mask", "run_img2img", "run_inpaint", "run_upscale"]


def _open(path: Path, what: str) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at {path}; give the path of a PNG or JPEG file") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not a picture PIL can read; give a PNG or JPEG {what}") from None


def _check_size(picture: Image.Image, path: Path, size: int, what: str, why: str | None = None) -> None:
    if picture.size != (size, size):
        why = why or f"the model draws {size}x{size} images; resize it to {size}x{size} first"
        raise ValueError(f"{what} {path} is {picture.width}x{picture.height} pixels but {why}")


def read_picture(path: str | Path, size: int, why: str | None = None) -> Tensor:
    """A picture file as a (1, 3, size, size) tensor in [-1, 1]; a picture of another size is refused (``why``: the
    reason the error gives, after "but")."""
    path = Path(path)
    with _open(path, "image") as picture:
        _check_size(picture, path, size, "the image", why)
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)  # (S, S, 3) in [0, 255]
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1


def read_mask(path: str | Path, size: int) -> Tensor:
    """A mask file as a (size, size) tensor: white (grey level above half) is the hole, 1; the rest 0."""
    path = Path(path)
    with _open(path, "mask") as picture:
        _check_size(picture, path, size, "the mask")
        grey = np.asarray(picture.convert("L"), dtype=np.float32) / 255  # (S, S) in [0, 1]
    return (torch.from_numpy(grey) > 0.5).float()


def _write(out: Path, stem: str, inputs: Tensor, middle: Tensor, outputs: Tensor, kind: str) -> dict[str, Path]:
    """One PNG per output and the figure input | middle | outputs, in one row; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{stem}_{kind}_*.png"):
        old.unlink()
    written = {f"output {k}": save_grid(image[None], out / f"{stem}_{kind}_{k}.png")
               for k, image in enumerate(outputs)}
    row = torch.cat([inputs, middle, outputs])  # (2 + N, 3, S, S)
    written["figure"] = save_grid(row, out / f"{stem}_{kind}.png", nrow=row.shape[0], scale=4)
    return written


@torch.no_grad()
def run_img2img(ldm: LatentDiffusion, image: str | Path, prompt: str | None, strength: float, out: str | Path,
                num_images: int = 1, seed: int = 0, steps: int = 50, sampler: str = "ddpm",
                guidance_scale: float = 3.0) -> dict[str, Path]:
    """SDEdit one picture ``num_images`` times after a prompt; the figure's middle panel is the noised latents the
    sampler starts from, decoded (the first image's noise)."""
    picture = read_picture(image, ldm.image_size).to(ldm.device)
    images = picture.expand(num_images, -1, -1, -1)
    prompts = None if prompt is None else [prompt] * num_images
    generator = torch.Generator(ldm.device).manual_seed(seed)
    outputs = img2img(ldm, images, prompts, strength, steps, sampler, 0.0, guidance_scale, generator).cpu()
    check_finite_images(outputs, ldm, f"strength {strength:g}, {sampler} with {steps} steps")
    t_start, _ = strength_start(ldm.schedule.num_steps, steps, strength)
    eps = torch.randn((1, *ldm.latent_shape), generator=torch.Generator(ldm.device).manual_seed(seed),
                      device=ldm.device)
    start = eps if t_start == ldm.schedule.num_steps - 1 else q_sample(
        ldm.encode_images(picture), torch.full((1,), t_start, device=ldm.device), ldm.schedule, eps)
    middle = ldm.decode_latents(start).cpu()
    return _write(Path(out), Path(image).stem, picture.cpu(), middle, outputs, "img2img")


@torch.no_grad()
def run_inpaint(ldm: LatentDiffusion, image: str | Path, prompt: str | None, out: str | Path,
                mask: str | Path | None = None, box: tuple[int, int, int, int] | None = None, method: str = "blend",
                num_images: int = 1, seed: int = 0, steps: int = 50, sampler: str = "ddpm",
                guidance_scale: float = 3.0, resample: int = 1) -> dict[str, Path]:
    """Inpaint one picture ``num_images`` times after a prompt, the hole given by a mask file or a box; the figure's
    middle panel is the input with the hole painted white. ``method="blend"`` works with any text-to-image model
    (``tinyldm.inpainting``, with RePaint's ``resample``); ``method="trained"`` needs a ``ConcatConditionedLDM`` of kind
    "inpaint"."""
    if method not in ("blend", "trained"):
        raise ValueError(f"method must be 'blend' (blended latent diffusion) or 'trained', got {method!r}")
    if method == "trained" and not (isinstance(ldm, ConcatConditionedLDM) and ldm.kind == "inpaint"):
        raise ValueError("--method trained needs a model with inpainting channels (a UNet that also reads the masked "
                         "image and the mask, trained with tinyldm train inpaint), such as the shipped "
                         "data/checkpoints/ldm-shapes-inpaint; this one is a "
                         f"{getattr(ldm, 'kind', 'text-to-image')} model without them. Use --method blend, which "
                         "inpaints with any text-to-image model")
    if method == "blend" and isinstance(ldm, ConcatConditionedLDM):
        raise ValueError(f"--method blend runs a text-to-image model; this is a {ldm.kind!r} model with extra input "
                         "channels: use --method trained, or give a text-to-image --checkpoint")
    if method == "trained" and resample != 1:
        raise ValueError(f"--resample {resample} is RePaint's resampling for --method blend; the trained model reads "
                         "the hole and takes each step once: leave --resample out")
    if (mask is None) == (box is None):
        raise ValueError("give the hole either as a mask file or as a box, not both and not neither")
    picture = read_picture(image, ldm.image_size).to(ldm.device)
    size = ldm.image_size
    hole = read_mask(mask, size) if mask is not None else box_mask(size, size, box)
    images = picture.expand(num_images, -1, -1, -1)
    prompts = None if prompt is None else [prompt] * num_images
    generator = torch.Generator(ldm.device).manual_seed(seed)
    if method == "trained":
        outputs = ldm.inpaint(images, hole, prompts, steps, sampler, 0.0, guidance_scale, generator).cpu()
    else:
        outputs = inpaint(ldm, images, hole, prompts, steps, sampler, 0.0, guidance_scale, generator,
                          resample=resample).cpu()
    check_finite_images(outputs, ldm, f"{sampler} with {steps} steps")
    middle = (picture.cpu() * (1 - hole) + hole).clamp(-1, 1)  # the hole in white
    return _write(Path(out), Path(image).stem, picture.cpu(), middle, outputs, "inpaint")


@torch.no_grad()
def run_upscale(model: ConcatConditionedLDM, image: str | Path, out: str | Path, num_images: int = 1, seed: int = 0,
                steps: int = 50, sampler: str = "ddpm") -> dict[str, Path]:
    """Upscale one low-resolution picture 4x ``num_images`` times with a super-resolution model; the figure shows
    the input enlarged with nearest neighbours, then bicubic interpolation, then the outputs."""
    if not (isinstance(model, ConcatConditionedLDM) and model.kind == "sr"):
        kind = getattr(model, "kind", "text-to-image")
        raise ValueError(f"upscale needs a super-resolution model (tinyldm train sr), such as the shipped "
                         f"data/checkpoints/ldm-shapes-sr; this one is a {kind} model")
    side = model.low_resolution
    size = model.image_size
    low = read_picture(image, side, f"this model upscales {side}x{side} pictures to {size}x{size}: give a "
                                    f"{side}x{side} picture (shrink a {size}x{size} one 4x)").to(model.device)
    generator = torch.Generator(model.device).manual_seed(seed)
    outputs = model.upscale(low.expand(num_images, -1, -1, -1), steps, sampler, 0.0, generator).cpu()
    check_finite_images(outputs, model, f"{sampler} with {steps} steps")
    nearest = F.interpolate(low.cpu(), size=size, mode="nearest")
    bicubic = F.interpolate(low.cpu(), size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
    return _write(Path(out), Path(image).stem, nearest, bicubic, outputs, "upscale")
