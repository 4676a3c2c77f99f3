"""The forward-process explorer of lesson 1: x_t = q_sample(x0, t, eps) for one fixed eps, its pixel histogram and
where t sits on the schedule's curves, as a static figure or behind a slider over t (Ho et al. 2020, Eq. 4)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from tinyldm.schedule import NoiseSchedule, q_sample
from tinyldm.viz.images import check_images, imshow_picture, to_pil

if TYPE_CHECKING:  # matplotlib and ipywidgets load where a figure or a widget is made
    import ipywidgets
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["draw_forward_state", "plot_forward_state", "forward_explorer"]


def _square_nrow(batch: int) -> int:
    return math.ceil(math.sqrt(batch))


def draw_forward_state(
    axes: Sequence[Axes], x0: Tensor, eps: Tensor, t: int, schedule: NoiseSchedule, nrow: int | None = None
) -> Tensor:
    """Draw x_t = q_sample(x0, t, eps), its pixel histogram against N(0, 1), and where t sits on the curves.

    Ho et al. 2020, Eq. 4. With one fixed ``eps`` for every t, moving t only changes the mixing weights, so
    the picture fades smoothly from x0 into that noise.

    Args:
        axes: four axes, filled in order: the x_t grid, the histogram, alpha_bar_t, log10 SNR(t).
            They are cleared first.
        x0: (B, C, H, W) clean images in [-1, 1].
        eps: (B, C, H, W) standard normal noise.
        t: the step index, in [0, T).
        schedule: the noise schedule.
        nrow: images per row of the grid; about square when None.
    Returns:
        (B, C, H, W) the x_t that was drawn, on CPU.
    """
    if len(axes) != 4:
        raise ValueError(f"draw_forward_state needs 4 axes (image, histogram, alpha_bar, SNR), got {len(axes)}")
    check_images(x0, "x0")
    x0, eps = x0.detach().float().cpu(), eps.detach().float().cpu()
    ax_image, ax_hist, ax_bar, ax_snr = axes
    for ax in axes:
        ax.clear()
    xt = q_sample(x0, torch.full((x0.shape[0],), int(t), dtype=torch.long), schedule, eps)
    alpha_bar = schedule.alpha_bars[t].item()

    imshow_picture(ax_image, to_pil(xt, nrow=nrow or _square_nrow(x0.shape[0])))
    ax_image.set_title(f"$x_t$ at t = {t}  (clipped to [-1, 1])", fontsize=10)

    grid = np.linspace(-4, 4, 200)
    pixels = xt.flatten().numpy()
    ax_hist.hist(pixels, bins=80, range=(-4, 4), density=True, alpha=0.6, label="pixels of $x_t$")
    ax_hist.plot(grid, np.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi), color="black", label="N(0, 1)")
    # A fixed height keeps the axes still while t moves; the spikes of clean images are cut off instead.
    ax_hist.set_ylim(0, 1)
    ax_hist.set_title("pixel values", fontsize=10)
    ax_hist.legend(fontsize=8, loc="upper right")

    steps = torch.arange(schedule.num_steps)
    log_snr = schedule.snr(steps).cpu().log10()
    ax_bar.plot(steps, schedule.alpha_bars.cpu())
    ax_bar.plot([t], [alpha_bar], "o", color="tab:red")
    ax_bar.set_title(rf"$\bar\alpha_t$ = {alpha_bar:.3f}", fontsize=10)
    ax_snr.plot(steps, log_snr)
    ax_snr.plot([t], [log_snr[t].item()], "o", color="tab:red")
    ax_snr.set_title(rf"$\log_{{10}}$ SNR = {log_snr[t].item():.2f}", fontsize=10)
    for ax in (ax_bar, ax_snr):
        ax.axvline(t, color="tab:red", linewidth=0.8, linestyle=":")
        ax.set_xlabel("t (step index)")
        ax.grid(alpha=0.3)
    return xt


def _forward_axes(fig: Figure) -> list[Axes]:
    return list(fig.subplots(1, 4, gridspec_kw={"width_ratios": [1.3, 1, 1, 1]}))


def _fixed_eps(x0: Tensor, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(x0.shape, generator=generator)


def plot_forward_state(x0: Tensor, schedule: NoiseSchedule, t: int, seed: int = 0) -> Figure:
    """A static figure of ``draw_forward_state``, for notebooks read where widgets do not run (e.g. on GitHub).

    Args:
        x0: (B, C, H, W) clean images in [-1, 1].
        schedule: the noise schedule.
        t: the step index, in [0, T).
        seed: seeds the fixed noise eps, the same eps ``forward_explorer`` draws for this seed.
    Returns:
        The figure, with the four axes of ``draw_forward_state``.
    """
    import matplotlib.pyplot as plt

    check_images(x0, "x0")
    fig = plt.figure(figsize=(13, 3.2), layout="constrained")
    draw_forward_state(_forward_axes(fig), x0, _fixed_eps(x0, seed), t, schedule)
    return fig


def forward_explorer(
    x0: Tensor, schedule: NoiseSchedule | Mapping[str, NoiseSchedule], seed: int = 0
) -> ipywidgets.VBox:
    """A slider over t that redraws ``draw_forward_state`` with one eps drawn once from ``seed``.

    The figure is rendered to PNG into an ``ipywidgets.Image`` rather than shown through an ``Output``: the
    picture is then part of the widget's state, so it works without a live kernel display hook (tests, voila)
    and never leaves a static copy behind in pyplot.

    Args:
        x0: (B, C, H, W) clean images in [-1, 1]; 4 to 16 images read best.
        schedule: one schedule, or name -> schedule to add a dropdown that switches between them.
        seed: seeds the fixed noise eps (CPU generator), so the same seed shows the same noise.
    Returns:
        A VBox: ``children[0]`` is an HBox of the controls (the t slider, then the dropdown if any),
        ``children[1]`` the Image widget holding the rendered figure.
    """
    import ipywidgets
    from matplotlib.figure import Figure

    check_images(x0, "x0")
    schedules = dict(schedule) if isinstance(schedule, Mapping) else {schedule.kind: schedule}
    if not schedules:
        raise ValueError("schedule is an empty dict; pass a NoiseSchedule or a dict of at least one")
    eps = _fixed_eps(x0, seed)
    first = next(iter(schedules.values()))
    slider = ipywidgets.IntSlider(
        value=0, min=0, max=first.num_steps - 1, description="t", continuous_update=False
    )
    slider.layout.width = "500px"
    dropdown = ipywidgets.Dropdown(options=list(schedules), description="schedule")
    picture = ipywidgets.Image(format="png")
    fig = Figure(figsize=(13, 3.2), layout="constrained")
    axes = _forward_axes(fig)

    def redraw(_change=None) -> None:
        draw_forward_state(axes, x0, eps, slider.value, schedules[dropdown.value])
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        picture.value = buffer.getvalue()

    def switch_schedule(_change) -> None:
        new_max = schedules[dropdown.value].num_steps - 1
        # A max below the current t clamps the value, and that change already redraws.
        clamped = slider.value > new_max
        slider.max = new_max
        if not clamped:
            redraw()

    slider.observe(redraw, names="value")
    dropdown.observe(switch_schedule, names="value")
    redraw()
    controls = [slider, dropdown] if len(schedules) > 1 else [slider]
    return ipywidgets.VBox([ipywidgets.HBox(controls), picture])
