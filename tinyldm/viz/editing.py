"""Lesson 8's widgets: a strength slider for image to image, and box sliders with a prompt box for inpainting.

Each widget redraws by running the model on the one picture it was given (a fraction of a second for the shipped
Shapes model on a CPU) and renders the result into an ``ipywidgets.Image``, like lesson 1's explorer
(``tinyldm.viz.explorer``): the picture is part of the widget's state, so a saved notebook shows the last one.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tinyldm.img2img import img2img
from tinyldm.inpainting import box_mask, inpaint
from tinyldm.ldm import LatentDiffusion
from tinyldm.viz.images import check_images, to_pil

if TYPE_CHECKING:  # ipywidgets loads where a widget is made
    import ipywidgets

__all__ = ["img2img_explorer", "inpaint_explorer"]

_SCALE = 6  # screen pixels per image pixel: a 32x32 picture shows at 192x192


def _png(images: Tensor) -> bytes:
    """(K, 3, H, W) in [-1, 1], side by side, enlarged, as PNG bytes."""
    buffer = io.BytesIO()
    to_pil(images.cpu(), nrow=images.shape[0], scale=_SCALE).save(buffer, format="PNG")
    return buffer.getvalue()


def _one_image(image: Tensor, ldm: LatentDiffusion) -> Tensor:
    image = image[None] if image.ndim == 3 else image
    check_images(image, "image")
    if image.shape[0] != 1:
        raise ValueError(f"the widget edits one image, (3, S, S) or (1, 3, S, S); got {tuple(image.shape)}")
    return image.to(ldm.device)


def img2img_explorer(ldm: LatentDiffusion, image: Tensor, prompt: str, steps: int = 20,
                     seed: int = 0) -> ipywidgets.VBox:
    """A strength slider and a prompt box over SDEdit (``tinyldm.img2img``): the input beside its edit.

    Args:
        ldm: the text-to-image pipeline.
        image: (3, S, S) or (1, 3, S, S) in [-1, 1], S = ``ldm.image_size``.
        prompt: the starting prompt.
        steps: DDIM steps of a whole run from noise; a strength s runs about s * steps of them.
        seed: the noise, the same for every strength, so the slider changes only how far the image is noised.
    Returns:
        A VBox: ``children[0]`` the controls (strength slider, prompt box), ``children[1]`` the picture.
    """
    import ipywidgets

    image = _one_image(image, ldm)
    strength = ipywidgets.FloatSlider(value=0.5, min=0.1, max=1.0, step=0.1, description="strength",
                                      continuous_update=False)
    text = ipywidgets.Text(value=prompt, description="prompt", continuous_update=False,
                           layout=ipywidgets.Layout(width="420px"))
    picture = ipywidgets.Image(format="png")

    def redraw(_change=None) -> None:
        edit = img2img(ldm, image, [text.value], strength=strength.value, steps=steps, sampler="ddim",
                       generator=torch.Generator(ldm.device).manual_seed(seed), progress=False)
        picture.value = _png(torch.cat([image, edit]))

    strength.observe(redraw, names="value")
    text.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([ipywidgets.HBox([strength, text]), picture])


def inpaint_explorer(ldm: LatentDiffusion, image: Tensor, prompt: str, box: tuple[int, int, int, int],
                     steps: int = 25, seed: int = 0) -> ipywidgets.VBox:
    """Box sliders and a prompt box over blended inpainting (``tinyldm.inpainting``): input, hole, result.

    Args:
        ldm: the text-to-image pipeline.
        image: (3, S, S) or (1, 3, S, S) in [-1, 1], S = ``ldm.image_size``.
        prompt: the starting prompt, for the whole picture.
        box: the starting hole (x0, y0, x1, y1) in pixels, end-exclusive.
        steps: ancestral steps.
        seed: the noise of every redraw.
    Returns:
        A VBox: ``children[0]`` and ``children[1]`` the controls (x range, y range; prompt box), ``children[2]``
        the picture.
    """
    import ipywidgets

    image = _one_image(image, ldm)
    size = image.shape[-1]
    x0, y0, x1, y1 = box
    xs = ipywidgets.IntRangeSlider(value=(x0, x1), min=0, max=size, description="x", continuous_update=False)
    ys = ipywidgets.IntRangeSlider(value=(y0, y1), min=0, max=size, description="y", continuous_update=False)
    text = ipywidgets.Text(value=prompt, description="prompt", continuous_update=False,
                           layout=ipywidgets.Layout(width="420px"))
    picture = ipywidgets.Image(format="png")

    def redraw(_change=None) -> None:
        (left, right), (top, bottom) = xs.value, ys.value
        if right <= left or bottom <= top:
            return  # an empty box: keep the last picture
        mask = box_mask(size, size, (left, top, right, bottom)).to(ldm.device)
        result = inpaint(ldm, image, mask, [text.value], steps=steps,
                         generator=torch.Generator(ldm.device).manual_seed(seed), progress=False)
        hole = torch.where(mask.bool(), torch.ones_like(image), image)  # the hole in white
        picture.value = _png(torch.cat([image, hole, result]))

    for control in (xs, ys, text):
        control.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([ipywidgets.HBox([xs, ys]), text, picture])
