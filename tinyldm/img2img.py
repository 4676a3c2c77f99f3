"""Image to image with SDEdit (Meng et al. 2022): noise an image part of the way, then let the model denoise it.

SDEdit needs no training and no new network. The forward process blurs an image's details first and its layout
last, so noising the image's latents to an intermediate step and running the reverse process from there keeps the
layout (where the colours are) and redraws the details in the way the prompt and the model's data prefer
(Meng et al. 2022, Sec. 3; their t0 is our strength s). Small s keeps the picture, s = 1 forgets it.

How the strength picks the step (the same rule as diffusers' img2img, rounded instead of truncated): the sampler's
``steps``-step sequence is ``ddim_timesteps(T, steps)``, from T-1 down; strength s runs its last
n = max(1, round(s * steps)) indices, so the latents are noised to t_start = sequence[steps - n] with ``q_sample``
and the sampler starts there (``t_start`` of ``tinyldm.sampling.sample``). This costs n network calls. At s = 1 the
start is T-1, the noisiest step, and the latents are the noise itself, not q_sample(z0, T-1, eps): plain generation
also treats x_{T-1} as pure noise, so s = 1 *is* plain generation from the same noise, exactly, and the image is
forgotten (at T-1 the scaled-linear schedule keeps sqrt(alpha_bar) = 0.07 of it, which the model never learnt to
use).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from tinyldm.ldm import LatentDiffusion
from tinyldm.reverse_step import ddim_timesteps
from tinyldm.schedule import q_sample

__all__ = ["strength_start", "check_edit_images", "img2img"]


def strength_start(num_steps: int, steps: int, strength: float) -> tuple[int, int]:
    """The step index SDEdit starts from for a strength, and how many network calls the rest costs.

    Args:
        num_steps: T, the schedule's number of steps.
        steps: the sampler's steps for a whole run from noise, in [1, T].
        strength: s in (0, 1]: the share of the ``steps``-step sequence to run.
    Returns:
        (t_start, n): the index to noise to, ``ddim_timesteps(T, steps)[steps - n]``, and n = max(1, round(s *
        steps)) network calls. For ``sampler="ddpm"`` with steps >= T the full chain runs t_start + 1 steps.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"strength must lie in (0, 1], got {strength!r}: 0.3 keeps the picture and changes its "
                         "details, 1 forgets it (plain generation)")
    timesteps = ddim_timesteps(num_steps, steps)
    n = min(steps, max(1, round(strength * steps)))
    return timesteps[steps - n], n


def check_edit_images(images: Tensor, ldm: LatentDiffusion, name: str = "images") -> None:
    """Raise, naming the shape and the fix, unless ``images`` is a (B, 3, S, S) float batch at the model's size S."""
    size = ldm.image_size
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (B, 3, {size}, {size}) in [-1, 1], got "
                        f"{type(images).__name__ if not isinstance(images, Tensor) else images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        hint = "; add a batch dimension with x[None]" if images.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (B, 3, {size}, {size}), the size this model draws, got "
                         f"{tuple(images.shape)}{hint}; resize the pictures to {size}x{size} first")


@torch.no_grad()
def img2img(ldm: LatentDiffusion, images: Tensor, prompts: Sequence[str] | None, strength: float = 0.6,
            steps: int = 50, sampler: str = "ddim", eta: float = 0.0, guidance_scale: float = 3.0,
            generator: torch.Generator | None = None, progress: bool = True) -> Tensor:
    """Redraw images after a prompt with SDEdit (Meng et al. 2022, Algorithm 1, on latents).

    z0 = E(x) (the mean of q(z|x), scaled); z_{t_start} = sqrt(alpha_bar) z0 + sqrt(1 - alpha_bar) eps (Ho et al.
    2020, Eq. 4) with t_start from ``strength_start``; then the reverse process from t_start with classifier-free
    guidance, and the decoder. Strength 1 is ``ldm.sample(prompts, steps=steps, ..., generator=generator)``
    exactly: the same generator draws eps first, as sampling draws z_T.

    Args:
        ldm: the pipeline; work runs on its device.
        images: (B, 3, S, S) in [-1, 1], S = ``ldm.image_size``.
        prompts: B prompts, one per image; None for an unconditional model.
        strength: s in (0, 1], how far to noise (see the module docstring).
        steps, sampler, eta, guidance_scale: as in ``LatentDiffusion.sample``; ``steps`` is for a whole run from
            noise, of which strength s runs about s * steps.
        generator: source of eps and of the sampler's noise (on the model's device).
        progress: show a progress bar.
    Returns:
        (B, 3, S, S) images in [-1, 1].
    """
    check_edit_images(images, ldm)
    t_start, _ = strength_start(ldm.schedule.num_steps, steps, strength)
    if prompts is not None and len(prompts) != images.shape[0]:
        raise ValueError(f"got {len(prompts)} prompts for {images.shape[0]} images; pass one prompt per image")
    eps = torch.randn((images.shape[0], *ldm.latent_shape), generator=generator, device=ldm.device)  # (B, C, h, w)
    if t_start == ldm.schedule.num_steps - 1:
        zt = eps  # strength 1: plain generation's z_T (see the module docstring)
    else:
        z0 = ldm.encode_images(images)  # (B, C, h, w)
        t = torch.full((images.shape[0],), t_start, dtype=torch.long, device=ldm.device)
        zt = q_sample(z0, t, ldm.schedule, eps)
    return ldm.sample(prompts, 1, steps, sampler, eta, guidance_scale, generator, progress=progress, xT=zt,
                      t_start=t_start)
