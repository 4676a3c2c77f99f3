"""Pictures for the lessons and the ``tinyldm`` command: grids, chain strips, GIFs, animations, schedule curves.

The forward-process explorer of lesson 1 lives in ``tinyldm.viz.explorer``.

Images are tensors in [-1, 1] of shape (B, C, H, W) with C = 1 (grey) or 3 (RGB); a recorded chain is
(K, B, C, H, W), K frames of the same batch. Values outside [-1, 1] (a noisy x_t) are clipped for display.
Nothing here picks a matplotlib backend, so the module works headless (Agg) and in notebooks alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from tinyldm.schedule import NoiseSchedule

if TYPE_CHECKING:  # matplotlib, IPython and ipywidgets load where a figure or a widget is made: writing PNGs
    from IPython.display import HTML
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "to_pil",
    "save_grid",
    "show_images",
    "plot_chain",
    "save_gif",
    "animation_html",
    "plot_schedules",
    "tile",
    "check_images",
    "imshow_picture",
]

# Light grey between grid cells: visible next to both black and white images.
_PAD_VALUE = 0.85
_PADDING = 2


def check_images(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        hint = "add a batch dimension with x.unsqueeze(0)" if images.ndim == 3 else "pass (B, C, H, W)"
        raise ValueError(
            f"{name} must have shape (B, C, H, W) with C = 1 or 3 channels, got {tuple(images.shape)}; {hint}"
        )


def _check_frames(frames: Tensor) -> None:
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a torch.Tensor of shape (K, B, C, H, W), got {type(frames).__name__}")
    if frames.ndim != 5 or frames.shape[2] not in (1, 3):
        raise ValueError(
            f"frames must have shape (K, B, C, H, W) with C = 1 or 3 channels, got {tuple(frames.shape)}; "
            "q_trajectory returns this layout, and a single batch (B, C, H, W) becomes one frame with x[None]"
        )


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def tile(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> Tensor:
    """Images side by side in rows of ``nrow``, with ``padding`` pixels of ``pad_value`` between and around them
    (torchvision's ``make_grid`` layout, without importing torchvision for it).

    Args:
        images: (B, C, H, W); C = 1 is repeated to 3 channels.
    Returns:
        (C', rows * (H + padding) + padding, cols * (W + padding) + padding) with C' = 3 for C = 1, else C;
        a single image comes back as it is (no border).
    """
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    B, C, H, W = images.shape
    if B == 1:
        return images[0]
    cols = min(nrow, B)
    rows = math.ceil(B / cols)
    grid = images.new_full((C, rows * (H + padding) + padding, cols * (W + padding) + padding), pad_value)
    for k in range(B):
        top, left = (k // cols) * (H + padding) + padding, (k % cols) * (W + padding) + padding
        grid[:, top:top + H, left:left + W] = images[k]
    return grid


def to_pil(images: Tensor, nrow: int = 8, scale: int = 1) -> Image.Image:
    """Lay a batch out as one picture: a grid with light-grey gaps, -1 mapped to black (0) and 1 to white (255).

    Args:
        images: (B, C, H, W) in [-1, 1], C = 1 or 3; values outside are clipped. Any device or float dtype.
        nrow: images per row of the grid.
        scale: integer upscaling with nearest-neighbour, so 32x32 images are big enough to see.
    Returns:
        A PIL image, mode "L" for C = 1 and "RGB" for C = 3, of size
        (scale * (cols * (W + 2) + 2), scale * (rows * (H + 2) + 2)) with cols = min(nrow, B),
        rows = ceil(B / cols); a single image (B = 1) gets no border.
    """
    check_images(images)
    _check_positive_int(nrow, "nrow")
    _check_positive_int(scale, "scale")
    unit = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    grid = tile(unit, nrow=nrow, padding=_PADDING, pad_value=_PAD_VALUE)  # (3, H', W'), grey repeated
    pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H', W', 3)
    picture = Image.fromarray(pixels[..., 0]) if images.shape[1] == 1 else Image.fromarray(pixels)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    return picture


def save_grid(images: Tensor, path: str | Path, nrow: int = 8, scale: int = 1) -> Path:
    """Write ``to_pil(images, nrow, scale)`` as a PNG, creating missing parent folders.

    Args:
        images: (B, C, H, W) in [-1, 1].
        path: where to write; the format comes from the suffix (use ".png").
        nrow: images per row.
        scale: integer nearest-neighbour upscaling.
    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(images, nrow=nrow, scale=scale).save(path)
    return path


def imshow_picture(ax: Axes, picture: Image.Image):
    """Show a picture made by ``to_pil`` on ``ax``, pixel for pixel, without the axes' frame."""
    ax.set_axis_off()
    cmap = "gray" if picture.mode == "L" else None
    return ax.imshow(np.asarray(picture), cmap=cmap, vmin=0, vmax=255, interpolation="nearest")


def show_images(images: Tensor, nrow: int = 8, title: str | None = None, ax: Axes | None = None) -> Axes:
    """Show a batch as one grid in matplotlib, without ticks.

    Args:
        images: (B, C, H, W) in [-1, 1].
        nrow: images per row.
        title: optional title above the grid.
        ax: the axes to draw into; a new figure sized to the grid when None.
    Returns:
        The axes drawn into.
    """
    import matplotlib.pyplot as plt

    picture = to_pil(images, nrow=nrow)
    if ax is None:
        # About 0.04 inch per pixel: a 32x32 image is 1.3 inches wide, up to a 12-inch-wide grid.
        size = min(0.04, 12 / picture.width)
        figsize = (picture.width * size, picture.height * size + (0.4 if title else 0))
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    imshow_picture(ax, picture)
    if title:
        ax.set_title(title)
    return ax


def _step_label(step: int) -> str:
    return "x0" if step == -1 else f"t = {step}"


def plot_chain(frames: Tensor, steps: Sequence[int], fig: Figure | None = None) -> Figure:
    """A table of forward-process states: one row per image, one column per recorded step.

    Args:
        frames: (K, B, C, H, W), e.g. from ``q_trajectory(x0, schedule, record=steps)``.
        steps: the K step indices of the columns, titled "t = ..."; -1 is titled "x0".
        fig: the figure to draw into; a new one sized to the table when None.
    Returns:
        The figure, with B * K axes in row-major order (image b, step k is ``fig.axes[b * K + k]``).
    """
    import matplotlib.pyplot as plt

    _check_frames(frames)
    steps = list(steps)
    if len(steps) != frames.shape[0]:
        raise ValueError(
            f"got {frames.shape[0]} frames but {len(steps)} steps ({steps}); "
            "pass the same record list that produced the frames"
        )
    num_steps, batch = frames.shape[:2]
    if fig is None:
        # Constrained layout keeps thin gaps and still makes room for a suptitle added later.
        fig = plt.figure(figsize=(1.2 * num_steps, 1.2 * batch + 0.3), layout="constrained")
        fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0, hspace=0)
    axes = fig.subplots(batch, num_steps, squeeze=False)
    for k, step in enumerate(steps):
        for b in range(batch):
            imshow_picture(axes[b, k], to_pil(frames[k, b : b + 1]))
        axes[0, k].set_title(_step_label(step), fontsize=10)
    return fig


def _check_fps(fps: float) -> None:
    # GIF stores delays in hundredths of a second and browsers slow anything under 0.02 s down to 0.1 s.
    if not 0 < fps <= 50:
        raise ValueError(f"fps must lie in (0, 50], got {fps}; faster GIFs play slower in most browsers")


def save_gif(
    frames: Tensor, path: str | Path, fps: float = 10, nrow: int = 8, scale: int = 4, hold_last: float = 1.5
) -> Path:
    """Write a looping animated GIF, one grid per frame, and hold the last frame so the end can be seen.

    Args:
        frames: (K, B, C, H, W) in [-1, 1].
        path: where to write (".gif"); missing parent folders are created.
        fps: frames per second, at most 50.
        nrow: images per row of each grid.
        scale: integer nearest-neighbour upscaling of each grid.
        hold_last: seconds the last frame stays up before the loop restarts (never shorter than one frame).
    Returns:
        The path written. The file has K frames (Pillow merges consecutive frames that are identical).
    """
    _check_frames(frames)
    _check_fps(fps)
    pictures = [to_pil(frame, nrow=nrow, scale=scale) for frame in frames]
    frame_ms = 1000 / fps
    durations = [frame_ms] * (len(pictures) - 1) + [max(frame_ms, 1000 * hold_last)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path


def animation_html(
    frames: Tensor, labels: Sequence[str] | None = None, fps: float = 10, nrow: int = 8
) -> HTML:
    """An inline, scrubbable JavaScript animation of frames for a notebook (matplotlib ``to_jshtml``).

    The figure is never registered with pyplot, so the notebook shows only the animation, not a static copy.

    Args:
        frames: (K, B, C, H, W) in [-1, 1].
        labels: K titles, one per frame (e.g. ``[f"t = {s}" for s in record]``); none when None.
        fps: playback speed in frames per second.
        nrow: images per row of each grid.
    Returns:
        An ``IPython.display.HTML`` object; a notebook cell ending with it shows the player, and ``.data``
        is the HTML text.
    """
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation
    from matplotlib.figure import Figure

    _check_frames(frames)
    if labels is not None and len(labels) != frames.shape[0]:
        raise ValueError(f"got {frames.shape[0]} frames but {len(labels)} labels; pass one label per frame")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    pictures = [to_pil(frame, nrow=nrow) for frame in frames]
    size = 5 / max(pictures[0].size)  # inches per pixel: the longer side of the grid is 5 inches
    width, height = pictures[0].width * size, pictures[0].height * size
    title_height = 0.35 if labels else 0
    fig = Figure(figsize=(width, height + title_height))
    ax = fig.add_axes((0, 0, 1, height / (height + title_height)))
    image = imshow_picture(ax, pictures[0])
    title = ax.set_title(labels[0] if labels else "")

    def update(k: int):
        image.set_data(np.asarray(pictures[k]))
        title.set_text(labels[k] if labels else "")
        return image, title

    animation = FuncAnimation(fig, update, frames=len(pictures), interval=1000 / fps, blit=False)
    return HTML(animation.to_jshtml(fps=fps, default_mode="loop"))


def plot_schedules(schedules: Mapping[str, NoiseSchedule]) -> Figure:
    """Compare schedules: alpha_bar_t (how much signal is left) and log10 SNR(t), one line per schedule.

    Args:
        schedules: name -> schedule, e.g. ``{"linear": NoiseSchedule.linear(), "cosine": NoiseSchedule.cosine()}``.
    Returns:
        A figure with two axes: alpha_bar_t against t, then log10 SNR against t.
    """
    import matplotlib.pyplot as plt

    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError(
            f"schedules must be a non-empty dict of name -> NoiseSchedule, got {schedules!r}; "
            'for one schedule pass {"linear": schedule}'
        )
    fig, (ax_bar, ax_snr) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for name, schedule in schedules.items():
        steps = torch.arange(schedule.num_steps)
        ax_bar.plot(steps, schedule.alpha_bars.cpu(), label=name)
        ax_snr.plot(steps, schedule.snr(steps).cpu().log10(), label=name)
    ax_snr.axhline(0, color="grey", linewidth=0.8, linestyle="--")
    _style_curve(ax_bar, r"$\bar\alpha_t$ (signal left)")
    _style_curve(ax_snr, r"$\log_{10}$ SNR$(t)$  (0: as much signal as noise)")
    ax_bar.legend()
    return fig


def _style_curve(ax: Axes, ylabel: str) -> None:
    ax.set_xlabel("t (step index)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
