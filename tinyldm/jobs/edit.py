"""The editing jobs behind ``tinyldm img2img`` and ``tinyldm inpaint``: read a picture (and a mask), edit it with a
text-to-image model and no training (``tinyldm.img2img``, ``tinyldm.inpainting``), write PNGs and a side-by-side
figure (input | strength or mask | outputs) with ``tinyldm.viz.images``, without matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from tinyldm.img2img import img2img, strength_start
from tinyldm.inpainting import box_mask, inpaint
from tinyldm.jobs.common import check_finite_images
from tinyldm.ldm import LatentDiffusion
from tinyldm.schedule import q_sample
from tinyldm.viz.images import save_grid

__all__ = ["read_picture", "read_mask", "run_img2img", "run_inpaint"]


def _open(path: Path, what: str) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at {path}; give the path of a PNG or JPEG file") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not a picture PIL can read; give a PNG or JPEG {what}") from None


def _check_size(picture: Image.Image, path: Path, size: int, what: str) -> None:
    if picture.size != (size, size):
        raise ValueError(f"{what} {path} is {picture.width}x{picture.height} pixels but the model draws {size}x{size} "
                         f"images; resize it to {size}x{size} first")


def read_picture(path: str | Path, size: int) -> Tensor:
    """A picture file as a (1, 3, size, size) tensor in [-1, 1]; a picture of another size is refused."""
    path = Path(path)
    with _open(path, "image") as picture:
        _check_size(picture, path, size, "the image")
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
def run_inpaint(ldm: LatentDiffusion | None, image: str | Path, prompt: str | None, out: str | Path,
                mask: str | Path | None = None, box: tuple[int, int, int, int] | None = None, method: str = "blend",
                num_images: int = 1, seed: int = 0, steps: int = 50, sampler: str = "ddpm",
                guidance_scale: float = 3.0, checkpoint: str | Path | None = None) -> dict[str, Path]:
    """Inpaint one picture ``num_images`` times after a prompt, the hole given by a mask file or a box; the figure's
    middle panel is the input with the hole painted white. ``method="trained"`` (a model with inpainting channels)
    is refused, naming ``checkpoint``: this job inpaints by blending only (``ldm`` may then be None)."""
    if method not in ("blend", "trained"):
        raise ValueError(f"method must be 'blend' (blended latent diffusion) or 'trained', got {method!r}")
    if method == "trained":
        raise ValueError(f"--method trained needs a model with inpainting channels (a UNet that also reads the masked "
                         f"image and the mask, trained with tinyldm train inpaint): pass --checkpoint to one. "
                         f"{checkpoint or 'The default ldm-shapes'} is a text-to-image model without them; use "
                         "--method blend, which inpaints with any text-to-image model")
    if (mask is None) == (box is None):
        raise ValueError("give the hole either as a mask file or as a box, not both and not neither")
    picture = read_picture(image, ldm.image_size).to(ldm.device)
    size = ldm.image_size
    hole = read_mask(mask, size) if mask is not None else box_mask(size, size, box)
    images = picture.expand(num_images, -1, -1, -1)
    prompts = None if prompt is None else [prompt] * num_images
    generator = torch.Generator(ldm.device).manual_seed(seed)
    outputs = inpaint(ldm, images, hole, prompts, steps, sampler, 0.0, guidance_scale, generator).cpu()
    check_finite_images(outputs, ldm, f"{sampler} with {steps} steps")
    middle = (picture.cpu() * (1 - hole) + hole).clamp(-1, 1)  # the hole in white
    return _write(Path(out), Path(image).stem, picture.cpu(), middle, outputs, "inpaint")
