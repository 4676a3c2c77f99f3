"""Pictures of latents: the four channels of a latent as grey maps, and lesson 5's picture of the whole pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import ConnectionPatch
from torch import Tensor

from tinyldm.viz.images import show_images

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["latent_mosaic", "show_latent", "latent_pipeline_figure"]


def latent_mosaic(z: Tensor) -> Tensor:
    """(C, h, w) -> (2h + 1, 2w + 1) for C <= 4: the channels as a 2 x 2 grid of maps, NaN in the gaps."""
    c, h, w = z.shape
    if c > 4:
        raise ValueError(f"latent_mosaic draws up to 4 channels, got {c}; pass z[:4]")
    grid = torch.full((2 * h + 1, 2 * w + 1), float("nan"))
    for k in range(c):
        r, col = divmod(k, 2)
        grid[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = z[k].float().cpu()
    return grid


def show_latent(ax: Axes, z: Tensor, title: str, limit: float = 2.5) -> None:
    """Draw one (C, h, w) latent on ``ax`` as grey maps, black at -limit and white at +limit, gaps white."""
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    ax.imshow(latent_mosaic(z), cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _arrow(fig: Figure, a: Axes, b: Axes, label: str) -> None:
    fig.add_artist(ConnectionPatch((1.05, 0.5), (-0.05, 0.5), "axes fraction", "axes fraction", axesA=a, axesB=b,
                                   arrowstyle="-|>", mutation_scale=14, color="0.3"))
    middle = (a.transAxes.transform((1, 0.5)) + b.transAxes.transform((0, 0.5))) / 2 + (0, 14)
    fig.text(*fig.transFigure.inverted().transform(middle), label, ha="center", va="bottom", fontsize=8,
             color="0.3")


def latent_pipeline_figure(image: Tensor, z0: Tensor, zt: Tensor, eps: Tensor, t: int, zT: Tensor,
                           z0_sampled: Tensor, decoded: Tensor, prompt: str, steps: int) -> Figure:
    """Latent diffusion in two rows: training (image -> latent -> noisy latent -> the noise the UNet predicts)
    and sampling (noise -> latent after ``steps`` steps -> decoded image for ``prompt``).

    Args:
        image, decoded: (1, 3, H, W) pictures in [-1, 1].
        z0, zt, eps, zT, z0_sampled: (C, h, w) latents: the image's, its noised version at step ``t``, that noise,
            the sampler's start and its end.
    """
    fig, axes = plt.subplots(2, 4, figsize=(11, 5.4), gridspec_kw={"wspace": 0.7, "hspace": 0.6, "top": 0.84})
    numbers = image[0].numel()
    show_images(image, nrow=1, ax=axes[0, 0])
    axes[0, 0].set_title(f"image x\n{' x '.join(map(str, image.shape[1:]))} = {numbers:,} numbers", fontsize=9)
    show_latent(axes[0, 1], z0, f"latent z0 = E(x)\n{' x '.join(map(str, z0.shape))} = {z0.numel():,} numbers")
    show_latent(axes[0, 2], zt, f"noisy latent z_t, t = {t}")
    show_latent(axes[0, 3], eps, "the noise eps:\nthe UNet's target")
    show_latent(axes[1, 0], zT, "z_T: pure noise")
    show_latent(axes[1, 1], z0_sampled, f"z0 after {steps} DDIM steps")
    show_images(decoded, nrow=1, ax=axes[1, 2])
    axes[1, 2].set_title(f"image D(z0)\n'{prompt}'", fontsize=9)
    axes[1, 3].set_axis_off()
    _arrow(fig, axes[0, 0], axes[0, 1], "encoder E")
    _arrow(fig, axes[0, 1], axes[0, 2], "add noise")
    _arrow(fig, axes[0, 2], axes[0, 3], "UNet predicts")
    _arrow(fig, axes[1, 0], axes[1, 1], f"UNet, {steps} steps")
    _arrow(fig, axes[1, 1], axes[1, 2], "decoder D")
    for row, label in ((0, "training: diffusion on the encoder's latents"),
                       (1, "sampling: back from noise in latent space, decode once")):
        fig.text(0.1, axes[row, 0].get_position().y1 + 0.1, label, fontsize=10, weight="bold")
    return fig
