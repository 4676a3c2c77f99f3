"""Block diagrams drawn from the models' own configs: the UNet of lesson 3 and the cross-attention of lesson 6.

A diagram drawn from the config cannot drift from the code: ``unet_diagram(UNetConfig.small())`` shows the levels,
widths, resolutions, blocks and attention places that ``UNet(UNetConfig.small())`` builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tinyldm.unet import UNetConfig

__all__ = ["unet_diagram", "cross_attention_diagram"]

_DOWN, _MID, _UP, _TIME, _TEXT, _IO = "#dbe9f6", "#fde2c8", "#d9f0d3", "#f3e5f5", "#fff3bf", "#eeeeee"


def _box(ax: Axes, x: float, y: float, text: str, colour: str, width: float = 1.95, height: float = 0.62,
         fontsize: float = 8) -> None:
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04",
                                facecolor=colour, edgecolor="#555555", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], text: str = "", style: str = "-|>",
           colour: str = "#333333", dashed: bool = False, fontsize: float = 7, shift: tuple[float, float] = (0, 0)
           ) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=colour, lw=0.9,
                                                           linestyle="--" if dashed else "-",
                                                           shrinkA=0, shrinkB=0))
    if text:
        ax.text((start[0] + end[0]) / 2 + shift[0], (start[1] + end[1]) / 2 + shift[1], text, ha="center",
                va="center", fontsize=fontsize, color=colour,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5))


def unet_diagram(config: UNetConfig, image_size: int = 32) -> Figure:
    """The UNet that ``config`` builds, as a U of blocks: one box per level on the way down and up, the middle, the
    skip connections, the step embedding, and where attention sits.

    Args:
        config: the UNet's config (``tinyldm.unet.UNetConfig``).
        image_size: the side of x_t, for the resolutions written in the boxes.
    """
    levels = len(config.channel_mults)
    widths = [config.base_channels * m for m in config.channel_mults]
    attention = "SpatialTransformer" if config.context_dim is not None else "self-attention"
    fig, ax = plt.subplots(figsize=(2.1 * (levels + 1) + 1.5, 0.95 * levels + 2.0), layout="constrained")
    dx, dy = 2.1, 1.25  # spacing between levels
    right = 2 * levels * dx

    def place(level: int, up: bool) -> tuple[float, float]:
        return (right - level * dx if up else level * dx), -level * dy

    for level in range(levels):
        side = image_size >> level
        attn = f"\n+ {attention}" if level in config.attention_levels else ""
        for up in (False, True):
            blocks = config.blocks_per_level + (1 if up else 0)
            x, y = place(level, up)
            _box(ax, x, y, f"level {level}: {side}x{side}, {widths[level]} ch\n{blocks} x ResBlock{attn}",
                 _UP if up else _DOWN, height=0.75 if attn else 0.62, fontsize=7)
        if config.skip_connections:
            (x0, y0), (x1, _) = place(level, False), place(level, True)
            _arrow(ax, (x0 + 1.0, y0), (x1 - 1.0, y0), "skip: concatenate", colour="#1f77b4", dashed=True)
        if level < levels - 1:
            for up in (False, True):
                a, b = place(level, up), place(level + 1, up)
                start, end = (b, a) if up else (a, b)
                _arrow(ax, (start[0], start[1] - 0.38 if not up else start[1] + 0.38),
                       (end[0], end[1] + 0.38 if not up else end[1] - 0.38),
                       "Upsample" if up else "Downsample", shift=(0.55 if up else -0.55, 0))
    bottom = place(levels - 1, False)
    mid = (levels * dx, bottom[1] - dy)
    _box(ax, mid[0], mid[1], f"middle: {image_size >> (levels - 1)}x{image_size >> (levels - 1)}, {widths[-1]} ch\n"
         f"ResBlock, {attention}, ResBlock", _MID, width=2.7, height=0.75, fontsize=7)
    _arrow(ax, (bottom[0], bottom[1] - 0.38), (mid[0] - 1.35, mid[1]))
    top_up = place(levels - 1, True)
    _arrow(ax, (mid[0] + 1.35, mid[1]), (top_up[0], top_up[1] - 0.38))
    _box(ax, -1.7, 0, "$x_t$\n(conv_in)", _IO, width=1.0)
    _arrow(ax, (-1.2, 0), (-1.0, 0))
    _box(ax, right + 1.7, 0, r"$\hat\varepsilon$" + "\n(conv_out)", _IO, width=1.0)
    _arrow(ax, (right + 1.0, 0), (right + 1.2, 0))
    time_y = 1.05
    conditioning = "step $t$: sinusoidal embedding -> MLP -> added to every ResBlock (and the middle's)"
    if config.context_dim is not None:
        conditioning += "\ncaption: text encoder -> context of every SpatialTransformer"
    _box(ax, right / 2, time_y, conditioning, _TIME, width=right + 1.2, height=0.55 if config.context_dim is None
         else 0.75)
    ax.set_xlim(-2.3, right + 2.3)
    ax.set_ylim(mid[1] - 0.5, time_y + 0.45)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


def cross_attention_diagram() -> Figure:
    """One cross-attention layer: the image's N positions ask (Q), the caption's L tokens answer (K, V), and each
    position takes a softmax-weighted mix of the token values back into its features."""
    fig, ax = plt.subplots(figsize=(10, 4.6), layout="constrained")
    _box(ax, 0, 3.2, "image features $\\varphi(z_t)$\n$h \\times w$ positions, $C$ channels\n"
         "flattened: $N = h w$ tokens", _DOWN, width=2.6, height=0.95)
    _box(ax, 6.4, 3.2, "caption -> text encoder $\\tau_\\theta(y)$\n$L$ token vectors of $D$ numbers\n"
         "(+ padding mask)", _TEXT, width=2.6, height=0.95)
    _box(ax, 0, 1.6, "$Q = W_Q\\,\\varphi$\n$N \\times d$", _DOWN, width=1.6)
    _box(ax, 5.5, 1.6, "$K = W_K\\,\\tau$\n$L \\times d$", _TEXT, width=1.4)
    _box(ax, 7.3, 1.6, "$V = W_V\\,\\tau$\n$L \\times d$", _TEXT, width=1.4)
    _box(ax, 2.9, 1.6, "scores $Q K^\\top / \\sqrt{d}$\n$N \\times L$: one per (position, word)", _MID,
         width=2.5)
    _box(ax, 2.9, 0.2, "softmax along each row\n(padding -> weight 0)\neach position shares 1 unit among words",
         _MID, width=3.0, height=0.9)
    _box(ax, 7.3, 0.2, "weights $\\times V$: $N \\times d$\n-> $W_O$ -> back to $h \\times w \\times C$,\n"
         "added to the features", _UP, width=2.7, height=0.9)
    _arrow(ax, (0, 2.72), (0, 1.92))
    _arrow(ax, (6.0, 2.72), (5.5, 1.92))
    _arrow(ax, (6.8, 2.72), (7.3, 1.92))
    _arrow(ax, (0.8, 1.6), (1.65, 1.6), "Q")
    _arrow(ax, (4.8, 1.6), (4.15, 1.6), "K")
    _arrow(ax, (2.9, 1.28), (2.9, 0.66))
    _arrow(ax, (4.4, 0.2), (5.95, 0.2), "attention weights")
    _arrow(ax, (7.3, 1.28), (7.3, 0.66), "V", shift=(0.2, 0))
    ax.text(2.9, -0.65, "a column of the weights, laid back on the $h \\times w$ grid, is the map of one word",
            ha="center", fontsize=8, style="italic")
    ax.set_xlim(-1.5, 8.9)
    ax.set_ylim(-0.95, 3.85)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig
