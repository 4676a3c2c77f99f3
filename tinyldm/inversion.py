"""DDIM inversion: run the deterministic sampler backwards, from an image's latents to the noise that draws it.

Deterministic DDIM (eta = 0) is a discretisation of an ODE (Song et al. 2021, Sec. 4.3, Eq. 14), and an ODE can be
integrated in either direction. Running the DDIM step from x_{t_prev} up to x_t along the same timesteps maps clean
latents z0 to a noise z_T that deterministic DDIM maps back to (nearly) z0 (Dhariwal & Nichol 2021, App. F; the
starting point of Mokady et al. 2023's null-text inversion). With the noise in hand, an image can be redrawn,
edited or interpolated with another image's noise (``slerp``), staying on the model's own samples.

The inverse step cannot evaluate the model at the point it is heading to, which it does not know yet; like
diffusers' ``DDIMInverseScheduler`` and Mokady et al. it evaluates eps_theta at the current latents x_{t_prev} and
the target step t (so the first step, from z0 itself, needs no model call at "step -1"):

    x_t = sqrt(alpha_bar_t) x0_pred + sqrt(1 - alpha_bar_t) eps,   x0_pred = (x_{t_prev} - sqrt(1 - alpha_bar_prev)
    eps) / sqrt(alpha_bar_prev),   eps = eps_theta(x_{t_prev}, t).

This is exact only where eps_theta barely changes between two neighbouring steps, so the reconstruction error
shrinks with more steps. Classifier-free guidance scales above 1 make it grow quickly (Mokady et al. 2023, Sec. 3):
invert with scale 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tinyldm.img2img import check_edit_images
from tinyldm.ldm import LatentDiffusion
from tinyldm.reverse_step import ddim_timesteps
from tinyldm.sampling import ddim_sample
from tinyldm.schedule import NoiseSchedule

__all__ = ["ddim_inversion_step", "ddim_invert", "Inversion", "invert_images", "slerp", "interpolate_images"]


def _alpha_bar(schedule: NoiseSchedule, step: int) -> float:
    """alpha_bar at an index in [-1, T), in float64; index -1 is the data (alpha_bar = 1)."""
    return 1.0 if step < 0 else schedule.alpha_bars[step].double().item()


def ddim_inversion_step(eps_pred: Tensor, t_prev: int, t: int, x_prev: Tensor, schedule: NoiseSchedule) -> Tensor:
    """One inverse DDIM step x_{t_prev} -> x_t, up the noise levels (Song et al. 2021, Eq. 12 with eta = 0, solved
    for x_t; Dhariwal & Nichol 2021, App. F).

    Args:
        eps_pred: (B, ...) the model's noise prediction, eps_theta(x_{t_prev}, t).
        t_prev, t: the current index in [-1, T) (-1 is x0) and the target index in (t_prev, T).
        x_prev: (B, ...) the current latents x_{t_prev}.
        schedule: the noise schedule.
    Returns:
        (B, ...) x_t.
    """
    if not -1 <= t_prev < t < schedule.num_steps:
        raise ValueError(f"an inverse step goes up the noise levels: need -1 <= t_prev < t < {schedule.num_steps}, "
                         f"got t_prev={t_prev}, t={t}")
    if eps_pred.shape != x_prev.shape:
        raise ValueError(f"eps_pred must be shaped like x_prev {tuple(x_prev.shape)}, got {tuple(eps_pred.shape)}")
    ab_prev, ab = _alpha_bar(schedule, t_prev), _alpha_bar(schedule, t)
    # Song et al. 2021, Eq. 12: the x0 the current point and eps imply ...
    x0_pred = (x_prev - math.sqrt(1 - ab_prev) * eps_pred) / math.sqrt(ab_prev)
    # ... moved to the noise level of step t along the same eps
    return math.sqrt(ab) * x0_pred + math.sqrt(1 - ab) * eps_pred


@torch.no_grad()
def ddim_invert(model: Callable[..., Tensor], x0: Tensor, schedule: NoiseSchedule, steps: int = 50, *,
                conditioning: dict[str, Any] | None = None,
                callback: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> Tensor:
    """Invert deterministic DDIM: the x_T from which ``ddim_sample(..., steps, eta=0, xT=x_T)`` returns about x0.

    Visits the indices of ``ddim_timesteps(T, steps)`` upwards, from x0 (index -1) to T - 1: the same sequence the
    sampler walks down, so inversion and reconstruction each cost ``steps`` model calls.

    Args:
        model: called as ``model(xt, t, **conditioning)`` with xt (B, ...) and t (B,) int64; returns eps_pred.
        x0: (B, ...) clean data (scaled latents for a latent diffusion model).
        schedule: the schedule the model was trained with.
        steps: model calls, in [1, T].
        conditioning: keyword arguments passed on to the model.
        callback: called after every step with ``i``, ``t_prev``, ``t`` (ints), ``x_prev`` (the input), ``eps_pred``
            and ``xt`` (the output), all (B, ...).
        progress: show a tqdm progress bar.
    Returns:
        (B, ...) x_T, the inverted noise.
    """
    timesteps = ddim_timesteps(schedule.num_steps, steps)[::-1]  # increasing, ending at T - 1
    x = x0
    for i, step in enumerate(tqdm(timesteps, desc=f"DDIM inversion ({steps} steps)", disable=not progress)):
        step_prev = timesteps[i - 1] if i > 0 else -1
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        eps_pred = model(x, t, **(conditioning or {}))
        xt = ddim_inversion_step(eps_pred, step_prev, step, x, schedule)
        if callback is not None:
            callback({"i": i, "t_prev": step_prev, "t": step, "x_prev": x, "eps_pred": eps_pred, "xt": xt})
        x = xt
    return x


@dataclass
class Inversion:
    """What inverting a batch of images gives, and its reconstruction, to measure the error of each stage.

    images: (B, 3, S, S) the input; z0: (B, C, h, w) its latents; zT: (B, C, h, w) the inverted noise;
    z0_rec: (B, C, h, w) deterministic DDIM from zT; images_rec: (B, 3, S, S) z0_rec decoded; images_ae:
    (B, 3, S, S) z0 decoded, the autoencoder's own reconstruction (the best inversion can do in pixels).
    """

    images: Tensor
    z0: Tensor
    zT: Tensor
    z0_rec: Tensor
    images_rec: Tensor
    images_ae: Tensor

    def latent_mse(self) -> Tensor:
        """(B,) mean squared error between z0 and its reconstruction, per image."""
        return (self.z0_rec - self.z0).pow(2).flatten(1).mean(1)

    def psnr(self, reference: str = "images") -> Tensor:
        """(B,) PSNR in dB of the reconstructed images against ``reference``: "images" (the input) or "images_ae"
        (the autoencoder's reconstruction, which isolates the inversion's share). Peak-to-peak 2 ([-1, 1])."""
        if reference not in ("images", "images_ae"):
            raise ValueError(f"reference must be 'images' or 'images_ae', got {reference!r}")
        mse = (self.images_rec - getattr(self, reference).to(self.images_rec.device)).pow(2).flatten(1).mean(1)
        return 10 * torch.log10(4.0 / mse.clamp(min=1e-12))


@torch.no_grad()
def invert_images(ldm: LatentDiffusion, images: Tensor, prompts: Sequence[str] | None, steps: int = 50,
                  guidance_scale: float = 1.0, progress: bool = True) -> Inversion:
    """Encode images, invert their latents with DDIM under the prompts' guided model, and reconstruct them.

    The guided model of the inversion is the one the reconstruction samples with (``LatentDiffusion.denoiser``),
    at the same ``steps``.

    Args:
        ldm: the pipeline.
        images: (B, 3, S, S) in [-1, 1], S = ``ldm.image_size``.
        prompts: B prompts, one per image (their captions); None for an unconditional model.
        steps: model calls of the inversion and of the reconstruction each, in [1, T].
        guidance_scale: classifier-free guidance scale of both; 1 (no guidance) inverts best.
        progress: show progress bars.
    Returns:
        an ``Inversion``.
    """
    check_edit_images(images, ldm)
    if prompts is not None and len(prompts) != images.shape[0]:
        raise ValueError(f"got {len(prompts)} prompts for {images.shape[0]} images; pass one prompt per image")
    model, _ = ldm.denoiser(prompts, 1, guidance_scale)
    ldm.eval()
    z0 = ldm.encode_images(images)  # (B, C, h, w)
    zT = ddim_invert(model, z0, ldm.schedule, steps, progress=progress)
    z0_rec = ddim_sample(model, tuple(z0.shape), ldm.schedule, steps, xT=zT, progress=progress)
    return Inversion(images, z0, zT, z0_rec, ldm.decode_latents(z0_rec), ldm.decode_latents(z0))


def slerp(z_a: Tensor, z_b: Tensor, w: float | Tensor) -> Tensor:
    """Spherical interpolation between two noises, per sample (Shoemake 1985; for diffusion noise, Song et al. 2021,
    Sec. 5.3).

    Gaussian noise in d dimensions lies near the sphere of radius sqrt(d); a straight line between two such noises
    cuts inside it (its midpoint has about 1/sqrt(2) of the norm, which decodes to a washed-out image), while
    slerp follows the great circle: slerp = sin((1 - w) theta) / sin(theta) z_a + sin(w theta) / sin(theta) z_b, with
    theta the angle between z_a and z_b. Its endpoints are z_a (w = 0) and z_b (w = 1); for equal norms every point
    has that norm. Nearly parallel pairs fall back to the straight line.

    Args:
        z_a, z_b: (B, ...) two batches of noise.
        w: weight in [0, 1], a float or a (K,) tensor of weights.
    Returns:
        (B, ...) for a float w; (K, B, ...) for a (K,) tensor.
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must have the same shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if isinstance(w, Tensor) and w.ndim == 1:
        return torch.stack([slerp(z_a, z_b, float(v)) for v in w])
    w = float(w)
    if not 0 <= w <= 1:
        raise ValueError(f"w must lie in [0, 1] (0 gives z_a, 1 gives z_b), got {w}")
    a, b = z_a.flatten(1).double(), z_b.flatten(1).double()  # (B, d)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)
    theta = cos.clamp(-1, 1).acos()[:, None]  # (B, 1)
    sin = theta.sin()
    straight = sin < 1e-6
    safe = torch.where(straight, torch.ones_like(sin), sin)
    # sin((1 - w) theta) / sin theta z_a + sin(w theta) / sin theta z_b
    coef_a = torch.where(straight, torch.full_like(sin, 1 - w), ((1 - w) * theta).sin() / safe)
    coef_b = torch.where(straight, torch.full_like(sin, w), (w * theta).sin() / safe)
    return (coef_a * a + coef_b * b).reshape(z_a.shape).to(z_a.dtype)


@torch.no_grad()
def interpolate_images(ldm: LatentDiffusion, image_a: Tensor, image_b: Tensor, prompt: str | None,
                       weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), steps: int = 50,
                       guidance_scale: float = 1.0, progress: bool = True) -> Tensor:
    """Blend two images through their DDIM-inverted noises: slerp the noises, then sample each deterministically.

    Both images are inverted under the same prompt, which also guides every in-between sample; the endpoints are
    the two reconstructions (``invert_images``).

    Args:
        ldm: the pipeline.
        image_a, image_b: (1, 3, S, S) or (3, S, S) in [-1, 1].
        prompt: the prompt of both (e.g. a caption in between); None for an unconditional model.
        weights: K weights in [0, 1], from image_a (0) to image_b (1).
        steps, guidance_scale, progress: see ``invert_images``.
    Returns:
        (K, 3, S, S) images in [-1, 1], one per weight.
    """
    pair = [x[None] if isinstance(x, Tensor) and x.ndim == 3 else x for x in (image_a, image_b)]
    for name, x in zip(("image_a", "image_b"), pair):
        check_edit_images(x, ldm, name)
        if x.shape[0] != 1:
            raise ValueError(f"{name} must be one image, (3, S, S) or (1, 3, S, S), got {tuple(x.shape)}")
    pair = torch.cat(pair)  # (2, 3, S, S)
    prompts = None if prompt is None else [prompt, prompt]
    inversion = invert_images(ldm, pair, prompts, steps, guidance_scale, progress)
    noises = slerp(inversion.zT[:1], inversion.zT[1:], torch.tensor(list(weights), dtype=torch.float64))[:, 0]
    model, _ = ldm.denoiser(None if prompt is None else [prompt], len(noises), guidance_scale)
    z0 = ddim_sample(model, tuple(noises.shape), ldm.schedule, steps, xT=noises, progress=progress)
    return ldm.decode_latents(z0)
