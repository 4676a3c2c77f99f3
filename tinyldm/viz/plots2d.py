"""Pictures for 2-D diffusion: point clouds, the reverse process as an animation or a slider, direction fields.

Points are (B, 2) tensors; a recorded reverse process is (K, B, 2), K frames of the same B points from x_T to
x0. Each point keeps one colour in every frame (by where it ends up), so the eye can follow it. Figures are
built with ``matplotlib.figure.Figure`` where they go into HTML or widgets, so no static copy is left in pyplot.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Callable

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML
from matplotlib.animation import FuncAnimation
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from tinyldm.schedule import NoiseSchedule

__all__ = ["plot_points", "plot_point_clouds", "reverse_animation", "reverse_explorer", "plot_direction_field"]

_CMAP = "hsv"  # cyclic, because points are coloured by an angle
_REFERENCE_STYLE = {"s": 2, "color": "0.8", "zorder": 0, "linewidths": 0}


def _check_points(points: Tensor, name: str = "points") -> None:
    if not isinstance(points, Tensor) or points.ndim != 2 or points.shape[1] != 2:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"{name} must be a (B, 2) tensor of 2-D points, got {shape}")


def _check_frames(frames: Tensor, labels: Sequence, x0_preds: Tensor | None) -> None:
    if not isinstance(frames, Tensor) or frames.ndim != 3 or frames.shape[2] != 2:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(
            f"frames must be a (K, B, 2) tensor, K frames of B points, got {shape}; stack them with torch.stack"
        )
    if len(labels) != frames.shape[0]:
        raise ValueError(f"got {frames.shape[0]} frames but {len(labels)} labels; pass one step label per frame")
    if x0_preds is not None and x0_preds.shape != frames.shape:
        raise ValueError(f"x0_preds must have the shape of frames, {tuple(frames.shape)}, got {tuple(x0_preds.shape)}")


def _style(ax: Axes, lim: float, title: str | None = None) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=10)


def _np(x: Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def plot_points(
    points: Tensor,
    ax: Axes | None = None,
    title: str | None = None,
    reference: Tensor | None = None,
    colors: Tensor | None = None,
    lim: float = 3.0,
) -> Axes:
    """Scatter a 2-D point cloud on square axes, optionally over a faint copy of the data.

    Args:
        points: (B, 2) points.
        ax: where to draw; a new figure when None.
        title: the axes title.
        reference: (N, 2) points drawn in light grey behind, e.g. the training data.
        colors: (B,) values mapped through the colour map; one colour when None.
        lim: the axes show [-lim, lim] in both directions.
    Returns:
        the Axes drawn on.
    """
    _check_points(points)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    if reference is not None:
        _check_points(reference, "reference")
        ax.scatter(*_np(reference).T, **_REFERENCE_STYLE)
    c = _np(colors) if colors is not None else "C0"
    ax.scatter(*_np(points).T, s=3, c=c, cmap=_CMAP if colors is not None else None, linewidths=0)
    _style(ax, lim, title)
    return ax


def plot_point_clouds(
    clouds: Mapping[str, Tensor], reference: Tensor | None = None, lim: float = 3.0, ncols: int | None = None
) -> Figure:
    """Small multiples: one panel per named point cloud, on shared limits.

    Args:
        clouds: title -> (B, 2) points, drawn left to right.
        reference: (N, 2) points drawn faintly behind each panel.
        lim: each panel shows [-lim, lim]^2.
        ncols: panels per row; all in one row when None.
    Returns:
        the pyplot Figure.
    """
    if not clouds:
        raise ValueError("clouds is empty; pass a dict of title -> (B, 2) points")
    ncols = ncols or len(clouds)
    nrows = -(-len(clouds) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows + 0.3), squeeze=False,
                             layout="constrained")
    for ax, (title, points) in zip(axes.flat, clouds.items()):
        plot_points(points, ax=ax, title=title, reference=reference, lim=lim)
    for ax in axes.flat[len(clouds):]:
        ax.axis("off")
    return fig


def _frame_colors(frames: Tensor) -> np.ndarray:
    """Colour each point by the angle of where it ends up, so a point keeps its colour through the animation."""
    final = _np(frames[-1])
    return np.arctan2(final[:, 1], final[:, 0])


def _draw_frame(axes: Sequence[Axes], k: int, frames: Tensor, labels: Sequence, x0_preds: Tensor | None,
                reference: Tensor | None, colors: np.ndarray, lim: float) -> None:
    panels = [(frames, "x_t")] + ([(x0_preds, "predicted x0")] if x0_preds is not None else [])
    for ax, (data, name) in zip(axes, panels):
        ax.clear()
        if reference is not None:
            ax.scatter(*_np(reference).T, **_REFERENCE_STYLE)
        ax.scatter(*_np(data[k]).T, s=3, c=colors, cmap=_CMAP, linewidths=0)
        _style(ax, lim, f"{name}, t = {labels[k]}" if labels[k] != -1 else f"{name}: x0 (done)")


def _reverse_figure(with_x0: bool, dpi: float = 72) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(6.4 if with_x0 else 3.4, 3.4), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, 2 if with_x0 else 1, squeeze=False)[0]
    return fig, list(axes)


def reverse_animation(
    frames: Tensor,
    labels: Sequence[int],
    x0_preds: Tensor | None = None,
    reference: Tensor | None = None,
    lim: float = 3.0,
    fps: float = 8,
) -> HTML:
    """The reverse process as an inline animation: the cloud flows from noise to data (matplotlib ``to_jshtml``).

    Args:
        frames: (K, B, 2) the states x_t, from x_T to x0.
        labels: K step indices for the titles; -1 marks the finished sample x0.
        x0_preds: (K, B, 2) the model's x0 prediction at each frame, shown in a second panel when given.
        reference: (N, 2) the data, drawn faintly behind.
        lim: each panel shows [-lim, lim]^2.
        fps: playback speed.
    Returns:
        ``IPython.display.HTML`` with the player; ``.data`` is the HTML text.
    """
    _check_frames(frames, labels, x0_preds)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    fig, axes = _reverse_figure(x0_preds is not None)
    colors = _frame_colors(frames)

    def update(k: int):
        _draw_frame(axes, k, frames, labels, x0_preds, reference, colors, lim)
        return axes

    animation = FuncAnimation(fig, update, frames=frames.shape[0], interval=1000 / fps, blit=False)
    # JPEG frames are about a third the size of PNG ones: this animation is saved inside the notebook.
    with plt.rc_context({"animation.frame_format": "jpeg"}):
        return HTML(animation.to_jshtml(fps=fps, default_mode="once"))


def reverse_explorer(
    frames: Tensor,
    labels: Sequence[int],
    x0_preds: Tensor | None = None,
    reference: Tensor | None = None,
    lim: float = 3.0,
) -> ipywidgets.VBox:
    """A slider that scrubs t through a recorded reverse process, redrawing x_t (and the x0 prediction).

    The figure is rendered to PNG into an ``ipywidgets.Image`` (as ``tinyldm.viz.explorer.forward_explorer`` does),
    so it needs no display hook and leaves nothing behind in pyplot.

    Args:
        frames: (K, B, 2) the states x_t, from x_T to x0.
        labels: K step indices; -1 marks x0.
        x0_preds: (K, B, 2) the x0 predictions, shown beside x_t when given.
        reference: (N, 2) the data, drawn faintly behind.
        lim: each panel shows [-lim, lim]^2.
    Returns:
        a VBox: ``children[0]`` the SelectionSlider over t, ``children[1]`` the Image with the rendered figure.
    """
    _check_frames(frames, labels, x0_preds)
    options = [(str(label) if label != -1 else "x0", k) for k, label in enumerate(labels)]
    slider = ipywidgets.SelectionSlider(options=options, value=0, description="t", continuous_update=False)
    slider.layout.width = "500px"
    picture = ipywidgets.Image(format="png")
    fig, axes = _reverse_figure(x0_preds is not None)
    colors = _frame_colors(frames)

    def redraw(_change=None) -> None:
        _draw_frame(axes, slider.value, frames, labels, x0_preds, reference, colors, lim)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        picture.value = buffer.getvalue()

    slider.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([slider, picture])


def _model_device(model: Callable[..., Tensor], schedule: NoiseSchedule) -> torch.device:
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else schedule.betas.device


@torch.no_grad()
def plot_direction_field(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    steps: Sequence[int],
    reference: Tensor | None = None,
    lim: float = 3.0,
    grid: int = 21,
) -> Figure:
    """Arrows of -eps_pred on a grid, one panel per step: the way the model pushes points back towards the data.

    -eps_theta(x_t, t) / sqrt(1 - alpha_bar_t) estimates the score grad log p_t(x_t), the link to denoising score
    matching (Ho et al. 2020, Sec. 3.2; Vincent 2011), so the arrows point uphill in the density of the noisy data
    at step t. Every arrow has the same length; its colour shows |eps_pred|.

    Args:
        model: called as ``model(xt, t)``; returns eps_pred of shape (B, 2).
        schedule: the schedule the model was trained with.
        steps: step indices, one panel each.
        reference: (N, 2) the data, drawn faintly behind.
        lim: each panel shows [-lim, lim]^2.
        grid: arrows per side.
    Returns:
        the pyplot Figure.
    """
    if not steps:
        raise ValueError("steps is empty; pass the step indices to draw, e.g. [10, 100, 400, 900]")
    device = _model_device(model, schedule)
    axis = torch.linspace(-lim, lim, grid)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    xt = torch.stack([gx.flatten(), gy.flatten()], dim=1).to(device)  # (grid^2, 2)
    fig, axes = plt.subplots(1, len(steps), figsize=(2.9 * len(steps), 3.6), squeeze=False, layout="constrained")
    for ax, step in zip(axes[0], steps):
        t = torch.full((xt.shape[0],), step, dtype=torch.long, device=device)
        eps_pred = model(xt, t)  # (grid^2, 2)
        direction = _np(-eps_pred)
        length = np.linalg.norm(direction, axis=1, keepdims=True)  # (grid^2, 1)
        if reference is not None:
            ax.scatter(*_np(reference).T, **_REFERENCE_STYLE)
        # Unit arrows show the direction everywhere; the colour carries the length, which spans a factor of 100.
        spacing = 2 * lim / (grid - 1)
        arrows = ax.quiver(*_np(xt).T, *(direction / (length + 1e-12)).T, length[:, 0], cmap="viridis",
                           angles="xy", scale_units="xy", scale=1 / (0.8 * spacing), width=0.005, pivot="mid")
        fig.colorbar(arrows, ax=ax, shrink=0.7, location="bottom", label="|eps_pred|")
        _style(ax, lim, f"t = {step}  (alpha_bar = {schedule.alpha_bars[step].item():.2f})")
    return fig
