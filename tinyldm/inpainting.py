"""Inpainting without training: blended latent diffusion (Avrahami et al. 2023), on any text-to-image model.

A text-to-image model never learnt to fill holes, but its reverse process can be steered to: after every step, the
latents outside the hole are replaced by the original image's latents noised to the step just reached, so the
model only ever draws the hole, at each step in the context of the known surroundings at the right noise level
(Avrahami et al. 2023, Algorithm 1; in pixel space, Avrahami et al. 2022 and RePaint, Lugmayr et al. 2022):

    x_prev <- m * x_prev + (1 - m) * q_sample(z0, t_prev, eps'),    eps' ~ N(0, I) fresh at every step,

with m the mask at latent resolution (1 = generate) and, at the last step (t_prev = -1), z0 itself. The samplers'
``after_step`` hook does the replacing (``tinyldm.sampling``), so any sampler works; ancestral "ddpm" is the default
because its fresh noise lets the hole and its surroundings settle into each other.

The mask is given in pixels, 1 (white) in the hole. A latent cell summarises an f x f patch of pixels, so the hole
becomes a latent mask by max-pooling over those patches (``downsample_mask``): every cell that touches the hole is
regenerated. Keeping such a cell would keep the original content of the hole's edge, which the decoder then spreads
back into the hole. Pixels outside the hole come back changed by the decoder anyway (its reconstruction is not
exact, and cells next to the hole are drawn anew), so the result is composited in pixel space at the end,
m_pixels * decoded + (1 - m_pixels) * image: every pixel outside the mask is the input's, exactly.

Masks must be black and white: values exactly 0 or 1 (grey edges from a paint program are refused rather than
guessed at; threshold them yourself, ``(mask > 0.5).float()``, which is what ``tinyldm inpaint --mask`` does).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tinyldm.img2img import check_edit_images
from tinyldm.ldm import LatentDiffusion
from tinyldm.reverse_step import ddim_step
from tinyldm.schedule import q_sample

__all__ = ["box_mask", "check_mask", "downsample_mask", "inpaint"]


def box_mask(height: int, width: int, box: tuple[int, int, int, int]) -> Tensor:
    """A rectangular hole: 1 on pixels x0 <= x < x1, y0 <= y < y1 (end-exclusive, x to the right, y down), else 0.

    Args:
        height, width: the image's size in pixels.
        box: (x0, y0, x1, y1) in pixels.
    Returns:
        (height, width) float mask.
    """
    if len(box) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
        raise ValueError(f"box must be four whole numbers (x0, y0, x1, y1) in pixels, got {box!r}")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {box} is not a non-empty box inside the {width}x{height} image: need 0 <= x0 < x1 <= "
                         f"{width} and 0 <= y0 < y1 <= {height} (end-exclusive, x to the right, y down)")
    mask = torch.zeros(height, width)
    mask[y0:y1, x0:x1] = 1.0
    return mask


def check_mask(mask: Tensor, images: Tensor) -> Tensor:
    """The mask as a (B, 1, H, W) float tensor on the images' device, after checking it.

    Args:
        mask: (H, W), (1, 1, H, W) or (B, 1, H, W), 1 in the hole and 0 where the image is kept, exactly (bool or
            float); one (H, W) mask serves every image.
        images: (B, 3, H, W) the images it masks.
    Returns:
        (B, 1, H, W) float mask in {0, 1}.
    Raises:
        ValueError: a size other than the images', grey values, or a mask with no hole.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor (H, W) or (B, 1, H, W), got {type(mask).__name__}")
    B, _, H, W = images.shape
    if mask.ndim == 2:
        mask = mask[None, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, B) or tuple(mask.shape[2:]) != (H, W):
        raise ValueError(f"mask must be ({H}, {W}) or ({B}, 1, {H}, {W}), the images' size, got "
                         f"{tuple(mask.shape)}; draw it at the image's size (box_mask({H}, {W}, box))")
    mask = mask.to(device=images.device, dtype=images.dtype)
    if not ((mask == 0) | (mask == 1)).all():
        grey = mask[(mask != 0) & (mask != 1)]
        raise ValueError(f"mask must be black and white, 1 in the hole and 0 elsewhere, but it holds "
                         f"{grey.numel()} other values (e.g. {grey[0].item():.3g}); threshold it: (mask > 0.5).float()")
    if not mask.flatten(1).any(1).all():
        raise ValueError("the mask is empty (no pixel is 1) for at least one image: there is nothing to inpaint; "
                         "mark the hole with 1 (white)")
    return mask.expand(B, 1, H, W)


def downsample_mask(mask: Tensor, factor: int) -> Tensor:
    """A pixel mask at latent resolution by max-pooling: a latent cell is in the hole when any of its f x f pixels is.

    Args:
        mask: (B, 1, H, W) in {0, 1}, H and W multiples of f.
        factor: the autoencoder's down-sampling factor f.
    Returns:
        (B, 1, H / f, W / f) in {0, 1}.
    """
    if not isinstance(mask, Tensor) or mask.ndim != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a (B, 1, H, W) tensor, 1 in the hole, got {shape}")
    return F.max_pool2d(mask.float(), factor)


@torch.no_grad()
def inpaint(ldm: LatentDiffusion, images: Tensor, mask: Tensor, prompts: Sequence[str] | None, steps: int = 50,
            sampler: str = "ddpm", eta: float = 0.0, guidance_scale: float = 3.0,
            generator: torch.Generator | None = None, progress: bool = True, resample: int = 1) -> Tensor:
    """Fill the masked part of images after a prompt, keeping the rest exactly (blended latent diffusion, Avrahami
    et al. 2023, Algorithm 1; see the module docstring).

    With ``resample = r > 1``, every step is taken r times, RePaint's resampling (Lugmayr et al. 2022, Algorithm 1
    with jump length 1): the blended z_{t'} goes back to step t by the forward process,
    z_t = sqrt(alpha_bar_t / alpha_bar_t') z_{t'} + sqrt(1 - alpha_bar_t / alpha_bar_t') eps, and the step is taken
    again (an ancestral step, ``ddim_step`` with eta 1) and blended again, so that the hole and the known part can
    settle into each other. It costs r network calls per step (the last step is not repeated).

    Args:
        ldm: the pipeline; work runs on its device.
        images: (B, 3, S, S) in [-1, 1], S = ``ldm.image_size``.
        mask: (S, S) or (B, 1, S, S), 1 (white) in the hole, 0 where the image is kept; see ``check_mask``.
        prompts: B prompts, one per image, saying what the whole image should show; None for an unconditional
            model.
        steps, sampler, eta, guidance_scale: as in ``LatentDiffusion.sample``.
        generator: source of z_T, the steps' noise and the known region's noise (on the model's device).
        progress: show a progress bar.
        resample: r >= 1, how often each step is taken (1: plain blending).
    Returns:
        (B, 3, S, S) images in [-1, 1], equal to ``images`` wherever the mask is 0.
    """
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be a whole number >= 1 (1: blend once per step; RePaint uses 10), got "
                         f"{resample!r}")
    check_edit_images(images, ldm)
    images = images.to(ldm.device)
    mask = check_mask(mask, images)  # (B, 1, S, S)
    if prompts is not None and len(prompts) != images.shape[0]:
        raise ValueError(f"got {len(prompts)} prompts for {images.shape[0]} images; pass one prompt per image")
    z0 = ldm.encode_images(images)  # (B, C, h, w)
    m = downsample_mask(mask, ldm.autoencoder.downsampling_factor)  # (B, 1, h, w)

    def blend(x_prev: Tensor, step_prev: int) -> Tensor:
        if step_prev < 0:
            known = z0
        else:
            t_prev = torch.full((z0.shape[0],), step_prev, dtype=torch.long, device=z0.device)
            noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
            known = q_sample(z0, t_prev, ldm.schedule, noise)
        # Avrahami et al. 2023, Algorithm 1: z_{t-1} = z_fg * m + z_bg * (1 - m)
        return m * x_prev + (1 - m) * known

    model = ldm.denoiser(prompts, 1, guidance_scale)[0] if resample > 1 else None  # the model sample() runs

    def keep_known(info: dict[str, Any]) -> Tensor:
        x = blend(info["x_prev"], info["t_prev"])
        if info["t_prev"] < 0:
            return x
        t = torch.full((z0.shape[0],), info["t"], dtype=torch.long, device=z0.device)
        t_prev = torch.full_like(t, info["t_prev"])
        ratio = ldm.schedule.alpha_bars[info["t"]] / ldm.schedule.alpha_bars[info["t_prev"]]
        for _ in range(resample - 1):
            # Lugmayr et al. 2022, Algorithm 1: back to t by q(z_t | z_t'), then the step again, then the blend
            noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
            zt = ratio.sqrt() * x + (1 - ratio).sqrt() * noise
            noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
            x = blend(ddim_step(model(zt, t), t, t_prev, zt, ldm.schedule, eta=1.0, noise=noise), info["t_prev"])
        return x

    decoded = ldm.sample(prompts, 1, steps, sampler, eta, guidance_scale, generator, progress=progress,
                         after_step=keep_known)
    # the pixels outside the hole are the input's, exactly
    return mask * decoded + (1 - mask) * images
