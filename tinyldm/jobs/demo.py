"""The course's showcase (``make demo``): type a caption, get an image, on a CPU, in seconds.

The shipped text-to-image pipeline draws a few images for each of four captions. Two of them name colour-shape
pairs the model never saw in training (a blue triangle, a green circle), so the demo also shows the model
combining words it only knows apart.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from tinyldm.data.shapes import HELD_OUT, parse_caption
from tinyldm.jobs.ldm import generate_ldm
from tinyldm.ldm import LatentDiffusion
from tinyldm.viz.images import save_gif, save_grid, show_images

__all__ = ["DEMO_PROMPTS", "render_demo"]

DEMO_PROMPTS = (
    "a large red circle at the top left",
    "a small yellow square in the center",
    "a large blue triangle at the bottom right",  # a held-out pair
    "a small green circle on the left",  # a held-out pair
)


def _label(prompt: str) -> str:
    attributes = parse_caption(prompt)
    held = (attributes["color"], attributes["shape"]) in HELD_OUT
    return f'"{prompt}"' + ("  (never seen in training)" if held else "")


def render_demo(ldm: LatentDiffusion, out: str | Path, num_images: int = 4, seed: int = 0,
                guidance_scale: float = 3.0, sampler: str = "ddim", steps: int = 50,
                progress: bool = True) -> dict[str, Path]:
    """Generate ``num_images`` images for each of ``DEMO_PROMPTS`` and write them, one figure and an animation.

    Args:
        ldm: a text-to-image pipeline (``tinyldm.jobs.ldm.load_ldm``).
        out: the folder for the pictures (created).
        num_images, seed, guidance_scale, sampler, steps: as for ``tinyldm generate``.
    Returns:
        name -> path of each file written: one grid per prompt, "overview" (every prompt, labelled) and
        "animation" (the reverse process of the first prompt's images, as a GIF).
    """
    if ldm.text_encoder is None:
        raise ValueError("the demo needs a text-to-image pipeline, but this one has no text encoder; use the shipped "
                         "data/checkpoints/ldm-shapes or train one with tinyldm train ldm")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    size = (max(6.5, 1.1 * num_images + 1), 1.45 * len(DEMO_PROMPTS))  # wide enough for the longest caption
    fig, axes = plt.subplots(len(DEMO_PROMPTS), 1, figsize=size, layout="constrained", squeeze=False)
    for k, prompt in enumerate(DEMO_PROMPTS):
        images, frames, _ = generate_ldm(ldm, prompt, num_images, seed, guidance_scale, sampler, steps,
                                         progress=progress)
        written[f"prompt {k + 1}"] = save_grid(images, out / f"prompt_{k + 1}.png", nrow=num_images, scale=4)
        show_images(images, nrow=num_images, ax=axes[k, 0], title=_label(prompt))
        if k == 0:
            written["animation"] = save_gif(frames, out / "reverse_process.gif", fps=12, nrow=num_images, scale=3)
    fig.savefig(out / "demo.png", dpi=120)
    plt.close(fig)
    written["overview"] = out / "demo.png"
    return written
